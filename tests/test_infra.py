"""Infrastructure as code: every .tf parses and declares what the deployment needs; checkov finds nothing unexplained."""

import dataclasses
import glob
import json
import os
import re
import subprocess

import hcl2
import pytest

from components.constants import CLASS_NAMES
from components.contracts import schema

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
    return {
        name.strip('"'): body
        for entry in terraform["resource"]
        for typ, named in entry.items()
        if typ.strip('"') == kind
        for name, body in named.items()
    }


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
    assert not granted & {
        "roles/owner",
        "roles/editor",
        "roles/storage.admin",
        "roles/dataflow.admin",
        "roles/iam.serviceAccountAdmin",
    }
    assert "roles/storage.objectUser" in granted  # on single buckets only: see the next assertion
    assert "google_project_iam_member" in text and "roles/storage." not in "".join(
        re.findall(r'resource "google_project_iam_member"[^}]*}', text, flags=re.S)
    )


def test_external_tables_are_hive_partitioned_by_the_path_keys_of_contract_v2(terraform):
    files = resources(terraform, "google_bigquery_table")["files"]
    assert set(files["for_each"]) == {"predictions", "errors"}
    config = files["external_data_configuration"][0]
    assert config["source_format"] == '"PARQUET"'
    # The form that stays the same across applies: no schema at all (the provider refuses one in
    # the configuration for Parquet, and a top-level one beside Hive partitioning drops the keys
    # or replaces the table); the columns come from a reference Parquet file of the contract.
    assert "schema" not in files and "schema" not in config and config["autodetect"] is True
    assert "reference_schema" in config["reference_file_schema_uri"]
    references = resources(terraform, "google_storage_bucket_object")["reference_schema"]
    assert references["source"] == '"${path.module}/../bigquery/${each.key}.reference.parquet"'
    assert set(re.findall(r'"(\w+)"', references["for_each"])) == {"predictions", "errors"}
    for table in ("predictions", "errors"):
        assert os.path.isfile(os.path.join(REPO, "infra", "bigquery", f"{table}.reference.parquet"))
    assert references["name"].startswith('"_schemas/')  # outside every prefix a reader lists
    hive = config["hive_partitioning_options"][0]
    assert hive["mode"] == '"CUSTOM"'
    keys = re.findall(r"\{(\w+):(\w+)\}", hive["source_uri_prefix"])
    assert keys == [("run_date", "DATE"), ("run_id", "STRING")]
    assert tuple(name for name, _ in keys) == schema.PARTITION_KEYS


def test_runs_table_reads_one_line_summaries_and_skips_a_bad_one(terraform):
    runs = resources(terraform, "google_bigquery_table")["runs_files"]
    config = runs["external_data_configuration"][0]
    assert config["source_format"] == '"NEWLINE_DELIMITED_JSON"'
    # The generated schema of the run summary, in the configuration (JSON's documented place).
    assert config["schema"] == '${file("${path.module}/../bigquery/runs.schema.json")}' and "schema" not in runs
    assert config["source_uris"] == ['"${local.tables_uri}/runs/*.json"']
    assert config["ignore_unknown_values"] is True and config["max_bad_records"] > 0


def test_the_four_views_read_only_parts_that_complete_runs_name(terraform):
    tables = resources(terraform, "google_bigquery_table")
    views = {name: body for name, body in tables.items() if "view" in body and name != "models"}  # models: below
    assert set(views) == {"runs", "named_parts", "predictions_current"}
    assert set(views["named_parts"]["for_each"]) == {"predictions", "errors"}
    for view in views.values():
        assert view["view"][0]["use_legacy_sql"] is False
    parts = views["named_parts"]["view"][0]["query"]
    assert "_FILE_NAME AS part_file" in parts and "UNNEST(runs.parts.${each.key})" in parts
    assert "USING (run_id, part_file)" in parts
    current = views["predictions_current"]["view"][0]["query"]
    assert "ORDER BY finished_at DESC, run_id DESC" in current and "GROUP BY run_date" in current
    runs = views["runs"]["view"][0]["query"]
    for column in ("run_id", "run_date", "status", "model_version", "read", "scored", "failed", "finished_at"):
        assert re.search(rf"(SELECT|,|AS)\s+{column}\b", runs), column  # the columns of `fmnist query`'s runs
    # true_class from the same class names the scorer writes as predicted_class.
    local_values = {key: value for entry in terraform["locals"] for key, value in entry.items()}
    assert [name.strip('"') for name in local_values["class_names"]] == list(CLASS_NAMES)


