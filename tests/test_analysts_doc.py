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
