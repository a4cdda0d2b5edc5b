"""SQL views over the scoring tables (components/analysts/tables.py) and `fmnist query`, locally and on gs://."""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import subprocess
import time

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from components.analysts.tables import open_tables, query
from components.constants import CLASS_NAMES
from components.contracts.schema import ERROR_SCHEMA, PARTITION_SCHEMA, PREDICTION_SCHEMA, V1_SCHEMA_VERSION, partition_uri
from components.contracts.summary import RunSummary
from components.errors import InputError
from components.io import storage
from jobs import query as query_job
from tests.cli_runs import jobs_command, run_cli, wait_until_stopped
from tests.scoring_fixture import RUNS, UNFINISHED, ScoredRun, write_run


def counts_by_run(connection, view: str) -> dict[str, int]:
    return dict(connection.sql(f"SELECT run_id, count(*) FROM {view} GROUP BY 1").fetchall())


def test_views_hold_complete_runs_only_and_reconcile_with_summaries(scored_output):
    _, scores = scored_output
    connection = open_tables(scores=scores)
    assert [row[0] for row in connection.sql("SELECT run_id FROM runs ORDER BY 1").fetchall()] == [run.run_id for run in RUNS]
    predictions, errors = counts_by_run(connection, "predictions"), counts_by_run(connection, "errors")
    assert UNFINISHED.run_id not in predictions and UNFINISHED.run_id not in errors
    assert predictions == {"nightly-2026-11-27": 38, "nightly-2026-11-28": 40}
    for run_id, read, scored, failed in connection.sql("SELECT run_id, read, scored, failed FROM runs").fetchall():
        assert (scored, failed) == (predictions[run_id], errors.get(run_id, 0))
        assert read == scored + failed


def test_partition_columns_are_typed_and_usable_in_where(scored_output):
    _, scores = scored_output
    connection = open_tables(scores=scores)
    columns = dict(connection.sql("SELECT column_name, column_type FROM (DESCRIBE predictions)").fetchall())
    names = PREDICTION_SCHEMA.names
    at = names.index("true_label") + 1
    assert list(columns) == names[:at] + ["true_class"] + names[at:] + ["run_date", "run_id"]
    assert columns["run_date"] == "DATE" and columns["probabilities"] == "FLOAT[]"
    assert connection.sql("SELECT DISTINCT run_id FROM predictions WHERE run_date = '2026-11-27'").fetchall() == [
        ("nightly-2026-11-27",)
    ]
    assert connection.execute("SELECT count(*) FROM errors WHERE run_id = 'nightly-2026-11-28'").fetchall() == [(0,)]
    error_columns = [row[0] for row in connection.sql("DESCRIBE errors").fetchall()]
    assert error_columns == ERROR_SCHEMA.names + ["run_date", "run_id"]
    assert connection.execute("SELECT run_date FROM runs ORDER BY 1 LIMIT 1").fetchall() == [(datetime.date(2026, 11, 27),)]


def test_stray_files_in_a_complete_partition_are_not_read(scored_output, tmp_path):
    """Temporary and hidden files (a writer's staging) and foreign files never reach the views."""
    _, scores = scored_output
    copy = str(tmp_path / "scores")
    for uri in storage.list_prefix(scores):
        storage.copy(uri, os.path.join(copy, os.path.relpath(uri, scores)))
    folder = partition_uri(copy, "predictions", RUNS[0].run_date, RUNS[0].run_id)
    for name in (".part-00009.parquet.tmp", "_part-00009.parquet", ".tmp-abc", "notes.txt"):
        storage.write_bytes(storage.join(folder, name), b"not parquet")
    assert counts_by_run(open_tables(scores=copy), "predictions")[RUNS[0].run_id] == 38


def test_no_complete_run_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no complete scoring run"):
        open_tables(scores=str(tmp_path))


