"""The model registry by hand: list the versions, promote one, roll back, register in Vertex AI.

fmnist model list --model-root runs/local/models
fmnist model promote --model-root runs/local/models 20261129T043000Z-1a2b3c4d --reason "hotfix"
fmnist model rollback --model-root gs://bucket/models
fmnist model resolve --model-root gs://bucket/models      # the published version as JSON (pipelines import it)
fmnist model register --target vertex --model-root gs://bucket/models --project p --region europe-west4 --dry-run
"""

import argparse
import sys
from collections.abc import Sequence

from components.cloud.vertex_models import RegisterParameters, register_model
from components.contracts import model_versions, registry
from jobs.entrypoint import EXIT_BAD_INPUT, new_parser, run


def list_and_show(*, model_root: str) -> None:
    """Prints the versions, oldest first (`*` marks the one LATEST names), then LATEST's history.

    The same rows with every column: `fmnist query "SELECT * FROM models" --models ROOT ...`.
    """
    rows = model_versions.list_versions(model_root)
    print(f"{'':1} {'model_version':<26} {'accuracy':>8} {'ECE':>7} {'architecture':<12} {'trained_at':<25} verdict")
    for row in rows:
        print(
            f"{'*' if row.is_latest else ' '} {row.model_version:<26} {_figure(row.test_accuracy):>8} "
            f"{_figure(row.test_ece):>7} {row.architecture or '-':<12} {row.trained_at or '-':<25} {row.verdict}"
            + (f" (against {row.champion_version})" if row.champion_version else "")
        )
    history = registry.read_history(model_root)
    print(f"\n{registry.HISTORY_NAME}:" if history else f"\n{registry.HISTORY_NAME}: no changes recorded")
    for change in history:
        print(f"{change.at}  {change.from_version or '-'} -> {change.to_version}  {change.command}: {change.reason}")


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


COMMANDS = {
    "list": (model_versions.ListParameters, list_and_show),
    "promote": (model_versions.PromoteParameters, model_versions.promote),
    "rollback": (model_versions.RollbackParameters, model_versions.rollback),
    "register": (RegisterParameters, register_model),
    "resolve": (model_versions.ResolveParameters, model_versions.resolve_latest),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: fmnist model: unknown command {argv[0]!r}; commands: {known}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"usage: fmnist model <command> [flags]   commands: {known}\n       fmnist model <command> --help")
        return 0 if argv else EXIT_BAD_INPUT
    parameters, component = COMMANDS[argv[0]]
    parser: argparse.ArgumentParser = new_parser(f"fmnist model {argv[0]}", parameters.__doc__.splitlines()[0], parameters)
    return run(component, vars(parser.parse_args(argv[1:])))


if __name__ == "__main__":
    sys.exit(main())
