"""Runs one `fmnist` step in a KFP task, then hands its published outputs to KFP as typed artifacts.

    python -m jobs.kfp_outputs --executor-input '{{$}}' train --image REPO@sha256:... \\
        --model-root gs://b/models --manifest-digest 3f2a... -- fmnist train --data ... --model-root gs://b/models
    python -m jobs.kfp_outputs --executor-input '{{$}}' run-context --image REPO@sha256:... --scheduled-time ...

The command after `--` runs unchanged (its output goes to the task log, its exit code is this
process's, SIGTERM is passed on to it). Only after it succeeded are its outputs read back through the step contracts
(manifest.json, the registry's LATEST + metrics.json, the run summary) and written where KFP
collects them: files at the output artifacts' local paths, parameters to their output files,
artifact metadata (metrics, confusion matrix) to the executor output file.
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kfp.dsl.executor import create_artifact_instance

from components import registry, schema, storage
from components.constants import CLASS_NAMES
from components.errors import CheckFailed, InputError
from components.shards import manifest_digest, read_manifest
from jobs.runner import run


class TaskOutputs:
    """The output side of a KFP executor input: typed artifacts, parameter files, executor output."""

    def __init__(self, executor_input: str):
        self._outputs = json.loads(executor_input).get("outputs", {})
        self.artifacts = {
            name: create_artifact_instance(entry["artifacts"][0]) for name, entry in self._outputs.get("artifacts", {}).items()
        }

    def set_parameter(self, name: str, value: str) -> None:
        storage.write_bytes(self._outputs["parameters"][name]["outputFile"], value.encode())

    def write(self) -> None:
        """The executor output file: KFP merges this metadata into the recorded artifacts."""
        document = {
            "artifacts": {
                name: {"artifacts": [{"name": artifact.name, "uri": artifact.uri, "metadata": artifact.metadata}]}
                for name, artifact in self.artifacts.items()
            }
        }
        storage.write_bytes(self._outputs["outputFile"], json.dumps(document).encode())


def require_pinned(image: str) -> None:
    """Caches are keyed on the image reference: a tag can move, a digest cannot."""
    if "@sha256:" not in image:
        raise InputError(f"--image {image}: not pinned by digest (REPOSITORY@sha256:...); KFP caches on this reference")


def collect_prepare(*, outputs: TaskOutputs) -> dict:
    """The shards written at the Dataset artifact's path -> its metadata and the manifest digest."""
    dataset = outputs.artifacts["dataset"]
    manifest = read_manifest(dataset.path)
    digest = manifest_digest(manifest)
    dataset.metadata.update(
        manifest_digest=digest,
        schema_version=manifest["schema_version"],
        **{f"{split}_records": entry["num_records"] for split, entry in manifest["splits"].items()},
    )
    outputs.set_parameter("manifest_digest", digest)
    return {"manifest_digest": digest}


def collect_train(*, outputs: TaskOutputs, model_root: str, manifest_digest: str) -> dict:
    """The model that train published -> Model files, Metrics, ClassificationMetrics, model card."""
    ref = registry.resolve(model_root)  # LATEST; refuses a model that did not pass its gate
    metrics = json.loads(storage.read_bytes(storage.join(ref.uri, registry.METRICS_FILE)))
    if metrics["data"]["manifest_digest"] != manifest_digest:
        raise CheckFailed(f"{model_root}: LATEST ({ref.version}) was not trained on this run's data set {manifest_digest}")
    model = outputs.artifacts["model"]
    for uri in storage.list_prefix(ref.uri):
        storage.download_file(uri, os.path.join(model.path, os.path.relpath(uri, ref.uri)))
    model.metadata.update(
        model_version=ref.version,
        registry_uri=ref.uri,
        manifest_digest=manifest_digest,
        test_accuracy=metrics["test_accuracy"],
        framework="keras",
    )
    scores = outputs.artifacts["metrics"]
    scores.log_metric("test_accuracy", metrics["test_accuracy"])
    scores.log_metric("test_loss", metrics["test_loss"])
    for name, per_class in metrics["per_class"].items():
        scores.log_metric(f"f1 {name}", per_class["f1"])
    outputs.artifacts["confusion_matrix"].log_confusion_matrix(list(CLASS_NAMES), metrics["confusion_matrix"])
    storage.download_file(storage.join(ref.uri, registry.MODEL_CARD_FILE), outputs.artifacts["model_card"].path)
    return {"model_version": ref.version, "test_accuracy": metrics["test_accuracy"]}


