"""Runs one `fmnist` step in a KFP task, then turns its JSON result into the task's KFP outputs.

    python -m jobs.kfp_outputs --executor-input '{{$}}' train --image REPO@sha256:... \\
        --manifest-digest 3f2a... -- fmnist train --data ... --model-root gs://b/models
    python -m jobs.kfp_outputs --executor-input '{{$}}' run-context --image REPO@sha256:... -- fmnist run-context ...

The command after `--` runs unchanged: its stdout and stderr go to the task log, its exit code is
this process's, SIGTERM is passed on to it. The last line of its stdout is the step's JSON
result (what every step prints); only after the step succeeded is that result, and what it
names (the manifest, the model version's metrics.json, the run summary), written where KFP
collects it: files at the output artifacts' local paths, parameters to their output files,
artifact metadata (metrics, confusion matrix) to the executor output file.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from kfp.dsl.executor import create_artifact_instance

from components.cloud.schedules import require_pinned
from components.constants import CLASS_NAMES
from components.contracts import registry
from components.contracts.schema import TABLE_SCHEMA_VERSION
from components.contracts.shards import manifest_digest, read_manifest
from components.errors import CheckFailed
from components.io import storage
from components.score.failure_record import write_failure_note
from jobs.entrypoint import run


class TaskOutputs:
    """The output side of a KFP executor input: typed artifacts, parameter files, executor output."""

    def __init__(self, executor_input: str):
        self._outputs = json.loads(executor_input).get("outputs", {})
        self.artifacts = {
            name: create_artifact_instance(entry["artifacts"][0]) for name, entry in self._outputs.get("artifacts", {}).items()
        }

    def declares_parameter(self, name: str) -> bool:
        return name in self._outputs.get("parameters", {})

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


def collect_prepare(result: dict, *, outputs: TaskOutputs) -> dict:
    """`fmnist prepare`'s result names the manifest -> the Dataset's metadata and the manifest digest."""
    manifest = read_manifest(storage.dirname(result["manifest"]))
    digest = manifest_digest(manifest)
    outputs.artifacts["dataset"].metadata.update(
        manifest_digest=digest,
        schema_version=manifest.schema_version,
        **{f"{split}_records": entry.num_records for split, entry in manifest.splits.items()},
    )
    outputs.set_parameter("manifest_digest", digest)
    return {"manifest_digest": digest}


def collect_train(result: dict, *, outputs: TaskOutputs, manifest_digest: str) -> dict:
    """`fmnist train`'s result names the model version it published -> Model files, Metrics,
    ClassificationMetrics, model card."""
    version_uri = result["uri"]
    metrics = registry.read_metrics(version_uri)
    if metrics.data is None or metrics.data.manifest_digest != manifest_digest:
        raise CheckFailed(f"{version_uri} was not trained on this run's data set {manifest_digest}")
    model = outputs.artifacts["model"]
    for uri in storage.list_prefix(version_uri):
        storage.download_file(uri, os.path.join(model.path, os.path.relpath(uri, version_uri)))
    model.metadata.update(
        model_version=result["model_version"],
        registry_uri=version_uri,
        manifest_digest=manifest_digest,
        test_accuracy=metrics.test_accuracy,
        framework="keras",
    )
    scores = outputs.artifacts["metrics"]
    scores.log_metric("test_accuracy", metrics.test_accuracy)
    scores.log_metric("test_loss", metrics.test_loss)
    for name, per_class in (metrics.per_class or {}).items():
        scores.log_metric(f"f1 {name}", per_class["f1"])
    outputs.artifacts["confusion_matrix"].log_confusion_matrix(list(CLASS_NAMES), metrics.confusion_matrix)
    storage.download_file(storage.join(version_uri, registry.MODEL_CARD_FILE), outputs.artifacts["model_card"].path)
    if outputs.declares_parameter("model_version"):  # what a later step (the registry upload) names
        outputs.set_parameter("model_version", result["model_version"])
    return {"model_version": result["model_version"], "test_accuracy": metrics.test_accuracy}


def collect_score(result: dict, *, outputs: TaskOutputs) -> dict:
    """`fmnist score`'s result is the run summary and where its tables are -> the predictions
    Dataset (the summary as published) and its counts as Metrics."""
    tables = result["tables"]
    predictions = outputs.artifacts["predictions"]
    storage.write_bytes(predictions.path, storage.read_bytes(tables["summary"]))
    predictions.metadata.update(
        predictions_uri=tables["predictions"],
        errors_uri=tables["errors"],
        summary_uri=tables["summary"],
        table_schema_version=TABLE_SCHEMA_VERSION,
        model_version=result["model_version"],  # the tables' lineage to the model that scored them
    )
    counts = outputs.artifacts["summary"]
    for name, value in numbers({key: value for key, value in result.items() if key != "tables"}).items():
        counts.log_metric(name, value)
    return {"summary_uri": tables["summary"]}


def collect_result(result: dict, *, outputs: TaskOutputs) -> dict:
    """A step whose result has no KFP outputs (`fmnist model register`): it stays in the task log."""
    return result


def collect_parameters(result: dict, *, outputs: TaskOutputs) -> dict:
    """A step whose result is the task's output parameters by name (`fmnist run-context`)."""
    for name, value in result.items():
        outputs.set_parameter(name, str(value))
    return result