def test_arrow_filesystem_maps_uris(gcs_bucket, tmp_path):
    local, path = storage.arrow_filesystem(str(tmp_path / "x"))
    assert isinstance(local, fs.LocalFileSystem) and path == str(tmp_path / "x")
    gcs, path = storage.arrow_filesystem(f"{gcs_bucket}/scores/")
    assert isinstance(gcs, fs.GcsFileSystem) and path == f"{gcs_bucket[5:]}/scores"
    with pytest.raises(InputError):
        storage.arrow_filesystem("https://example.com/scores")


def test_views_read_gcs_through_the_emulator(scored_output, gcs_bucket):
    _, scores = scored_output
    remote = f"{gcs_bucket}/scores"
    for uri in storage.list_prefix(scores):
        storage.copy(uri, storage.join(remote, os.path.relpath(uri, scores)))
    table = query(
        sql="SELECT run_id, count(*) AS n FROM predictions WHERE run_date >= '2026-11-27' GROUP BY 1 ORDER BY 1", scores=remote
    )
    assert table.to_pylist() == [{"run_id": "nightly-2026-11-27", "n": 38}, {"run_id": "nightly-2026-11-28", "n": 40}]


@pytest.mark.integration
def test_query_cli_prints_a_table(scored_output):
    _, scores = scored_output
    completed = run_cli(
        "query", "SELECT run_id, count(*) AS images FROM predictions GROUP BY 1 ORDER BY 1", "--scores", scores, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    lines = [line for line in completed.stdout.splitlines() if "nightly" in line]
    assert "nightly-2026-11-27" in lines[0] and "38" in lines[0]
    assert "nightly-2026-11-28" in lines[1] and "40" in lines[1]


@pytest.mark.parametrize("extension", [".csv", ".parquet"])
def test_query_cli_writes_csv_or_parquet(scored_output, tmp_path, capsys, extension):
    _, scores = scored_output
    out = str(tmp_path / f"result{extension}")
    code = query_job.main(
        ["SELECT image_id, probabilities, run_date FROM predictions ORDER BY image_id, run_id", "--scores", scores, "--out", out]
    )
    assert code == 0
    assert '"rows": 78' in capsys.readouterr().out
    table = pa_csv.read_csv(out) if extension == ".csv" else pq.read_table(out)
    columns = ["image_id", *CLASS_NAMES, "run_date"] if extension == ".csv" else ["image_id", "probabilities", "run_date"]
    assert table.num_rows == 78 and table.column_names == columns


def test_query_cli_bad_input_is_one_line_exit_2(scored_output, tmp_path, capsys):
    _, scores = scored_output
    assert query_job.main(["SELECT nope FROM predictions", "--scores", scores]) == 2
    assert query_job.main(["SELECT 1", "--scores", scores, "--out", str(tmp_path / "x.json")]) == 2
    assert query_job.main(["SELECT 1", "--predictions", str(tmp_path / "empty")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "nope" in lines[0] and "x.json" in lines[1] and "no complete scoring run" in lines[2]


# --- Contract v2: runs by their summaries, reruns, foreign files, old outputs ------------------


def copy_of(scores: str, target) -> str:
    copy = str(target)
    for uri in storage.list_prefix(scores):
        storage.copy(uri, os.path.join(copy, os.path.relpath(uri, scores)))
    return copy


def test_a_foreign_parquet_file_in_a_complete_partition_is_not_counted(scored_output, tmp_path):
    _, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    folder = partition_uri(copy, "predictions", RUNS[0].run_date, RUNS[0].run_id)
    named = storage.glob(storage.join(folder, "*.parquet"))[0]
    storage.copy(named, storage.join(folder, "part-foreign-00000.parquet"))  # valid rows, but no summary names it
    assert counts_by_run(open_tables(scores=copy), "predictions")[RUNS[0].run_id] == 38


def test_two_runs_on_one_date_are_both_in_predictions_and_only_the_latest_is_current(scored_output, tmp_path):
    data, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    shards = storage.glob(storage.join(data, "test-*.tfrecord"))
    write_run(copy, shards, ScoredRun("backfill-2026-11-28", "2026-11-28", "v3", seed=4))
    connection = open_tables(scores=copy)
    assert counts_by_run(connection, "predictions") == {
        "nightly-2026-11-27": 38,
        "nightly-2026-11-28": 40,
        "backfill-2026-11-28": 40,
    }
    assert counts_by_run(connection, "predictions_current") == {"nightly-2026-11-27": 38, "backfill-2026-11-28": 40}
    [(images, distinct)] = connection.sql(
        "SELECT count(*), count(DISTINCT image_id) FROM predictions_current WHERE run_date = '2026-11-28'"
    ).fetchall()
    assert images == distinct == 40


def test_true_class_names_the_true_label(scored_output):
    _, scores = scored_output
    pairs = open_tables(scores=scores).sql("SELECT DISTINCT true_label, true_class FROM predictions ORDER BY 1").fetchall()
    assert pairs == [(label, CLASS_NAMES[label]) for label in range(10)]


def test_an_invalid_summary_is_skipped_with_a_warning_naming_it(scored_output, tmp_path, caplog):
    _, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    broken = storage.join(copy, "runs", "broken.json")
    storage.write_bytes(broken, b'{"run_id": "broken", "run_date": ')
    storage.write_bytes(storage.join(copy, "runs", "no-parts.json"), b'{"run_id": "no-parts"}\n')
    with caplog.at_level(logging.WARNING, logger="components.analysts.tables"):
        connection = open_tables(scores=copy)
    assert counts_by_run(connection, "predictions") == {"nightly-2026-11-27": 38, "nightly-2026-11-28": 40}
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(broken in message and "not valid JSON" in message for message in warnings), warnings
    assert any("no-parts.json" in message and "missing" in message for message in warnings), warnings


def test_a_summary_of_contract_v1_is_skipped_with_how_to_migrate(scored_output, tmp_path, capsys, caplog):
    _, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    storage.write_bytes(
        storage.join(copy, "runs", "old.json"),
        json.dumps({"schema_version": V1_SCHEMA_VERSION, "run_id": "old"}, indent=2).encode(),
    )
    assert query_job.main(["SELECT count(*) FROM predictions", "--scores", copy]) == 0  # the v2 runs stay readable
    [warning] = [record.getMessage() for record in caplog.records if "old.json" in record.getMessage()]
    assert "fmnist migrate-tables" in warning
    for uri in storage.glob(storage.join(copy, "runs", "nightly-*.json")):
        storage.delete(uri)
    assert query_job.main(["SELECT count(*) FROM predictions", "--scores", copy]) == 2  # nothing else: refused
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: ") and "old.json" in line and "fmnist migrate-tables" in line


def rewrite_summary(scores: str, name: str, changes: dict) -> None:
    uri = storage.join(scores, "runs", f"{name}.json")
    document = {**json.loads(storage.read_bytes(uri)), **changes}
    storage.write_bytes(uri, json.dumps(document).encode())


def summary_of(scores: str, run_id: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(scores, "runs", f"{run_id}.json")))


HOSTILE_SUMMARIES = {
    "a run date that is not a date": lambda s: {"run_date": "2026-11-27/../../../outside"},
    "a part named twice": lambda s: {"parts": {**s["parts"], "predictions": s["parts"]["predictions"] * 2}},
    "a part of another run": lambda s: {
        "parts": {
            **s["parts"],
            "predictions": [p.replace("run_id=nightly-2026-11-27", "run_id=x") for p in s["parts"]["predictions"]],
        }
    },
    "counts that do not match the parts": lambda s: {
        "counts": {**s["counts"], "read": 1, "scored": 1, "failed": 0, "failed_by_type": {}}
    },
    "counts that do not add up": lambda s: {"counts": {**s["counts"], "read": s["counts"]["read"] + 5}},
    "a run id that is not a run id": lambda s: {"run_id": "nightly-2026-11-27\n"},
}


@pytest.mark.parametrize("change", HOSTILE_SUMMARIES, ids=list(HOSTILE_SUMMARIES))
def test_a_summary_no_writer_produces_is_skipped_and_the_other_runs_answer(scored_output, tmp_path, caplog, change):
    _, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    run_id = RUNS[0].run_id
    rewrite_summary(copy, run_id, HOSTILE_SUMMARIES[change](summary_of(copy, run_id)))
    with caplog.at_level(logging.WARNING, logger="components.analysts.tables"):
        connection = open_tables(scores=copy)
    assert counts_by_run(connection, "predictions") == {RUNS[1].run_id: 40}  # nothing twice, nothing of the bad run
    assert [run for (run,) in connection.sql("SELECT run_id FROM runs").fetchall()] == [RUNS[1].run_id]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped" in warnings[0] and (run_id in warnings[0] or f"{run_id}.json" in warnings[0])


def test_a_run_with_a_missing_part_is_skipped_and_the_other_runs_answer(scored_output, tmp_path, capsys, caplog):
    _, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    missing = storage.glob(storage.join(partition_uri(copy, "predictions", RUNS[0].run_date, RUNS[0].run_id), "*.parquet"))[0]
    storage.delete(missing)
    assert query_job.main(["SELECT run_id, count(*) FROM predictions GROUP BY 1", "--scores", copy]) == 0
    out = capsys.readouterr().out
    assert RUNS[1].run_id in out and RUNS[0].run_id not in out
    [warning] = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert RUNS[0].run_id in warning and storage.basename(missing) in warning


def test_a_summary_larger_than_any_writer_makes_is_skipped_unread(scored_output, tmp_path, caplog, monkeypatch):
    from components.analysts import tables

    _, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    monkeypatch.setattr(tables, "MAX_SUMMARY_BYTES", 1000)  # a real summary of this fixture is larger
    storage.write_bytes(storage.join(copy, "runs", "huge.json"), b" " * 1001)
    with caplog.at_level(logging.WARNING, logger="components.analysts.tables"):
        with pytest.raises(InputError, match="no complete scoring run"):
            open_tables(scores=copy)
    assert any("huge.json" in record.getMessage() and "larger than" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "sql, message",
    [
        ("COPY (SELECT * FROM predictions) TO '{out}'", "only a read-only SELECT"),
        ("ATTACH '{out}' AS other", "only a read-only SELECT"),
        ("INSTALL httpfs", "only a read-only SELECT"),
        ("LOAD httpfs", "only a read-only SELECT"),
        ("SET enable_external_access = true", "only a read-only SELECT"),
        ("PRAGMA version", "only a read-only SELECT"),
        ("CREATE TABLE t AS SELECT 1", "only a read-only SELECT"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT 1; COPY (SELECT 1) TO '{out}'", "exactly one statement"),
        ("SELECT * FROM read_csv('{secret}')", "disabled"),
        ("SELECT content FROM read_blob('{secret}')", "disabled"),
        ("SELECT * FROM '{secret}'", "disabled"),
        ("SELECT * FROM read_parquet('{part}')", "disabled"),
        ("SELECT * FROM glob('{secret}')", "disabled"),
        ("SELECT * FROM query('COPY (SELECT 1) TO ''{out}''')", "Expected a single SELECT"),
    ],
)
def test_the_query_sandbox_refuses_everything_but_one_select(scored_output, tmp_path, capsys, sql, message):
    _, scores = scored_output
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    part = storage.glob(storage.join(partition_uri(scores, "predictions", RUNS[0].run_date, RUNS[0].run_id), "*"))[0]
    out = tmp_path / "written"
    statement = sql.format(out=out, secret=secret, part=part)
    assert query_job.main([statement, "--scores", scores]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: SQL: ") and message in line, line
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["secret.csv"]


# --- Reader matrix: one real scoring output, every reader sees the same table -------------------


@pytest.fixture(scope="module")
def real_output(tmp_path_factory) -> str:
    """`fmnist score` output of a tiny model over shards with good and bad records (both tables)."""
    from components.score.run import score
    from tests.test_score import fit_tiny_model, planted_shards, save_model

    root = tmp_path_factory.mktemp("real-output")
    (root / "shards").mkdir()
    planted_shards(str(root / "shards"))
    model = save_model(fit_tiny_model(), str(root / "models"), "v1")
    for run_id, day in (("a", "2026-11-28"), ("b", "2026-11-29")):
        score(
            input=str(root / "shards" / "*.tfrecord"),
            model=model,
            output=str(root / "scores"),
            run_id=run_id,
            run_date=day,
            max_error_rate=1.0,
        )
    return str(root / "scores")


def read_with_duckdb(folder: str) -> tuple[int, list[str], object]:
    import duckdb

    relation = duckdb.sql(f"SELECT * FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true)")
    return len(relation.fetchall()), relation.columns, dict(zip(relation.columns, relation.types))["run_date"]


def read_with_pyarrow_dataset(folder: str):
    import pyarrow.dataset as ds

    table = ds.dataset(folder, format="parquet", partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive")).to_table()
    return table.num_rows, table.column_names, table.schema.field("run_date").type


def read_with_read_table(folder: str):
    table = pq.read_table(folder)
    return table.num_rows, table.column_names, table.schema.field("run_date").type


def read_with_pandas(folder: str):
    import pandas

    frame = pandas.read_parquet(folder)
    return len(frame), list(frame.columns), frame["run_date"].dtype


def read_with_polars(folder: str):
    polars = pytest.importorskip("polars")
    frame = polars.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).collect()
    return frame.height, frame.columns, frame.schema["run_date"]


READERS = [read_with_duckdb, read_with_pyarrow_dataset, read_with_read_table, read_with_pandas, read_with_polars]


@pytest.mark.integration
@pytest.mark.parametrize("table, schema", [("predictions", PREDICTION_SCHEMA), ("errors", ERROR_SCHEMA)])
@pytest.mark.parametrize("reader", READERS, ids=lambda reader: reader.__name__)
def test_every_reader_sees_the_same_rows_and_columns(real_output, reader, table, schema):
    expected_rows = sum(
        json.loads(storage.read_bytes(uri))["counts"]["scored" if table == "predictions" else "failed"]
        for uri in storage.glob(storage.join(real_output, "runs", "*.json"))
    )
    rows, columns, run_date_type = reader(storage.join(real_output, table))
    assert rows == expected_rows > 0
    assert sorted(columns) == sorted(schema.names + ["run_date", "run_id"])
    if reader is read_with_pyarrow_dataset:
        assert run_date_type == pa.date32()  # typed as a date when the reader is told the keys' types


# --- Migrating contract v1 output ------------------------------------------------------------------


def as_v1(scores: str, run: ScoredRun, folder) -> None:
    """Turns a v2 run into what contract v1 wrote: run_id in the files, relative source URIs,
    a pretty-printed summary without a part list."""
    summary_uri = storage.join(scores, "runs", f"{run.run_id}.json")
    summary = RunSummary.from_json(storage.read_bytes(summary_uri))
    for table in ("predictions", "errors"):
        for part in summary.parts.of(table):  # the copy's own file of that name (the summary names the original)
            convert_part_to_v1(
                os.path.join(partition_uri(scores, table, run.run_date, run.run_id), storage.basename(part)), run, folder
            )
    document = summary.to_dict()
    document.update(schema_version=V1_SCHEMA_VERSION, outputs={}, inputs={"glob": "x", "shards": []})
    del document["parts"], document["attempt"]
    storage.write_bytes(summary_uri, json.dumps(document, indent=2).encode())


def convert_part_to_v1(path: str, run: ScoredRun, folder) -> None:
    table = pq.read_table(path).replace_schema_metadata({"schema_version": V1_SCHEMA_VERSION})
    relative = [os.path.relpath(storage.from_absolute_uri(uri), folder) for uri in table.column("source_uri").to_pylist()]
    table = table.set_column(table.schema.get_field_index("source_uri"), "source_uri", pa.array(relative))
    table = table.append_column("run_id", pa.array([run.run_id] * table.num_rows))
    os.unlink(path)
    pq.write_table(table, os.path.join(os.path.dirname(path), f"part-{os.path.basename(path)[-13:]}"))


def test_migrate_tables_rewrites_a_v1_output_that_then_reads_like_v2(scored_output, tmp_path, monkeypatch, capsys):
    _, scores = scored_output
    expected = query(sql="SELECT run_id, image_id, predicted_label, source_uri FROM predictions ORDER BY ALL", scores=scores)
    copy = copy_of(scores, tmp_path / "scores")
    monkeypatch.chdir(tmp_path)
    for run in RUNS:
        as_v1(copy, run, tmp_path)
    assert query_job.main(["SELECT 1", "--scores", copy]) == 2  # refused, with how to migrate

    from jobs import migrate_tables

    assert migrate_tables.main(["--scores", copy]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "migrated_runs": [run.run_id for run in RUNS],
        "unmapped_runs": {},
    }
    migrated = query(sql="SELECT run_id, image_id, predicted_label, source_uri FROM predictions ORDER BY ALL", scores=copy)
    assert migrated.to_pylist() == expected.to_pylist()
    for run in RUNS:
        folder = partition_uri(copy, "predictions", run.run_date, run.run_id)
        files = storage.glob(storage.join(folder, "*"))
        assert files and all("migrated" in storage.basename(uri) for uri in files)  # the v1 parts are gone
        assert all("run_id" not in pq.read_schema(uri).names for uri in files)
    assert migrate_tables.main(["--scores", copy]) == 0  # nothing left to migrate
    assert '"migrated_runs": []' in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("point", ["part-move", "summary", "summary-written", "removal"])
@pytest.mark.parametrize("signal_name", ["KILL", "TERM"])
def test_migrate_tables_stopped_at_any_write_and_run_again_leaves_every_run_its_rows(
    scored_output, tmp_path, monkeypatch, point, signal_name
):
    _, scores = scored_output
    expected = query(sql="SELECT run_id, image_id, predicted_label, source_uri FROM predictions ORDER BY ALL", scores=scores)
    copy = copy_of(scores, tmp_path / "scores")
    for run in RUNS:
        as_v1(copy, run, tmp_path)
    env = {**os.environ, "FMNIST_FREEZE_AT": point}  # stopped there, then killed by the signal
    process = subprocess.Popen(jobs_command("migrate-tables", "--scores", copy), cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    wait_until_stopped(process)
    process.send_signal(getattr(signal, f"SIG{signal_name}"))
    process.send_signal(signal.SIGCONT)
    process.communicate(timeout=120)
    assert process.returncode != 0
    time.sleep(1.2)  # a killed holder's lease: gone at once on this host (its process is gone)
    completed = subprocess.run(
        jobs_command("migrate-tables", "--scores", copy), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    migrated = query(sql="SELECT run_id, image_id, predicted_label, source_uri FROM predictions ORDER BY ALL", scores=copy)
    assert migrated.to_pylist() == expected.to_pylist()  # every run exactly its rows: none lost, none twice


def test_migrate_tables_leaves_a_run_it_cannot_map_as_it_was(scored_output, tmp_path, monkeypatch, caplog):
    _, scores = scored_output
    copy = copy_of(scores, tmp_path / "scores")
    monkeypatch.chdir(tmp_path)
    for run in RUNS:
        as_v1(copy, run, tmp_path)
    moved = RUNS[0]
    summary_uri = storage.join(copy, "runs", f"{moved.run_id}.json")
    document = json.loads(storage.read_bytes(summary_uri))
    storage.write_bytes(summary_uri, json.dumps({**document, "run_date": "2026-11-20"}, indent=2).encode())
    before = storage.read_bytes(summary_uri)
    from jobs import migrate_tables

    with caplog.at_level(logging.WARNING, logger="components.analysts.migration"):
        assert migrate_tables.main(["--scores", copy]) == 0
    assert storage.read_bytes(summary_uri) == before  # left as it was
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert f"{moved.run_id}.json" in warning and "hold 0 rows" in warning and "counts 38" in warning
    assert counts_by_run(open_tables(scores=copy), "predictions") == {RUNS[1].run_id: 40}