def test_staging_is_scratch_and_the_tables_stay_readable_without_retrieval_fees(terraform):
    tables = resources(terraform, "google_storage_bucket")["tables"]
    rules = [(rule["condition"][0], rule["action"][0]) for rule in tables["lifecycle_rule"]]
    assert not [action for _, action in rules if action["type"] == '"SetStorageClass"']
    assert tables["autoclass"][0]["enabled"] is True
    staging = [
        condition
        for condition, action in rules
        if condition.get("matches_prefix") == ['"_staging"'] and action["type"] == '"Delete"'
    ]
    assert any(condition.get("days_since_noncurrent_time") == 1 for condition in staging)  # old versions: a day
    assert any("age" in condition for condition in staging)  # a killed attempt's leftovers


def test_vertex_ai_is_enabled_and_analysts_get_read_roles(terraform):
    assert "aiplatform.googleapis.com" in enabled_apis(terraform)
    assert resources(terraform, "google_bigquery_dataset_iam_member")["analysts"]["role"] == '"roles/bigquery.dataViewer"'
    assert resources(terraform, "google_project_iam_member")["analysts"]["role"] == '"roles/bigquery.jobUser"'
    assert "google_storage_bucket_iam_member" in {typ.strip('"') for entry in terraform["resource"] for typ in entry}
    assert set(resources(terraform, "google_storage_bucket_iam_member")) == {"grants", "analysts", "analysts_read_models"}


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
    done = subprocess.run([CHECKOV, *target, "--skip-download", "--output", "json"], cwd=REPO, capture_output=True, text=True)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert reports and all(report["summary"]["passed"] > 0 for report in reports)
    failed = [(check["check_id"], check["resource"]) for report in reports for check in report["results"]["failed_checks"]]
    assert failed == []
    unexplained = [
        (check["check_id"], check["resource"])
        for report in reports
        for check in report["results"]["skipped_checks"]
        if len(check["check_result"].get("suppress_comment", "").strip()) < 20
    ]
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


# The API each resource type needs (a new type here must be added, with its API enabled).
API_OF_TYPE = {
    "google_artifact_registry_repository": "artifactregistry.googleapis.com",
    "google_artifact_registry_repository_iam_member": "artifactregistry.googleapis.com",
    "google_bigquery_dataset": "bigquery.googleapis.com",
    "google_bigquery_dataset_iam_member": "bigquery.googleapis.com",
    "google_bigquery_table": "bigquery.googleapis.com",
    "google_compute_firewall": "compute.googleapis.com",
    "google_compute_network": "compute.googleapis.com",
    "google_compute_subnetwork": "compute.googleapis.com",
    "google_logging_metric": "logging.googleapis.com",
    "google_monitoring_alert_policy": "monitoring.googleapis.com",
    "google_project_iam_audit_config": "cloudresourcemanager.googleapis.com",
    "google_project_iam_member": "cloudresourcemanager.googleapis.com",
    "google_service_account": "iam.googleapis.com",
    "google_service_account_iam_member": "iam.googleapis.com",
    "google_storage_bucket": "storage.googleapis.com",
    "google_storage_bucket_iam_member": "storage.googleapis.com",
    "google_storage_bucket_object": "storage.googleapis.com",
}
# APIs the jobs call rather than a resource: Vertex AI Pipelines, Dataflow (workers on Compute
# Engine VMs), the tasks' and workers' logs and metrics.
JOB_APIS = {"aiplatform.googleapis.com", "dataflow.googleapis.com", "compute.googleapis.com", "logging.googleapis.com"}


def enabled_apis(terraform: dict) -> set[str]:
    apis = resources(terraform, "google_project_service")["apis"]
    assert apis["for_each"] == "${local.apis}"
    local_values = {key: value for entry in terraform["locals"] for key, value in entry.items()}
    return {name.strip('"') for name in local_values["apis"] if name != "__is_block__"}


