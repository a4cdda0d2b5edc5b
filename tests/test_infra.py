"""Infrastructure as code: every .tf parses and says what the issue asks; checkov finds nothing unexplained."""
import glob
import json
import os
import re
import subprocess

import hcl2
import pytest

from components import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERRAFORM = os.path.join(REPO, "infra", "terraform")
CHECKOV = os.path.join(REPO, ".venv-tools", "bin", "checkov")


@pytest.fixture(scope="module")
def terraform() -> dict[str, list]:
    """Every block of every .tf file, by block type (resource, variable, ...)."""
    blocks: dict[str, list] = {}
    files = sorted(glob.glob(os.path.join(TERRAFORM, "*.tf")))
    assert files, "no Terraform files"
    for path in files:
        with open(path) as file:
            for kind, entries in hcl2.load(file).items():
                blocks.setdefault(kind, []).extend(entries)
    return blocks


def resources(terraform: dict, kind: str) -> dict[str, dict]:
    return {name.strip('"'): body for entry in terraform["resource"] for typ, named in entry.items()
            if typ.strip('"') == kind for name, body in named.items()}


def test_buckets_have_uniform_access_no_public_access_and_lifecycle_rules(terraform):
    buckets = resources(terraform, "google_storage_bucket")
    assert set(buckets) == {"data", "models", "tables", "pipelines"}
    for name, bucket in buckets.items():
        assert bucket["uniform_bucket_level_access"] is True, name
        assert bucket["public_access_prevention"] == '"enforced"', name
        assert bucket["lifecycle_rule"], f"{name}: no lifecycle rule"


def test_service_accounts_get_bucket_scoped_roles_and_no_broad_ones(terraform):
    accounts = resources(terraform, "google_service_account")
    assert set(accounts) == {"pipeline_runner", "dataflow_worker"}
    text = "".join(open(path).read() for path in glob.glob(os.path.join(TERRAFORM, "*.tf")))
    granted = set(re.findall(r'"(roles/[a-zA-Z.]+)"', text))
    assert not granted & {"roles/owner", "roles/editor", "roles/storage.admin", "roles/dataflow.admin",
                          "roles/iam.serviceAccountAdmin"}
    assert "roles/storage.objectAdmin" in granted  # on single buckets only: see the next assertion
    assert "google_project_iam_member" in text and "objectAdmin" not in "".join(
        re.findall(r'resource "google_project_iam_member"[^}]*}', text, flags=re.S))


def test_external_tables_read_the_schema_generated_from_components_schema(terraform):
    table = resources(terraform, "google_bigquery_table")["scoring"]
    assert set(table["for_each"]) == {"predictions", "errors"}
    assert table["schema"] == '${file("${path.module}/../bigquery/${each.key}.schema.json")}'
    config = table["external_data_configuration"][0]
    assert config["source_format"] == '"PARQUET"'
    hive = config["hive_partitioning_options"][0]
    assert hive["mode"] == '"CUSTOM"' and hive["source_uri_prefix"].endswith('{run_date:DATE}"')
    # The file the table reads is the schema module's columns (the report side keeps it current).
    with open(os.path.join(REPO, "infra", "bigquery", "predictions.schema.json")) as file:
        assert json.load(file) == schema.bigquery_schema(schema.PREDICTION_COLUMNS)
    # BigQuery refuses Hive keys that are also file columns: only keys absent from the files.
    file_columns = {name for name, *_ in schema.PREDICTION_COLUMNS}
    assert "run_date" not in file_columns


def test_artifact_registry_repository_has_immutable_tags(terraform):
    repository = resources(terraform, "google_artifact_registry_repository")["images"]
    assert repository["format"] == '"DOCKER"'
    assert repository["docker_config"][0]["immutable_tags"] is True


def test_dockerfile_takes_beam_boot_files_from_the_locked_beam_version():
    with open(os.path.join(REPO, "requirements.lock")) as file:
        beam = re.search(r"^apache-beam==(\S+)$", file.read(), flags=re.M).group(1)
    with open(os.path.join(REPO, "Dockerfile")) as file:
        dockerfile = file.read()
    assert f"FROM apache/beam_python3.11_sdk:{beam} AS beam-sdk" in dockerfile
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.M)
    assert stages[-1] == "jobs"  # the default target, which needs no registry


@pytest.mark.slow
@pytest.mark.parametrize("target", [["-d", "infra"], ["-f", "Dockerfile"]], ids=["infra", "Dockerfile"])
def test_checkov_reports_no_failure_and_every_skip_has_a_reason(target):
    if not os.path.exists(CHECKOV):
        pytest.fail("checkov is not installed: `make tools` creates .venv-tools with it", pytrace=False)
    done = subprocess.run([CHECKOV, *target, "--skip-download", "--output", "json"],
                          cwd=REPO, capture_output=True, text=True)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert reports and all(report["summary"]["passed"] > 0 for report in reports)
    failed = [(check["check_id"], check["resource"]) for report in reports
              for check in report["results"]["failed_checks"]]
    assert failed == []
    unexplained = [(check["check_id"], check["resource"]) for report in reports
                   for check in report["results"]["skipped_checks"]
                   if len(check["check_result"].get("suppress_comment", "").strip()) < 20]
    assert unexplained == []


def terraform_output_value(name: str, **variables: str) -> str:
    """An output of infra/terraform whose value is a string of bucket names and variables, evaluated."""
    blocks: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(TERRAFORM, "*.tf"))):
        with open(path) as file:
            for kind, entries in hcl2.load(file).items():
                blocks.setdefault(kind, []).extend(entries)
    (output,) = [entry[f'"{name}"'] for entry in blocks["output"] if f'"{name}"' in entry]
    buckets = resources(blocks, "google_storage_bucket")
    value = output["value"].strip('"')
    value = re.sub(r"\$\{google_storage_bucket\.(\w+)\.name\}", lambda m: buckets[m.group(1)]["name"].strip('"'), value)
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: variables[m.group(1)], value)
