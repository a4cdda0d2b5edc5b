"""A deployment: the names one `terraform apply` of infra/terraform created in one Google Cloud project.

    terraform -chdir=infra/terraform output -json > deployment.json
    fmnist pipeline submit --deployment deployment.json --schedule infra/schedules/scoring-daily.yaml ...

This module is the only place that knows a project's names (project, region, buckets, service
accounts, Dataflow subnetwork, pipeline root, image repository). Schedules and compiled specs
carry none: submit fills the pipelines' location parameters from the deployment, and refuses a
parameter or flag that names another project's resources. infra/deployments/example.json shows
the file for a made-up project.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from components.errors import InputError

# Beam's two flags for the Dataflow workers' addresses: private ones need Private Google Access on
# the subnetwork (to reach Cloud Storage and Artifact Registry). The pipeline takes the flag itself:
# KFP cannot pick a flag by a boolean.
PUBLIC_IPS_FLAGS = ("--no_use_public_ips", "--use_public_ips")

# The terraform outputs (infra/terraform/outputs.tf) a deployment file must hold, and their JSON types.
OUTPUTS: dict[str, type] = {
    "project_id": str,
    "region": str,
    "buckets": dict,
    "service_accounts": dict,
    "pipeline_root": str,
    "image_repository": str,
    "model_root": str,
    "tables_uri": str,
    "incoming_shards_template": str,
    "dataflow_temp_location": str,
    "dataflow_subnetwork": str,
    "dataflow_public_ips": bool,
}
BUCKET_PURPOSES = ("data", "models", "tables", "pipelines")
ACCOUNT_PURPOSES = ("pipeline_runner", "dataflow_worker")

# Names of Google Cloud resources that say which project they belong to.
_BUCKET = re.compile(r"gs://([a-z0-9._-]+)")
_ACCOUNT = re.compile(r"@([a-z0-9-]+)\.iam\.gserviceaccount\.com")
_IMAGE = re.compile(r"(?:^|/)(?:[a-z0-9-]+-docker\.pkg\.dev|(?:[a-z]+\.)?gcr\.io)/([a-z0-9:.-]+)/")


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The names of one project's fmnist resources, as terraform's outputs give them."""

    project: str
    region: str
    buckets: dict[str, str]  # purpose (data, models, tables, pipelines) -> bucket name
    pipeline_runner: str  # the account pipeline runs act as
    dataflow_worker: str  # the account of the scoring job's workers
    pipeline_root: str
    image_repository: str
    model_root: str
    tables_uri: str
    incoming_shards_template: str  # the shards a scoring run reads, with {date}
    dataflow_temp_location: str
    dataflow_subnetwork: str  # Beam's --subnetwork: a full URL or regions/REGION/subnetworks/NAME
    dataflow_public_ips: bool  # False only where the subnetwork has Private Google Access

    def pipeline_parameters(self) -> dict[str, Any]:
        """The pipelines' parameters that name this deployment's resources (each pipeline takes those it declares)."""
        return {
            "project": self.project,
            "region": self.region,
            "model_root": self.model_root,
            "output": self.tables_uri,
            "shards_template": self.incoming_shards_template,
            "temp_location": self.dataflow_temp_location,
            "service_account": self.dataflow_worker,
            "subnetwork": self.dataflow_subnetwork,
            "public_ips_flag": PUBLIC_IPS_FLAGS[1] if self.dataflow_public_ips else PUBLIC_IPS_FLAGS[0],
        }

    def check_names(self, what: str, value: Any) -> None:
        """Refuses a value (a parameter or a flag, named `what`) that names another project's bucket,
        service account or image repository."""
        if isinstance(value, dict):
            for item in value.values():
                self.check_names(what, item)
            return
        if not isinstance(value, str):
            return
        for bucket in _BUCKET.findall(value):
            if bucket not in self.buckets.values():
                raise InputError(
                    f"{what}={value}: bucket {bucket} is not one of deployment {self.project}'s buckets "
                    f"({', '.join(self.buckets.values())})"
                )
        for project in [*_ACCOUNT.findall(value), *_IMAGE.findall(value)]:
            if project != self.project:
                raise InputError(f"{what}={value}: names project {project}, not deployment {self.project}")

    def check_same(self, what: str, value: str | None, expected: str) -> None:
        """Refuses a flag or parameter that gives another value than the deployment's."""
        if value is not None and value != expected:
            raise InputError(f"{what}={value}: contradicts deployment {self.project}, whose value is {expected}")


def load_deployment(path: str) -> Deployment:
    """Reads `terraform output -json` of infra/terraform ({"name": {"sensitive": ..., "type": ..., "value": ...}})."""
    try:
        with open(path) as file:
            document = json.load(file)
    except (OSError, ValueError) as error:
        raise InputError(f"--deployment {path}: cannot read it ({error})") from error
    if not isinstance(document, dict) or not all(isinstance(output, dict) for output in document.values()):
        raise InputError(f"--deployment {path}: not the output of `terraform output -json` (an object of outputs)")
    missing = sorted(name for name in OUTPUTS if "value" not in document.get(name, {}))
    if missing:
        raise InputError(f"--deployment {path}: outputs {missing} missing (terraform output -json of infra/terraform)")
    values = {name: document[name]["value"] for name in OUTPUTS}
    for name, kind in OUTPUTS.items():
        if not isinstance(values[name], kind):
            raise InputError(f"--deployment {path}: output {name} is not a {kind.__name__}")
    buckets, accounts = values["buckets"], values["service_accounts"]
    absent = sorted({*BUCKET_PURPOSES} - set(buckets)) + sorted({*ACCOUNT_PURPOSES} - set(accounts))
    if absent:
        raise InputError(f"--deployment {path}: buckets/service_accounts lack {absent}")
    if "{date}" not in values["incoming_shards_template"]:
        raise InputError(f"--deployment {path}: incoming_shards_template has no {{date}}")
    deployment = Deployment(
        project=values["project_id"],
        region=values["region"],
        buckets={purpose: str(buckets[purpose]) for purpose in BUCKET_PURPOSES},
        pipeline_runner=str(accounts["pipeline_runner"]),
        dataflow_worker=str(accounts["dataflow_worker"]),
        pipeline_root=values["pipeline_root"],
        image_repository=values["image_repository"],
        model_root=values["model_root"],
        tables_uri=values["tables_uri"],
        incoming_shards_template=values["incoming_shards_template"],
        dataflow_temp_location=values["dataflow_temp_location"],
        dataflow_subnetwork=values["dataflow_subnetwork"],
        dataflow_public_ips=values["dataflow_public_ips"],
    )
    # The file is one project's: every location it names is in that project.
    for name in ("pipeline_root", "model_root", "tables_uri", "incoming_shards_template", "dataflow_temp_location"):
        deployment.check_names(f"--deployment {path}: output {name}", values[name])
    return deployment