def all_resources(terraform: dict) -> list[tuple[str, str, dict]]:
    return [
        (kind.strip('"'), name.strip('"'), body)
        for entry in terraform["resource"]
        for kind, named in entry.items()
        for name, body in named.items()
    ]


def declared_outputs() -> set[str]:
    """The outputs infra/terraform declares (the deployment file's keys)."""
    blocks: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(TERRAFORM, "*.tf"))):
        with open(path) as file:
            for kind, entries in hcl2.load(file).items():
                blocks.setdefault(kind, []).extend(entries)
    return {name.strip('"') for entry in blocks["output"] for name in entry}


def test_every_resource_waits_for_the_api_it_needs_and_every_api_used_is_enabled(terraform):
    apis = enabled_apis(terraform)
    assert {"cloudresourcemanager.googleapis.com", "compute.googleapis.com"} <= apis
    for kind, name, body in all_resources(terraform):
        if kind == "google_project_service":
            continue
        assert kind in API_OF_TYPE, f"{kind}: which API does it need? (API_OF_TYPE)"
        assert API_OF_TYPE[kind] in apis, f"{kind}.{name}: {API_OF_TYPE[kind]} is not enabled"
        assert "${google_project_service.apis}" in body.get("depends_on", []), f"{kind}.{name} does not wait for its API"
    assert JOB_APIS <= apis


def terraform_text() -> str:
    return "".join(open(path).read() for path in sorted(glob.glob(os.path.join(TERRAFORM, "*.tf"))))


def test_every_variable_local_and_resource_referenced_is_declared(terraform):
    text = re.sub(r"#[^\n]*", "", terraform_text())  # comments may name anything
    variables = {name.strip('"') for entry in terraform["variable"] for name in entry}
    local_names = {key for entry in terraform["locals"] for key in entry if key != "__is_block__"}
    declared = {(kind, name) for kind, name, _ in all_resources(terraform)}
    assert set(re.findall(r"\bvar\.(\w+)", text)) <= variables
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= local_names
    referenced = set(re.findall(r"\b(google_[a-z_]+)\.([a-z_]+)\b", text))
    assert referenced <= declared, sorted(referenced - declared)
    # Every variable is used somewhere (a leftover one would be a setting that does nothing).
    assert variables <= set(re.findall(r"\bvar\.(\w+)", text))


def test_every_output_the_pipelines_read_is_declared():
    from components.cloud.deployment import OUTPUTS

    assert set(OUTPUTS) <= declared_outputs()


def test_workload_identity_and_audit_logs_only_when_a_variable_asks(terraform):
    binding = resources(terraform, "google_service_account_iam_member")["kfp_workload_identity"]
    assert binding["count"] == "${var.kfp_on_gke ? 1 : 0}"
    audit = resources(terraform, "google_project_iam_audit_config")["storage"]
    assert audit["count"] == "${var.storage_data_access_logs ? 1 : 0}" and audit["service"] == '"storage.googleapis.com"'
    variables = {name.strip('"'): body for entry in terraform["variable"] for name, body in entry.items()}
    assert variables["kfp_on_gke"]["default"] is False and variables["storage_data_access_logs"]["default"] is False
    # No authoritative project IAM resource that would overwrite grants or audit configs made elsewhere.
    kinds = {kind for kind, _, _ in all_resources(terraform)}
    assert not kinds & {"google_project_iam_policy", "google_project_iam_binding"}


def test_dataflow_workers_get_a_subnetwork_with_private_google_access_or_public_ips(terraform):
    subnetwork = resources(terraform, "google_compute_subnetwork")["dataflow"]
    assert subnetwork["private_ip_google_access"] is True
    assert subnetwork["count"] == resources(terraform, "google_compute_network")["dataflow"]["count"]
    firewall = resources(terraform, "google_compute_firewall")["dataflow_workers"]
    assert firewall["allow"][0]["ports"] == ['"12345-12346"'] and firewall["source_tags"] == ['"dataflow"']
    outputs = {name.strip('"'): body for entry in terraform["output"] for name, body in entry.items()}
    # Private workers only on the subnetwork made here, or on one the variable says has the access.
    assert outputs["dataflow_public_ips"]["value"] == (
        "${local.create_dataflow_network ? false : !var.dataflow_subnetwork_has_private_google_access}"
    )
    assert "google_compute_subnetwork.dataflow[0].self_link" in outputs["dataflow_subnetwork"]["value"]


