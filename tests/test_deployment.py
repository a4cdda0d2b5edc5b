"""The deployment file (`terraform output -json` of infra/terraform): read, checked, and the only source of names."""

import json
import os

import pytest

from components.cloud.deployment import OUTPUTS, PUBLIC_IPS_FLAGS, load_deployment
from components.errors import InputError
from tests.cli_runs import EXAMPLE_DEPLOYMENT, run_cli
from tests.kfp_spec import REPO

EXAMPLE = os.path.join(REPO, EXAMPLE_DEPLOYMENT)


def example_outputs() -> dict:
    with open(EXAMPLE) as file:
        return json.load(file)


def test_the_example_has_terraforms_shape_and_names_one_made_up_project():
    outputs = example_outputs()
    for name, output in outputs.items():
        assert set(output) == {"sensitive", "type", "value"} and output["sensitive"] is False, name
    deployment = load_deployment(EXAMPLE)
    assert deployment.project == "acme-ml" and deployment.region == "europe-west4"
    assert set(deployment.buckets.values()) == {f"acme-ml-{purpose}" for purpose in ("data", "models", "tables", "pipelines")}
    assert deployment.pipeline_root.startswith("gs://acme-ml-pipelines/")
    assert deployment.image_repository == "europe-west4-docker.pkg.dev/acme-ml/fmnist"
    parameters = deployment.pipeline_parameters()
    assert parameters["service_account"] == deployment.dataflow_worker != deployment.pipeline_runner
    # Private worker addresses only because the deployment's subnetwork has Private Google Access.
    assert deployment.dataflow_public_ips is False and parameters["public_ips_flag"] == PUBLIC_IPS_FLAGS[0]
    assert "fmnist-prod" not in json.dumps(outputs)


def test_public_ips_follow_the_deployment(tmp_path):
    outputs = example_outputs()
    outputs["dataflow_public_ips"]["value"] = True
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(outputs))
    assert load_deployment(str(path)).pipeline_parameters()["public_ips_flag"] == "--use_public_ips"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda outputs: outputs.pop("pipeline_root"), "outputs ['pipeline_root'] missing"),
        (lambda outputs: outputs["region"].update(value=["europe-west4"]), "output region is not a str"),
        (lambda outputs: outputs["buckets"]["value"].pop("tables"), "lack ['tables']"),
        (lambda outputs: outputs["model_root"].update(value="gs://fmnist-prod-models/models"), "bucket fmnist-prod-models"),
        (lambda outputs: outputs["incoming_shards_template"].update(value="gs://acme-ml-data/incoming/*"), "no {date}"),
    ],
)
def test_a_deployment_file_that_is_not_terraforms_outputs_is_refused_in_one_line(tmp_path, change, message):
    outputs = example_outputs()
    change(outputs)
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(outputs))
    with pytest.raises(InputError, match="^--deployment .*" + message.replace("[", r"\[").replace("]", r"\]")) as error:
        load_deployment(str(path))
    assert "\n" not in str(error.value)


def test_an_unreadable_deployment_is_exit_2_in_one_line(tmp_path):
    (tmp_path / "plan.txt").write_text("Apply complete!")
    for path in (tmp_path / "plan.txt", tmp_path / "absent.json"):
        done = run_cli("pipeline", "compile", "--output", str(tmp_path / "out"), "--deployment", str(path))
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and f"--deployment {path}" in done.stderr


def test_names_of_the_deployments_project_pass_and_others_do_not():
    deployment = load_deployment(EXAMPLE)
    deployment.check_names("output", "gs://acme-ml-tables")
    deployment.check_names("image", "europe-west4-docker.pkg.dev/acme-ml/fmnist/jobs@sha256:" + "a" * 64)
    deployment.check_names("image", "ghcr.io/acme/fmnist-jobs@sha256:" + "a" * 64)  # no Google Cloud project named
    for what, value in (
        ("output", "gs://acme-ml-tables-old"),
        ("image", "gcr.io/other-project/jobs@sha256:" + "a" * 64),
        ("service_account", "runner@other-project.iam.gserviceaccount.com"),
        ("labels", {"note": "gs://other-bucket/x"}),
    ):
        with pytest.raises(InputError, match=f"^{what}="):
            deployment.check_names(what, value)


def test_every_output_a_deployment_needs_is_what_terraform_declares():
    from tests.test_infra import declared_outputs

    assert set(OUTPUTS) <= declared_outputs()
    assert set(example_outputs()) == declared_outputs()  # the example is a whole `terraform output -json`
