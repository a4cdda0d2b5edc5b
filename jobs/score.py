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

from components.contracts.schema import ERRORS_TABLE, PREDICTIONS_TABLE, partition_uri, run_summary_uri
from components.score.parameters import ScoreParameters
from components.score.run import score
from jobs.entrypoint import new_parser, run


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist score", __doc__.splitlines()[0], ScoreParameters)
    parser.allow_abbrev = False  # a Beam flag must never be taken for an abbreviation of ours
    parser.epilog = (
        "Any other flag is a standard Beam pipeline option: --runner, --direct_num_workers, "
        "--direct_running_mode, --project, --region, --temp_location, --sdk_container_image, ..."
    )
    return parser


def score_and_locate(**kwargs) -> dict:
    """Scores; the result on stdout is the run summary plus where the run's tables are."""
    summary = score(**kwargs)
    if summary.get("dry_run"):  # a translated job graph, nothing written
        return summary
    output, run_id, run_date = kwargs["output"], summary["run_id"], summary["run_date"]
    tables = {
        "summary": run_summary_uri(output, run_id),
        "predictions": partition_uri(output, PREDICTIONS_TABLE, run_date, run_id),
        "errors": partition_uri(output, ERRORS_TABLE, run_date, run_id),
    }
    return {**summary, "tables": tables}


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    return run(score_and_locate, {**vars(args), "beam_args": beam_args})


if __name__ == "__main__":
    sys.exit(main())
