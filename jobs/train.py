"""Image shards -> a trained, evaluated, quality-gated model version (published when it passes).

fmnist train --data runs/local/shards --model-root runs/local/models
fmnist train --data gs://bucket/shards --model-root gs://bucket/models --architecture cnn --min-accuracy 0.92
"""

import argparse
import os
import sys
from collections.abc import Sequence

from components.train.training import TrainParameters, train
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist train", __doc__.splitlines()[0], TrainParameters)


def main(argv: Sequence[str] | None = None) -> int:
    # oneDNN is TensorFlow's default only on CPUs with AVX-512; on AVX2 it trains the float32 CNN
    # with a third less CPU time than Eigen (docs/benchmarks.md). TensorFlow reads the setting
    # when it is first imported, after this; a value the caller set is kept.
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    return main_of(build_parser, train)(argv)


if __name__ == "__main__":
    sys.exit(main())
