"""The scoring contracts (components/contracts/summary.py): one-line JSON both ways, strict on the way in,
and the BigQuery schema of the `runs` table covers every field a summary has."""

from __future__ import annotations

import dataclasses
import json

import pytest

from components.contracts.summary import (
    ContractError,
    GroupReceipt,
    RunCounts,
    RunFailure,
    RunInputs,
    RunParts,
    RunSummary,
    ShardReceipt,
    run_summary_bigquery_schema,
)


def a_summary() -> RunSummary:
    return RunSummary(
        run_id="r1",
        run_date="2026-11-30",
        status="ok",
        model_version="v1",
        model_uri="gs://b/models/v1",
        inputs=RunInputs(glob="gs://b/shards/*.tfrecord", shards=["gs://b/shards/test-00000-of-00001.tfrecord"]),
        parts=RunParts(predictions=["gs://b/scores/predictions/run_date=2026-11-30/run_id=r1/part-a-00000.parquet"], errors=[]),
        counts=RunCounts(read=3, scored=2, failed=1, failed_by_type={"decode_error": 1}, expected=3),
        error_rate=1 / 3,
        max_error_rate=0.5,
        attempt="a",
        timings={"started_at": "2026-11-30T06:00:00+00:00", "finished_at": "2026-11-30T06:00:09+00:00"},
        tool={"name": "fmnist-jobs", "version": "0.1.0"},
        beam_counters={"shards": 1},
    )


def test_a_summary_is_one_json_line_and_reads_back_equal():
    summary = a_summary()
    text = summary.to_json()
    assert "\n" not in text and json.loads(text)["schema_version"] == "fmnist-predictions/2"
    assert RunSummary.from_json(text) == summary


def test_a_receipt_reads_back_equal_and_leaves_room_for_source_checks():
    receipt = ShardReceipt(
        shard_index=2,
        source_uri="file:///d/s.tfrecord",
        read=5,
        scored=4,
        failed=1,
        failed_by_type={"corrupt_record": 1},
    )
    assert (receipt.expected, receipt.sha256, receipt.expected_sha256) == (None, None, None)
    assert ShardReceipt.from_json(receipt.to_json()) == receipt
    checked = dataclasses.replace(receipt, expected=5, sha256="ab", expected_sha256="ab")
    shards = [receipt, dataclasses.replace(checked, shard_index=3)]
    group = GroupReceipt(group_index=2, shards=shards, predictions="p", errors="e")
    assert GroupReceipt.from_json(group.to_json()) == group
    assert isinstance(GroupReceipt.from_json(group.to_json()).shards[1], ShardReceipt)


@pytest.mark.parametrize(
    "document, message",
    [
        ("not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"shard_index": 0}', "field 'source_uri' is missing"),
        (
            '{"shard_index": "0", "source_uri": "s", "read": 1, "scored": 1, "failed": 0, "failed_by_type": {},'
            ' "predictions": null, "errors": null}',
            "field 'shard_index' is str",
        ),
        (
            '{"shard_index": true, "source_uri": "s", "read": 1, "scored": 1, "failed": 0, "failed_by_type": {},'
            ' "predictions": null, "errors": null}',
            "field 'shard_index' is bool",
        ),
        (
            '{"shard_index": 0, "source_uri": "s", "read": 1, "scored": 1, "failed": 0, "failed_by_type": {"x": "1"},'
            ' "predictions": null, "errors": null}',
            "field 'failed_by_type' is str",
        ),
    ],
)
def test_a_receipt_that_breaks_the_contract_is_refused_naming_the_field(document, message):
    with pytest.raises(ContractError, match=message):
        ShardReceipt.from_json(document)
    if document.startswith("{"):  # the same shard inside a group's receipt
        with pytest.raises(ContractError, match=message):
            GroupReceipt.from_json(f'{{"group_index": 0, "shards": [{document}], "predictions": null, "errors": null}}')


def test_the_runs_bigquery_schema_covers_every_field_of_a_summary():
    def names(fields, prefix=""):
        found = set()
        for field in fields:
            found.add(prefix + field["name"])
            if field["type"] == "RECORD":
                found |= names(field["fields"], f"{prefix}{field['name']}.")
        return found

    def keys(document, prefix=""):
        found = set()
        for key, value in document.items():
            found.add(prefix + key)
            if isinstance(value, dict) and key not in ("failed_by_type", "beam_counters"):  # JSON columns
                found |= keys(value, f"{prefix}{key}.")
        return found

    schema = names(run_summary_bigquery_schema())
    summary = a_summary().to_dict()
    summary["timings"].update(pipeline_seconds=1.0, publish_seconds=0.1, total_seconds=9.0)  # as score writes them
    failure = RunFailure(task="score", exit_code=1, error="error: ...", pipeline_job="j", recorded_at="2026-11-29T03:00:00+00:00")
    record = RunSummary.failure_record(run_id="r", run_date="2026-11-28", failure=failure).to_dict()
    assert keys(summary) | keys(record) == schema


@pytest.mark.parametrize(
    "text, valid",
    [
        ("scheduled-2026-11-28", True),
        ("r1.retry_2", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("run\n", False),  # `$` would let a trailing newline through; the whole text must match
        ("a/b", False),
        (".hidden", False),
        ("", False),
    ],
)
def test_a_run_id_is_a_safe_name_in_full(text, valid):
    from components.contracts.schema import is_run_id

    assert is_run_id(text) is valid
