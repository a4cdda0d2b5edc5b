"""Every SQL example in docs/analysts.md runs against scoring output and returns rows.

The tables come from the `scored_output` fixture (written like `fmnist score` writes them);
to check the examples against a real `make run`, give `scores_root` that output's root.
"""
from __future__ import annotations

import os
import re

import pytest

from components.tables import query

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "analysts.md")


def sql_blocks(path: str) -> list[str]:
    with open(path) as file:
        return re.findall(r"```sql\n(.*?)```", file.read(), flags=re.DOTALL)


BLOCKS = sql_blocks(DOC)


@pytest.fixture(scope="module")
def scores_root(scored_output) -> str:
    return scored_output[1]


def test_the_doc_has_the_promised_examples():
    text = open(DOC).read()
    for topic in ("Daily class mix", "Low-confidence share per class", "Disagreement between two model versions",
                  "Error reasons per shard"):
        assert f"### {topic}" in text
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_sql_example_runs_and_returns_rows(scores_root, index):
    table = query(sql=BLOCKS[index], predictions=scores_root)
    assert table.num_rows > 0, BLOCKS[index]


def test_disagreement_example_counts_the_two_versions(scores_root):
    block = next(block for block in BLOCKS if "disagreement_rate" in block)
    [row] = query(sql=block, predictions=scores_root).to_pylist()
    assert (row["old_version"], row["new_version"]) == ("v1", "v2")
    assert row["common_images"] == 38 and 0 < row["disagreements"] < 38


@pytest.fixture(scope="module")
def real_scores_root(tmp_path_factory) -> str:
    """Real scorer output: two model versions trained on real images score the same shards
    on two days, and one shard has a damaged record (so the error examples have rows)."""
    from components.prepare import prepare
    from components.score_run import score
    from components.training import train
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
    for seed, day in ((1, "2026-11-27"), (2, "2026-11-28")):
        trained = train(data=str(root / "shards"), model_root=str(root / "models"), epochs=1, seed=seed, min_accuracy=0.5)
        score(input=str(root / "incoming" / "test-*.tfrecord"), model=trained["uri"], output=str(root / "scores"),
              run_id=f"run-{day}", run_date=day, max_error_rate=1.0)
    return str(root / "scores")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_sql_example_runs_on_real_scorer_output(real_scores_root, index):
    table = query(sql=BLOCKS[index], predictions=real_scores_root)
    assert table.num_rows > 0, BLOCKS[index]
