"""Every question in docs/analysts.md, in DuckDB and in BigQuery SQL, gives the same answer.

Each DuckDB block runs against scoring output through `fmnist query`'s sandbox. Each
BigQuery block is parsed with sqlglot's BigQuery dialect (a syntax error fails the test),
translated to DuckDB (its dataset-qualified names made plain) and run on the same tables:
the two answers must be equal. Each BigQuery block is also analyzed by GoogleSQL's own
analyzer (the `zetasql` package, run by tests/zetasql_analysis.py in an interpreter of its
own) against a catalog of the BigQuery views built from infra/bigquery/*.schema.json.
BigQuery itself cannot run here; the parser, the analyzer and the translation stand in for it.

The tables come from the `scored_output` fixture (written like `fmnist score` writes them)
and, in the slow test, from real scorer output: two model versions trained on real images,
two runs on one day (a rerun under a new id), and a shard with a damaged record.
"""

from __future__ import annotations

import ast
import decimal
import json
import math
import os
import re
import subprocess
import sys

import pytest
import sqlglot

from components.analysts.tables import query

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "analysts.md")
# The documented placeholder of the BigQuery examples: `PROJECT.fmnist.<view>`.
BIGQUERY_PREFIX = ("PROJECT", "fmnist")
VIEWS = ("predictions", "predictions_current", "errors", "runs")
ZETASQL_FOLDER = os.path.join(REPO, ".venv-zetasql")  # `make tools` installs zetasql there


