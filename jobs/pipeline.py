"""Compile the KFP pipelines into YAML specs, and submit runs or schedules to KFP or Vertex AI Pipelines.

    fmnist pipeline compile                                   # -> infra/kfp/{training,scoring}.yaml
    fmnist pipeline submit --deployment deployment.json --host https://kfp.example.com \\
        --schedule infra/schedules/scoring-daily.yaml \\
        --param image=REPO/jobs@sha256:... --param worker_image=REPO/worker@sha256:...
    fmnist pipeline submit --deployment D --host URL --schedule infra/schedules/scoring-daily.yaml --once \\
        --param run_date=2026-11-01 --param image=... --param worker_image=...
    fmnist pipeline submit --deployment D --host URL --spec infra/kfp/training.yaml --param image=...
    fmnist pipeline submit --deployment D --target vertex --schedule infra/schedules/scoring-daily.yaml --dry-run \\
        --param image=REPO/jobs@sha256:... --param worker_image=REPO/worker@sha256:...
    fmnist pipeline resume --deployment D --target vertex --schedule infra/schedules/scoring-daily.yaml --catch-up
    fmnist pipeline backfill --deployment D --target vertex --schedule infra/schedules/scoring-daily.yaml \
        --from 2026-11-01 --to 2026-11-07 --param image=... --param worker_image=...   # one run per date

deployment.json is `terraform output -json` of infra/terraform (infra/deployments/example.json).
"""

import argparse
import sys
from collections.abc import Sequence

from jobs.entrypoint import new_parser, run

DEFAULT_SPECS = "infra/kfp"
DEPLOYMENT_HELP = "the project's names: `terraform output -json` of infra/terraform"


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist pipeline", __doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    compile_ = actions.add_parser("compile", argument_default=argparse.SUPPRESS, help="write the YAML specs")
    compile_.add_argument("--output", default=DEFAULT_SPECS, help=f"folder for the specs (default {DEFAULT_SPECS})")
    compile_.add_argument("--deployment", help=DEPLOYMENT_HELP + "; the specs declare its pipeline root")
    compile_.add_argument(
        "--pipeline-root",
        dest="pipeline_root",
        help="gs:// root of the runs' artifacts, declared in the specs (default: the deployment's, else none)",
    )
    submit = add_target_flags(
        actions.add_parser("submit", argument_default=argparse.SUPPRESS, help="create a run or a recurring run")
    )
    submit.add_argument("--schedule", help="schedule file (infra/schedules/*.yaml): cron, time zone, spec, parameters")
    submit.add_argument("--spec", help="compiled spec for a single run without a schedule")
    submit.add_argument("--param", action="append", help="NAME=VALUE pipeline parameter (repeatable; overrides the file)")
    submit.add_argument("--once", action="store_true", help="one run now with the schedule's parameters (a backfill)")
    submit.add_argument(
        "--pipeline-root",
        dest="pipeline_root",
        help="gs:// root of the run's artifacts, in the deployment's buckets (default: its pipeline_root)",
    )
    submit.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the requests; send nothing")
    kfp = submit.add_argument_group("--target kfp")
    kfp.add_argument("--experiment", help="KFP experiment (default: the schedule's, else Default)")
    kfp.add_argument(
        "--cluster-time-zone",
        dest="cluster_time_zone",
        help="the KFP install's cronScheduleTimezone (default UTC): the schedule's cron is converted to it",
    )
    vertex = submit.add_argument_group("--target vertex")
    vertex.add_argument("--project", help="Google Cloud project: must be the deployment's (a check)")
    vertex.add_argument("--region", help="Vertex AI region: must be the deployment's (a check)")
    vertex.add_argument(
        "--service-account",
        dest="service_account",
        help="account the run acts as, of the deployment's project (default: its pipeline runner)",
    )
    vertex.add_argument("--network", help="VPC network to peer the run with (projects/NUMBER/global/networks/NAME)")
    vertex.add_argument("--label", action="append", help="NAME=VALUE label of the run (repeatable)")
    backfill = add_target_flags(
        actions.add_parser(
            "backfill", argument_default=argparse.SUPPRESS, help="one run per logical date of a range, the schedule's way"
        )
    )
    backfill.add_argument("--schedule", required=True, help="schedule file whose pipeline and parameters each run takes")
    backfill.add_argument("--from", dest="from_date", required=True, help="first logical date YYYY-MM-DD")
    backfill.add_argument("--to", dest="to_date", required=True, help="last logical date YYYY-MM-DD (inclusive)")
    backfill.add_argument("--param", action="append", help="NAME=VALUE pipeline parameter (repeatable; overrides the file)")
    backfill.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the requests; send nothing")
    resume = add_target_flags(
        actions.add_parser("resume", argument_default=argparse.SUPPRESS, help="resume a paused recurring run")
    )
    resume.add_argument("--schedule", required=True, help="schedule file whose recurring run (by name) to resume")
    resume.add_argument("--experiment", help="KFP experiment (default: the schedule's)")
    resume.add_argument(
        "--catch-up",
        dest="catch_up",
        action="store_true",
        help="Vertex: start the runs missed while paused (KFP: as the schedule file's catchup says)",
    )
    resume.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the request; send nothing")
    return parser


def add_target_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Where a submit or resume goes: the deployment's project, on KFP or Vertex AI Pipelines."""
    parser.add_argument("--deployment", help=DEPLOYMENT_HELP + " (required)")
    parser.add_argument("--target", choices=("kfp", "vertex"), help="Kubeflow Pipelines API (default) or Vertex AI Pipelines")
    parser.add_argument("--host", help="KFP API endpoint, e.g. https://kfp.example.com (--target kfp)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    action = args.pop("action")
    if action == "compile":
        from components.cloud.pipelines import compile_pipelines

        return run(compile_pipelines, args)
    from components.cloud.schedules import backfill, resume, submit

    return run({"submit": submit, "resume": resume, "backfill": backfill}[action], args)


if __name__ == "__main__":
    sys.exit(main())
