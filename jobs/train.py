"""Image shards -> a trained, evaluated, quality-gated model version (published when it passes).

fmnist train --data runs/local/shards --model-root runs/local/models
fmnist train --data gs://bucket/shards --model-root gs://bucket/models --model cnn --min-accuracy 0.92
"""

import argparse
import sys

from components.models import MODEL_NAMES, RECIPES
from components.training import LR_SCHEDULES, train
from jobs.runner import main_of, new_parser, uri


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist train", __doc__.splitlines()[0])
    parser.add_argument("--data", type=uri, required=True, help="folder or gs:// prefix with the shards and manifest.json")
    parser.add_argument(
        "--model-root",
        dest="model_root",
        type=uri,
        required=True,
        help="folder or gs:// prefix of the model registry (version folders + LATEST)",
    )
    parser.add_argument("--model", choices=MODEL_NAMES, help="mlp = the workshop network (default), cnn = small conv net")
    for flag, field, kind, what in (
        ("--epochs", "epochs", int, "passes over the training data"),
        ("--batch-size", "batch_size", int, "images per step"),
        ("--learning-rate", "learning_rate", float, "Adam's peak learning rate"),
    ):
        defaults = ", ".join(f"{name} {getattr(recipe, field)}" for name, recipe in RECIPES.items())
        parser.add_argument(flag, dest=field, type=kind, help=f"{what} (default: {defaults})")
    parser.add_argument(
        "--lr-schedule",
        dest="lr_schedule",
        choices=LR_SCHEDULES,
        help="cosine: decay to 0 over the run (default); constant: the tutorial's",
    )
    parser.add_argument("--seed", type=int, help="random seed; same data + seed + flags = same model (default 0)")
    parser.add_argument(
        "--min-accuracy",
        dest="min_accuracy",
        type=float,
        help="quality gate: minimum test accuracy to publish (default 0.85); below it exit 3",
    )
    parser.add_argument(
        "--validation-fraction",
        dest="validation_fraction",
        type=float,
        help="share of the training split held out to pick the best epoch (default 0.05)",
    )
    return parser


main = main_of(build_parser, train)

if __name__ == "__main__":
    sys.exit(main())
