"""Image shards -> a trained, evaluated, quality-gated model version (published when it passes).

fmnist train --data runs/local/shards --model-root runs/local/models
fmnist train --data gs://bucket/shards --model-root gs://bucket/models --architecture cnn --min-accuracy 0.92
"""

import argparse
import sys

from components.train.training import TrainParameters, train
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist train", __doc__.splitlines()[0], TrainParameters)


main = main_of(build_parser, train)

if __name__ == "__main__":
    sys.exit(main())
