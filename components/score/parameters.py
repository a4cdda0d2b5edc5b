"""`fmnist score`'s parameters (components.contracts.parameters), beside the run they configure.

Their own module rather than score_run.py: the run's module is the lease, staging and
publishing, and this declaration is read by the command line and the KFP definitions too.
The defaults are the run's own constants, so they are still written once.
"""

from __future__ import annotations

import dataclasses

from components.contracts.parameters import parameter
from components.io.lease import DEFAULT_TTL_S
from components.score.run import DEFAULT_MAX_ERROR_RATE, DEFAULT_REPLACED_PARTS_GRACE_S
from components.score.shard_scoring import DEFAULT_BATCH_SIZE


@dataclasses.dataclass(frozen=True)
class ScoreParameters:
    """`fmnist score`: image shards -> the prediction and error tables of one run."""

    input: str = parameter(help="glob of TFRecord image shards (local or gs://)", location=True)
    model: str = parameter(help="model version folder, or model root (its published LATEST)", location=True)
    output: str = parameter(help="root of the predictions/, errors/ and runs/ tables", location=True)
    run_id: str | None = parameter(None, help="id of this run; the same id replaces that run", default_help="UTC time + random")
    run_date: str | None = parameter(
        None,
        help="logical date YYYY-MM-DD of the data scored (the partition); a schedule passes the day its shards are of",
        default_help="today, UTC",
    )
    max_error_rate: float = parameter(
        DEFAULT_MAX_ERROR_RATE, help="failed share above which the run exits 3 after publishing", tuning=True
    )
    batch_size: int = parameter(DEFAULT_BATCH_SIZE, help="images per model call")
    lease_ttl_s: float = parameter(
        DEFAULT_TTL_S,
        help="seconds after which the run id lease of an attempt that stopped renewing it (killed, evicted) may be taken over",
    )
    replaced_parts_grace_s: float = parameter(
        DEFAULT_REPLACED_PARTS_GRACE_S,
        help="seconds the parts a rerun replaces stay readable for readers that read the previous summary",
    )
    gcp_resources: str | None = parameter(
        None, help="file to write the launched Dataflow job to, as google-cloud-pipeline-components do"
    )