def numbers(document: dict, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON document, keyed by its dotted path (`counts.read`)."""
    found = {}
    for key, value in document.items():
        if isinstance(value, dict):
            found.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = value
    return found


def collect_nothing(result: dict, *, outputs: TaskOutputs) -> dict:
    """A step whose task has no outputs (`fmnist record-failure`, the exit handlers): its result as it is."""
    return result


COLLECTORS = {
    "prepare": collect_prepare,
    "train": collect_train,
    "score": collect_score,
    "run-context": collect_parameters,
    "record-failure": collect_nothing,
    "resolve-model": collect_parameters,
    "register-model": collect_result,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.kfp_outputs", description=__doc__.splitlines()[0])
    parser.add_argument("--executor-input", required=True, help="KFP's executor input JSON ({{$}})")
    kinds = parser.add_subparsers(dest="kind", required=True)
    for kind in COLLECTORS:
        sub = kinds.add_parser(kind)
        sub.add_argument("--image", required=True, help="the task's image, pinned by digest")
    for option, help_text in (("scores", "scoring output root"), ("run-id", "run id")):
        kinds.choices["score"].add_argument(
            f"--failure-{option}",
            dest=f"failure_{option.replace('-', '_')}",
            help=f"when the step fails, leave its exit code and last error line under this {help_text}",
        )
    kinds.choices["train"].add_argument(
        "--manifest-digest", dest="manifest_digest", required=True, help="the data set the model must have been trained on"
    )
    return parser


def run_step(command: list[str]) -> tuple[int, str, str]:
    """Runs the step as a child process; returns its exit code, the last line of its stdout (its
    JSON result) and the last line of its stderr (a failed step's one-line error). Every line of
    both is passed on to the task log as it comes. SIGTERM to this process (the container's main
    process, which Kubernetes and Vertex stop) is passed on to the step, so it can cancel the
    Dataflow job it launched and clean up before the pod goes."""
    step = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: step.send_signal(signal.SIGTERM))
    last_error: list[str] = [""]
    relay = threading.Thread(target=_relay_stderr, args=(step.stderr, last_error), name="stderr-relay", daemon=True)
    relay.start()
    last = ""
    try:
        for line in step.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            last = line.strip() or last
        code = step.wait()
        relay.join()
        return code, last, last_error[0]
    finally:
        signal.signal(signal.SIGTERM, previous)


def _relay_stderr(stream, last_error: list[str]) -> None:
    """Passes the step's stderr on as it comes, keeping its last line (a JSON log line's message)."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        if line.strip():
            last_error[0] = error_message(line.strip())


def error_message(line: str) -> str:
    """The message of a stderr line: the line itself, or `message` of a structured log line."""
    try:
        document = json.loads(line)
    except json.JSONDecodeError:
        return line
    return str(document.get("message", line)) if isinstance(document, dict) else line


def step_result(last_line: str) -> dict:
    """The step's JSON result: the last line it printed."""
    try:
        result = json.loads(last_line)
    except json.JSONDecodeError as error:
        raise ValueError(f"the step's last line of output is not its JSON result: {last_line[:200]!r}") from error
    if not isinstance(result, dict):
        raise ValueError(f"the step's JSON result is a {type(result).__name__}, expected an object")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = build_parser()
    args = vars(parser.parse_args(own))
    if not command:
        parser.error("no step to run: give its command line after --")
    kind, executor_input = args.pop("kind"), args.pop("executor_input")
    status = run(require_pinned, {"what": "--image", "image": args.pop("image")})
    if status != 0:
        return status
    status, last_line, last_error = run_step(command)
    if status != 0:
        if args.get("failure_scores") and args.get("failure_run_id"):
            # The exit handler takes no task's output: it reads the note (components/score/failure_record.py).
            run(
                write_failure_note,
                {
                    "scores": args["failure_scores"],
                    "run_id": args["failure_run_id"],
                    "task": kind,
                    "exit_code": status,
                    "error": last_error,
                },
            )
        return status
    args.pop("failure_scores", None)
    args.pop("failure_run_id", None)

    def collect(**kwargs) -> dict:
        outputs = TaskOutputs(executor_input)
        result = COLLECTORS[kind](step_result(last_line), outputs=outputs, **kwargs)
        outputs.write()
        return result

    return run(collect, args)


if __name__ == "__main__":
    sys.exit(main())