def sql_pairs(path: str) -> list[tuple[str, str]]:
    """(DuckDB, BigQuery) block pairs, in the order of the document."""
    with open(path) as file:
        blocks = re.findall(r"```sql (duckdb|bigquery)\n(.*?)```", file.read(), flags=re.DOTALL)
    dialects = [dialect for dialect, _ in blocks]
    assert dialects == ["duckdb", "bigquery"] * (len(blocks) // 2), "each DuckDB block is followed by its BigQuery block"
    return [(blocks[i][1], blocks[i + 1][1]) for i in range(0, len(blocks), 2)]


PAIRS = sql_pairs(DOC)


def python_examples(path: str) -> list[tuple[str, str, str]]:
    """(code, name of the answer it computes, the SQL of the same answer) of each Python block:
    the answer is the block's last assignment, the SQL its closing `# ...` comment lines."""
    with open(path) as file:
        blocks = re.findall(r"```python\n(.*?)```", file.read(), flags=re.DOTALL)
    examples = []
    for code in blocks:
        lines = code.rstrip().splitlines()
        comment = [line.removeprefix("# ") for line in lines if line.startswith("# ")]
        answer = [node for node in ast.parse(code).body if isinstance(node, ast.Assign)][-1].targets[0].id
        examples.append((code, answer, " ".join(comment)))
    return examples


PYTHON_EXAMPLES = python_examples(DOC)


def bigquery_as_duckdb(sql: str) -> str:
    """The BigQuery text parsed strictly, then written as DuckDB SQL over the plain view names."""
    [statement] = sqlglot.parse(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    for table in statement.find_all(sqlglot.exp.Table):
        if (table.catalog, table.db) == BIGQUERY_PREFIX:
            table.set("catalog", None)
            table.set("db", None)
    return statement.sql(dialect="duckdb")


def test_bigquery_examples_name_views_with_the_documented_dataset_placeholder():
    for _, bigquery_sql in PAIRS:
        [statement] = sqlglot.parse(bigquery_sql, read="bigquery")
        ctes = {cte.alias for cte in statement.find_all(sqlglot.exp.CTE)}
        tables = [table for table in statement.find_all(sqlglot.exp.Table) if table.name not in ctes]
        assert tables, bigquery_sql
        for table in tables:
            assert (table.catalog, table.db) == BIGQUERY_PREFIX and table.name in VIEWS, (table.sql("bigquery"), bigquery_sql)
    assert "max(run_id)" not in open(DOC).read().lower()  # "latest" is by finished_at, never the text order of ids


def bigquery_view_schemas() -> dict[str, list[dict]]:
    """The BigQuery views' columns, as `PROJECT.fmnist.<view>` -> BigQuery JSON schema fields: the
    Parquet columns of the generated schema files, plus what infra/terraform/bigquery.tf's views add."""

    def schema(name: str) -> list[dict]:
        with open(os.path.join(REPO, "infra", "bigquery", f"{name}.schema.json")) as file:
            return json.load(file)

    partition_keys = [{"name": "run_date", "type": "DATE"}, {"name": "run_id", "type": "STRING"}]
    predictions = [*schema("predictions"), {"name": "true_class", "type": "STRING"}, *partition_keys]
    summary = {field["name"]: field for field in schema("runs")}
    nested = {member["name"]: member for field in summary.values() for member in field.get("fields", [])}
    runs = [summary[name] for name in ("run_id", "run_date", "status", "model_version", "error_rate", "parts")]
    runs += [dict(nested[name], name=name) for name in ("read", "scored", "failed", "expected", "started_at", "finished_at")]
    views = {"predictions": predictions, "predictions_current": predictions, "errors": [*schema("errors"), *partition_keys]}
    views["runs"] = runs
    return {".".join((*BIGQUERY_PREFIX, view)): fields for view, fields in views.items()}


@pytest.fixture(scope="module")
def zetasql_path() -> str:
    """The folder holding the `zetasql` package and its dependencies (protobuf 7), apart from the
    project's environment, whose Beam and kfp refuse protobuf 7."""
    if not os.path.isfile(os.path.join(ZETASQL_FOLDER, ".installed")):
        pytest.fail("zetasql is not installed: `make tools` installs it into .venv-zetasql")
    return ZETASQL_FOLDER


def analyze_with_zetasql(statements: list[str], zetasql_path: str) -> list[str | None]:
    request = {"tables": bigquery_view_schemas(), "statements": statements}
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "zetasql_analysis.py")],
        input=json.dumps(request),
        env={**os.environ, "PYTHONPATH": zetasql_path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.integration
def test_googlesqls_analyzer_accepts_every_bigquery_example_and_catches_mistakes(zetasql_path):
    examples = [bigquery_sql.strip().rstrip(";") for _, bigquery_sql in PAIRS]
    mistakes = [
        "SELECT count(*) FROM predictions_current",  # unqualified: what the console refuses
        "SELECT nope FROM `PROJECT.fmnist.runs`",
        "SELECT list_sort(probabilities) FROM `PROJECT.fmnist.predictions`",  # DuckDB's function, not BigQuery's
        "SELECT run_date FROM `PROJECT.fmnist.runs` WHERE run_date = 1",
    ]
    answers = analyze_with_zetasql(examples + mistakes, zetasql_path)
    assert answers[: len(examples)] == [None] * len(examples), [(answer, sql) for answer, sql in zip(answers, examples) if answer]
    assert all(answers[len(examples) :]), list(zip(mistakes, answers[len(examples) :]))
    assert "not found" in answers[len(examples)]


def rows(sql: str, scores: str) -> list[tuple]:
    table = query(sql=sql, scores=scores)
    return [tuple(round(value, 6) if isinstance(value, float) else value for value in row.values()) for row in table.to_pylist()]


def assert_same_answer(pair: tuple[str, str], scores: str) -> None:
    duckdb_sql, bigquery_sql = pair
    expected = rows(duckdb_sql, scores)
    assert expected, duckdb_sql
    answered = rows(bigquery_as_duckdb(bigquery_sql), scores)
    assert len(answered) == len(expected)
    for ours, theirs in zip(expected, answered):
        assert all(a == b or (isinstance(a, float) and math.isclose(a, b, abs_tol=1e-6)) for a, b in zip(ours, theirs)), (
            ours,
            theirs,
            bigquery_sql,
        )


@pytest.fixture(scope="module")
def scores_root(scored_output) -> str:
    return scored_output[1]


def plain(value):
    return float(value) if isinstance(value, decimal.Decimal | float) else value


def frame_rows(frame) -> list[tuple]:
    """The rows of a pandas or polars data frame, as Python values."""
    if hasattr(frame, "itertuples"):
        return [
            tuple(plain(getattr(value, "item", lambda v=value: v)()) for value in row) for row in frame.itertuples(index=False)
        ]
    return [tuple(plain(value) for value in row) for row in frame.rows()]


def test_the_doc_has_python_examples_with_pandas_and_polars():
    codes = " ".join(code for code, _, _ in PYTHON_EXAMPLES)
    assert len(PYTHON_EXAMPLES) >= 3 and ".to_pandas()" in codes and "pl.from_arrow" in codes
    assert all(sql.startswith("SELECT") for _, _, sql in PYTHON_EXAMPLES)


@pytest.mark.parametrize("index", range(len(PYTHON_EXAMPLES)))
def test_each_python_example_gives_the_sql_answer(scores_root, index):
    code, answer, sql = PYTHON_EXAMPLES[index]
    namespace: dict = {}
    exec(code.replace('"runs/local/scores"', repr(scores_root)), namespace)  # noqa: S102 - the doc's own example
    expected = [tuple(plain(value) for value in row.values()) for row in query(sql=sql, scores=scores_root).to_pylist()]
    got = frame_rows(namespace[answer])
    assert expected and len(got) == len(expected), (got, expected)
    for ours, theirs in zip(got, expected):
        assert len(ours) == len(theirs)
        assert all(a == b or (isinstance(a, float) and math.isclose(a, b, abs_tol=1e-6)) for a, b in zip(ours, theirs)), (
            ours,
            theirs,
        )


def test_the_doc_has_the_promised_examples():
    text = open(DOC).read()
    for topic in (
        "Daily class mix",
        "Low-confidence share per class",
        "Disagreement between two model versions",
        "Error reasons per shard",
        "Run health",
        "Accuracy per class",
    ):
        assert f"### {topic}" in text
    assert len(PAIRS) >= 8


def test_a_bigquery_syntax_error_is_caught():
    with pytest.raises(sqlglot.errors.ParseError):
        bigquery_as_duckdb("SELECT FROM WHERE predictions (")


@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_both_dialects_give_the_same_answer(scores_root, index):
    assert_same_answer(PAIRS[index], scores_root)


def test_disagreement_example_counts_the_two_versions(scores_root):
    duckdb_sql = next(duckdb_sql for duckdb_sql, _ in PAIRS if "disagreement_rate" in duckdb_sql)
    [row] = query(sql=duckdb_sql, scores=scores_root).to_pylist()
    assert (row["old_version"], row["new_version"]) == ("v1", "v2")
    assert row["common_images"] == 38 and 0 < row["disagreements"] < 38


@pytest.fixture(scope="module")
def real_scores_root(tmp_path_factory) -> str:
    """Real scorer output: two model versions trained on real images score the same shards on
    two days, the second day twice (a rerun under a new id), one shard with a damaged record."""
    from components.prepare.dataset import prepare
    from components.score.run import score
    from components.train.training import train
    from tests.test_cloud_e2e import TEST_IMAGES, TRAIN_IMAGES, write_real_subset

    root = tmp_path_factory.mktemp("real")
    source = write_real_subset(str(root / "raw"), TRAIN_IMAGES, TEST_IMAGES)
    prepare(source=source, output=str(root / "shards"), shards_per_split=3, allow_unknown_source=True, workers=1)
    (root / "incoming").mkdir()
    for shard in (root / "shards").glob("test-*.tfrecord"):
        data = bytearray(shard.read_bytes())
        if shard.name.startswith("test-00001"):
            data[100] ^= 0xFF  # inside the first record's data: a CRC error row, the rest scored
        (root / "incoming" / shard.name).write_bytes(bytes(data))
    incoming, scores = str(root / "incoming" / "test-*.tfrecord"), str(root / "scores")
    models = {}
    for seed, day in ((1, "2026-11-27"), (2, "2026-11-28")):
        # Two versions scored in turn, whichever is better: the champion gate is not what this tests.
        trained = train(
            data=str(root / "shards"), model_root=str(root / "models"), epochs=1, seed=seed, min_accuracy=0.5, force_publish=True
        )
        models[day] = trained["uri"]
        score(input=incoming, model=models[day], output=scores, run_id=f"run-{day}", run_date=day, max_error_rate=1.0)
    score(
        input=incoming,
        model=models["2026-11-28"],
        output=scores,
        run_id="rerun-2026-11-28",
        run_date="2026-11-28",
        max_error_rate=1.0,
    )
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_both_dialects_give_the_same_answer_on_real_scorer_output(real_scores_root, index):
    assert_same_answer(PAIRS[index], real_scores_root)


@pytest.mark.slow
def test_a_rerun_on_one_day_is_counted_once_by_the_current_view(real_scores_root):
    runs = query(sql="SELECT count(*) AS n FROM runs WHERE run_date = '2026-11-28'", scores=real_scores_root)
    assert runs.column("n").to_pylist() == [2]
    [row] = query(
        sql="SELECT count(*) AS images, count(DISTINCT image_id) AS distinct_images, any_value(run_id) AS run "
        "FROM predictions_current WHERE run_date = '2026-11-28'",
        scores=real_scores_root,
    ).to_pylist()
    assert row["images"] == row["distinct_images"] > 0 and row["run"] == "rerun-2026-11-28"