def collect_score(*, outputs: TaskOutputs, output: str, run_id: str, run_date: str) -> dict:
    """The run summary (written last by score) -> the predictions Dataset and its counts as Metrics."""
    summary_uri = schema.run_summary_uri(output, run_id)
    summary = json.loads(storage.read_bytes(summary_uri))
    predictions = outputs.artifacts["predictions"]
    storage.write_bytes(predictions.path, json.dumps(summary, indent=2).encode())
    predictions.metadata.update(
        predictions_uri=schema.partition_uri(output, schema.PREDICTIONS_TABLE, run_date, run_id),
        errors_uri=schema.partition_uri(output, schema.ERRORS_TABLE, run_date, run_id),
        summary_uri=summary_uri,
        table_schema_version=schema.TABLE_SCHEMA_VERSION,
    )
    counts = outputs.artifacts["summary"]
    for name, value in numbers(summary).items():
        counts.log_metric(name, value)
    return {"summary_uri": summary_uri}


def numbers(document: dict, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON document, keyed by its dotted path (`counts.read`)."""
    found = {}
    for key, value in document.items():
        if isinstance(value, dict):
            found.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = value
    return found


def collect_run_context(
    *,
    outputs: TaskOutputs,
    scheduled_time: str,
    run_date: str,
    date_offset_days: int,
    time_zone: str,
    shards_template: str,
    run_id_template: str,
) -> dict:
    """The logical date (run_date, else the scheduled time's date in time_zone, plus the offset) and its names."""
    date = logical_date(scheduled_time=scheduled_time, run_date=run_date, date_offset_days=date_offset_days, time_zone=time_zone)
    names = {"date": date}
    for name, template in (("shards", shards_template), ("run_id", run_id_template)):
        try:
            names[name] = template.format(date=date)
        except (KeyError, IndexError, ValueError) as error:
            raise InputError(f"{name} template {template!r}: may only use {{date}} ({error})") from error
    for name, value in names.items():
        outputs.set_parameter(name, value)
    return names


def logical_date(*, scheduled_time: str, run_date: str, date_offset_days: int, time_zone: str) -> str:
    """YYYY-MM-DD of the partition a run writes: explicit for backfills, else from the schedule."""
    if run_date:
        try:
            return datetime.date.fromisoformat(run_date).isoformat()
        except ValueError as error:
            raise InputError(f"--run-date {run_date!r}: not a YYYY-MM-DD date") from error
    try:
        moment = datetime.datetime.fromisoformat(scheduled_time.replace("Z", "+00:00"))
        zone = datetime.UTC if time_zone == "UTC" else ZoneInfo(time_zone)
    except ValueError as error:
        raise InputError(
            f"--scheduled-time {scheduled_time!r}: not an RFC 3339 time; the KFP backend did "
            "not resolve the schedule time placeholder, so pass run_date"
        ) from error
    except ZoneInfoNotFoundError as error:
        raise InputError(f"--time-zone {time_zone!r}: unknown time zone") from error
    if moment.tzinfo is None:
        raise InputError(f"--scheduled-time {scheduled_time!r}: has no UTC offset")
    return (moment.astimezone(zone).date() + datetime.timedelta(days=date_offset_days)).isoformat()


COLLECTORS = {
    "prepare": collect_prepare,
    "train": collect_train,
    "score": collect_score,
    "run-context": collect_run_context,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.kfp_outputs", description=__doc__.splitlines()[0])
    parser.add_argument("--executor-input", required=True, help="KFP's executor input JSON ({{$}})")
    kinds = parser.add_subparsers(dest="kind", required=True)
    for kind in COLLECTORS:
        sub = kinds.add_parser(kind)
        sub.add_argument("--image", required=True, help="the task's image, pinned by digest")
    kinds.choices["train"].add_argument("--model-root", dest="model_root", required=True)
    kinds.choices["train"].add_argument("--manifest-digest", dest="manifest_digest", required=True)
    for name in ("--output", "--run-id", "--run-date"):
        kinds.choices["score"].add_argument(name, dest=name[2:].replace("-", "_"), required=True)
    context = kinds.choices["run-context"]
    for name in ("--scheduled-time", "--run-date", "--time-zone", "--shards-template", "--run-id-template"):
        context.add_argument(name, dest=name[2:].replace("-", "_"), required=True)
    context.add_argument("--date-offset-days", dest="date_offset_days", type=int, required=True)
    return parser


def run_step(command: list[str]) -> int:
    """Runs the step as a child process and returns its exit code. SIGTERM to this process (the
    container's main process, which Kubernetes and Vertex stop) is passed on to the step, so it
    can cancel the Dataflow job it launched and clean up before the pod goes."""
    step = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: step.send_signal(signal.SIGTERM))
    try:
        return step.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = vars(build_parser().parse_args(own))
    kind, executor_input = args.pop("kind"), args.pop("executor_input")
    status = run(require_pinned, {"image": args.pop("image")})
    if status == 0 and command:
        status = run_step(command)
    if status != 0:
        return status

    def collect(**kwargs) -> dict:
        outputs = TaskOutputs(executor_input)
        result = COLLECTORS[kind](outputs=outputs, **kwargs)
        outputs.write()
        return result

    return run(collect, args)


if __name__ == "__main__":
    sys.exit(main())