def test_the_runs_view_reads_only_fields_of_the_generated_summary_schema(terraform):
    with open(os.path.join(REPO, "infra", "bigquery", "runs.schema.json")) as file:
        fields = json.load(file)
    names = {field["name"] for field in fields} | {
        f"{field['name']}.{child['name']}" for field in fields for child in field.get("fields", [])
    }
    query = resources(terraform, "google_bigquery_table")["runs"]["view"][0]["query"]
    read = set(re.findall(r"\b(counts\.\w+|timings\.\w+|failure\.\w+)", query))
    read |= {name for name in ("run_id", "run_date", "status", "model_version", "error_rate", "parts") if name in query}
    assert read and read <= names, sorted(read - names)


BUILD = os.path.join(REPO, "infra", "container", "build.sh")


def build_dry_run(*args: str, build_time: str = "20261204T150102Z") -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("IMAGE", "PIP_CERT")}
    env["BUILD_TIME"] = build_time
    return subprocess.run([BUILD, *args, "--dry-run"], cwd=REPO, capture_output=True, text=True, env=env)


def test_release_build_makes_both_images_tagged_with_the_build_pushes_them_and_prints_digests():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as file:
        version = tomllib.load(file)["project"]["version"]
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    registry = "europe-west4-docker.pkg.dev/acme-ml/fmnist"
    done = build_dry_run("--release", "--registry", registry + "/")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    (tag,) = {line.rsplit(":", 1)[1].split()[0] for line in lines if " bud " in line}
    # version, commit (dirty when the work tree differs), build time: one tag per build.
    assert re.fullmatch(rf"{re.escape(version)}-{commit}(-dirty)?-20261204T150102Z", tag), tag
    builds = [line for line in lines if " bud " in line]
    assert [line.split(" -f ")[0].endswith("--target dataflow-worker") for line in builds] == [False, True]
    assert [line.split(" -t ")[1] for line in builds] == [f"{registry}/jobs:{tag} .", f"{registry}/worker:{tag} ."]
    pushes = [line.split()[-2:] for line in lines if " push " in line]
    assert pushes == [[f"{registry}/{name}:{tag}", f"docker://{registry}/{name}:{tag}"] for name in ("jobs", "worker")]
    assert [line.split("@")[0] for line in lines if "=" in line and "@sha256:" in line] == [
        f"image={registry}/jobs",
        f"worker_image={registry}/worker",
    ]
    # A second release of the same version and commit gets its own tag: the repository's tags
    # are immutable, so reusing one would fail the push.
    again = build_dry_run("--release", "--registry", registry, build_time="20261204T160000Z")
    assert again.returncode == 0 and f":{tag} " not in again.stdout and "-20261204T160000Z" in again.stdout
    # The Dockerfile has the stage the worker build names.
    with open(os.path.join(REPO, "Dockerfile")) as file:
        assert re.search(r"^FROM \S+ AS dataflow-worker$", file.read(), flags=re.M)


