"""Helpers for tests of the compiled KFP specs: read a spec, resolve a task's command line, fake `{{$}}`."""

import json
import os
import re

# Image references as a run passes them: pinned by digest, in the example deployment's repository.
IMAGE = "europe-west4-docker.pkg.dev/acme-ml/fmnist/jobs@sha256:" + "a" * 64
WORKER = "europe-west4-docker.pkg.dev/acme-ml/fmnist/worker@sha256:" + "b" * 64
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = os.path.join(REPO, "infra", "kfp")
# The artifacts of the train task: name -> KFP schema title.
TRAIN_ARTIFACTS = {
    "model": "system.Model",
    "metrics": "system.Metrics",
    "confusion_matrix": "system.ClassificationMetrics",
    "model_card": "system.Markdown",
}
# The output parameters of the resolve-model task (the run's model version and what the importer records).
RESOLVED_MODEL = ("model_version", "model_uri", "test_accuracy", "test_ece", "manifest_digest")
_PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['([a-z_]+)'\](\.path|\.output_file|\.uri)?\}\}")


def load_spec(name: str) -> dict:
    import yaml

    with open(os.path.join(SPECS, f"{name}.yaml")) as file:
        return yaml.safe_load(file)


def tasks(name: str) -> dict:
    """Every task of a compiled pipeline by name: the exit task and the tasks its exit handler watches."""
    spec = load_spec(name)
    found = dict(spec["root"]["dag"]["tasks"])
    for group in [task for task in found if task.startswith("exit-handler")]:
        found.update(spec["components"][found.pop(group)["componentRef"]["name"]]["dag"]["tasks"])
    return found


def container(name: str, task: str) -> dict:
    """The container (image, command, args) of one task of a compiled pipeline."""
    return load_spec(name)["deploymentSpec"]["executors"][f"exec-{task}"]["container"]


def render(args: list[str], values: dict[str, str]) -> list[str]:
    """Command-line items as the KFP launcher resolves them, for the inputs/outputs in `values`
    (an optional input absent from `values` drops its IfPresent flags; `{{$}}` is values["$"])."""
    rendered = []
    for arg in args:
        if arg.startswith('{"IfPresent"'):
            branch = json.loads(arg)["IfPresent"]
            rendered += render(branch["Then"] if branch["InputName"] in values else branch.get("Else", []), values)
        else:
            arg = arg.replace("{{$}}", values.get("$", "{{$}}"))
            rendered.append(_PLACEHOLDER.sub(lambda match: str(values[match.group(3)]), arg))
    return rendered


def executor_input(
    folder: str, artifacts: dict[str, str], parameters: tuple[str, ...] = (), uris: dict[str, str] | None = None
) -> str:
    """`{{$}}` of a task whose outputs live under `folder` (or at `uris[name]`): artifacts
    (name -> schema title) and parameters. Local URIs: their path is the URI itself."""
    uris = uris or {}
    return json.dumps(
        {
            "outputs": {
                "artifacts": {
                    name: {
                        "artifacts": [{"name": name, "uri": uris.get(name, f"{folder}/{name}"), "type": {"schemaTitle": title}}]
                    }
                    for name, title in artifacts.items()
                },
                "parameters": {name: {"outputFile": f"{folder}/parameters/{name}"} for name in parameters},
                "outputFile": f"{folder}/executor_output.json",
            }
        }
    )


def executor_output(folder) -> dict:
    """The artifacts (name -> {name, uri, metadata}) a task wrote to its executor output file."""
    with open(os.path.join(folder, "executor_output.json")) as file:
        return {name: entry["artifacts"][0] for name, entry in json.load(file)["artifacts"].items()}
