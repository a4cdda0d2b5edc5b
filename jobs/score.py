"""Image shards -> Parquet prediction and error tables, with a Beam pipeline (DirectRunner or Dataflow).

    fmnist score --input 'runs/local/shards/test-*.tfrecord' --model runs/local/models --output runs/local/scores
    fmnist score --input 'gs://b/shards/*.tfrecord' --model gs://b/models --output gs://b/scores \\
        --runner DataflowRunner --project P --region europe-west1 --temp_location gs://b/tmp \\
        --sdk_container_image europe-docker.pkg.dev/P/fmnist/fmnist-jobs:0.1.0

Flags not listed below are standard Beam pipeline options, passed to the pipeline as they are.
"""

import argparse
import sys
from collections.abc import Sequence

from components.score_run import score
from jobs.runner import new_parser, run, uri


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist score", __doc__.splitlines()[0])
    parser.allow_abbrev = False  # a Beam flag must never be taken for an abbreviation of ours
    parser.epilog = (
        "Any other flag is a standard Beam pipeline option: --runner, --direct_num_workers, "
        "--direct_running_mode, --project, --region, --temp_location, --sdk_container_image, ..."
    )
    parser.add_argument("--input", type=uri, required=True, help="glob of TFRecord image shards (local or gs://)")
    parser.add_argument("--model", type=uri, required=True, help="model version folder, or model root (its published LATEST)")
    parser.add_argument("--output", type=uri, required=True, help="root of the predictions/, errors/ and runs/ tables")
    parser.add_argument(
        "--run-id", dest="run_id", help="id of this run; the same id replaces that run (default: UTC time + random)"
    )
    parser.add_argument("--run-date", dest="run_date", help="partition date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument(
        "--max-error-rate",
        dest="max_error_rate",
        type=float,
        help="failed share above which the run exits 3 after publishing (default 0.01)",
    )
    parser.add_argument("--batch-size", dest="batch_size", type=int, help="images per model call (default 512)")
    parser.add_argument(
        "--lease-ttl-s",
        dest="lease_ttl_s",
        type=float,
        help="seconds after which the run id lease of an attempt that stopped renewing it "
        "(killed, evicted) may be taken over (default 60)",
    )
    parser.add_argument(
        "--gcp-resources",
        dest="gcp_resources",
        help="file to write the launched Dataflow job to, as google-cloud-pipeline-components do",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    return run(score, {**vars(args), "beam_args": beam_args})


if __name__ == "__main__":
    sys.exit(main())