def test_default_build_is_the_ci_image_only_and_bad_arguments_are_one_line():
    done = subprocess.run(
        [BUILD, "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGE": "localhost/fmnist-jobs:ci", "PIP_CERT": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "buildah --storage-driver vfs bud --isolation chroot --layers -f Dockerfile -t localhost/fmnist-jobs:ci ."
    ]
    for args, message in (
        (["--registry", "r"], "--registry needs --release"),
        (["--push"], "unknown argument --push"),
        (["--release", "--registry"], "--registry needs a value"),
    ):
        refused = build_dry_run(*args)
        assert refused.returncode == 2 and refused.stdout == "" and message in refused.stderr
        assert refused.stderr.count("\n") == 1


def test_build_script_passes_shellcheck():
    import shutil

    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: `make tools` installs it", pytrace=False)
    done = subprocess.run(["shellcheck", BUILD], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def rendered_views(terraform: dict) -> dict[str, str]:
    """Each view's SQL with terraform's interpolations filled in for project `p` (view name -> SQL)."""
    tables = resources(terraform, "google_bigquery_table")
    local_values = {key: value for entry in terraform["locals"] for key, value in entry.items()}
    class_names = ", ".join(f"'{name.strip(chr(34))}'" for name in local_values["class_names"])
    true_class = f"[{class_names}][SAFE_OFFSET(true_label)]"
    views = {}
    for name, body in tables.items():
        if "view" not in body:
            continue
        for key in body.get("for_each", {}) or [name]:
            sql = re.fullmatch(r'"?<<-SQL\n(.*)\n\s*SQL"?', body["view"][0]["query"], flags=re.S).group(1)
            sql = sql.replace(
                '${each.key == "predictions" ? ", ${local.true_class} AS true_class" : ""}',
                ", " + true_class + " AS true_class" if key == "predictions" else "",
            )
            sql = re.sub(
                r"\$\{google_bigquery_table\.(\w+)(?:\[[^\]]*\])?\.table_id\}",
                lambda match, key=key: {"files": f"{key}_files", "named_parts": "predictions"}.get(
                    match.group(1), tables[match.group(1)]["table_id"].strip('"')
                ),
                sql,
            )
            views[key] = sql.replace("${local.dataset}", "p.fmnist").replace("${each.key}", key)
    return views


def test_the_models_view_has_the_columns_of_model_list(terraform):
    from components.contracts.model_versions import ModelVersionRow

    tables = resources(terraform, "google_bigquery_table")
    schema_names = re.findall(r'name\s*=\s*"(\w+)"', tables["model_versions_files"]["schema"])
    assert tables["model_versions_files"]["external_data_configuration"][0]["source_uris"] == [
        '"${local.models_uri}/*/version.json"'
    ]
    columns = [field.name for field in dataclasses.fields(ModelVersionRow)]
    assert schema_names == [name for name in columns if name != "is_latest"]
    import sqlglot

    select = sqlglot.parse_one(rendered_views(terraform)["models"], read="bigquery").find(sqlglot.exp.Select)
    assert [expression.alias_or_name for expression in select.expressions] == columns


def test_the_views_are_bigquery_sql(terraform):
    import sqlglot

    views = rendered_views(terraform)
    assert set(views) == {"predictions", "errors", "predictions_current", "runs", "models"}
    for name, sql in views.items():
        assert "${" not in sql, name
        parsed = sqlglot.parse_one(sql, read="bigquery")  # raises on a syntax error
        assert parsed.find(sqlglot.exp.Select), name
    assert "AS true_class" in views["predictions"] and "true_class" not in views["errors"]
    assert "`p.fmnist.predictions_files`" in views["predictions"] and "`p.fmnist.runs`" in views["errors"]
    assert "`p.fmnist.model_versions_files`" in views["models"] and "`p.fmnist.model_latest_files`" in views["models"]


def test_a_failed_pipeline_job_alerts_the_notification_channels(terraform):
    metric = resources(terraform, "google_logging_metric")["failed_pipeline_jobs"]
    local_values = {key: value for entry in terraform["locals"] for key, value in entry.items()}
    assert metric["filter"] == "${local.failed_pipeline_jobs_filter}"
    filter_text = local_values["failed_pipeline_jobs_filter"]  # the HCL expression, as text
    assert "aiplatform.googleapis.com/PipelineJob" in filter_text and "PIPELINE_STATE_FAILED" in filter_text
    assert "record-failure" in filter_text  # the exit handlers' own ERROR line (pipelines.py's exit tasks)
    policy = resources(terraform, "google_monitoring_alert_policy")["failed_pipeline_job"]
    assert policy["notification_channels"] == "${var.notification_channels}"
    condition = policy["conditions"][0]["condition_threshold"][0]
    assert "google_logging_metric.failed_pipeline_jobs.name" in condition["filter"]
    assert condition["comparison"].strip('"') == "COMPARISON_GT" and condition["threshold_value"] == 0
