"""Vertex AI Model Registry as a target: a model version's SavedModel as a version of one registry Model.

    fmnist model register --target vertex --model-root gs://bucket/models --project p --region europe-west4
    fmnist model register --target vertex --model-root gs://bucket/models 20261129T043000Z-1a2b3c4d --dry-run

Each registered version is a version of one Vertex `Model` (`--vertex-model`, created by the
first registration): its artifact is the version's `saved_model/` folder, served by the
TensorFlow prebuilt prediction container of the TensorFlow version that trained it (or
`--serving-image`), labelled with the version's name and hash. The version LATEST names gets
the aliases `champion` and `default` (Vertex moves an alias to the version that last took it),
so Vertex's default version follows LATEST when each published version is registered. Only a
version that passed its gates and whose model file matches its hash is registered.

The request goes through the aiplatform GAPIC client (google-cloud-aiplatform's
`ModelServiceClient.upload_model`); a dry run prints that same request and sends nothing.
"""

from __future__ import annotations

import dataclasses
import re

from components.contracts import registry
from components.contracts.parameters import parameter
from components.errors import InputError
from components.io import storage

TARGETS = ("vertex",)
CHAMPION_ALIASES = ("champion", "default")  # "default" is Vertex's own: the version a bare model name serves
UPLOAD_TIMEOUT_S = 1800.0
# Vertex labels: lowercase letters, digits, '_' and '-', at most 63 characters.
_LABEL_VALUE = re.compile(r"[^a-z0-9_-]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegisterParameters:
    """`fmnist model register`: upload a model version to Vertex AI Model Registry."""

    target: str = parameter(help="where to register the model", choices=TARGETS)
    model_root: str = parameter(help="folder or gs:// prefix of the model registry (version folders + LATEST)", location=True)
    version: str | None = parameter(None, help="the version to register (default: the one LATEST names)", positional=True)
    project: str = parameter(help="Google Cloud project of the Vertex AI Model Registry")
    region: str = parameter(help="Vertex AI region, e.g. europe-west4")
    vertex_model: str = parameter("fmnist-classifier", help="ID of the registry Model whose version this becomes")
    serving_image: str | None = parameter(
        None, help="prediction container (default: Vertex's prebuilt TensorFlow CPU image of the training's TensorFlow version)"
    )
    dry_run: bool = parameter(False, help="print the uploadModel request instead of sending it")


def prediction_image(tensorflow_version: str, region: str) -> str:
    """Vertex's prebuilt TensorFlow CPU prediction container for a TF version (2.21.0 -> tf2-cpu.2-21)
    in the artifact registry nearest the region (us, europe or asia)."""
    match = re.match(r"^2\.(\d+)", tensorflow_version)
    if not match:
        raise InputError(f"TensorFlow {tensorflow_version!r}: no prebuilt prediction container; give --serving-image")
    geography = {"europe": "europe", "asia": "asia", "australia": "asia", "me": "asia"}.get(region.split("-")[0], "us")
    return f"{geography}-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-{match.group(1)}:latest"


def label_value(text: str) -> str:
    return _LABEL_VALUE.sub("_", text.lower())[:63]


def register_model(
    *,
    target: str,
    model_root: str,
    version: str | None = RegisterParameters.version,
    project: str,
    region: str,
    vertex_model: str = RegisterParameters.vertex_model,
    serving_image: str | None = RegisterParameters.serving_image,
    dry_run: bool = RegisterParameters.dry_run,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials=None,
) -> dict:
    """Uploads the version's SavedModel as a new version of the registry Model (or prints the request)."""
    if target not in TARGETS:
        raise InputError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    latest = registry.latest_version(model_root)
    version = version or latest
    if version is None:
        raise InputError(f"{model_root}: nothing published; name the version to register")
    version_uri = storage.child(model_root, version)
    registry.resolve(version_uri)  # gates passed, model.keras is the file metrics.json evaluated
    metrics = registry.read_metrics(version_uri)
    artifact_uri = storage.join(version_uri, registry.SAVED_MODEL_DIR)
    if not dry_run and not artifact_uri.startswith(storage.GCS_SCHEME):
        raise InputError(f"{artifact_uri}: Vertex AI reads models from gs:// only; register a model root in Cloud Storage")
    tensorflow = (metrics.versions or {}).get("tensorflow", "")
    request = upload_request(
        project=project,
        region=region,
        vertex_model=vertex_model,
        version=version,
        artifact_uri=artifact_uri,
        image=serving_image or prediction_image(tensorflow, region),
        aliases=list(CHAMPION_ALIASES) if version == latest else [],
        description=f"test accuracy {metrics.test_accuracy}, ECE {metrics.test_ece}, TensorFlow {tensorflow or '?'}",
        labels={
            "fmnist_model_version": label_value(version),
            "fmnist_version_hash": label_value(version.rsplit("-", 1)[-1]),
            "fmnist_model_sha256": label_value((metrics.model_sha256 or "")[:32]),
        },
    )
    endpoint = api_endpoint or f"{region}-aiplatform.googleapis.com"
    if dry_run:
        from google.protobuf import json_format

        # As the REST transport sends it; a first registration names modelId instead of parentModel.
        body = json_format.MessageToDict(type(request).pb(request))
        base = endpoint if "://" in endpoint else f"https://{endpoint}"
        return {"dry_run": True, "method": "POST", "url": f"{base}/v1/{request.parent}/models:upload", "request": body}
    return _upload(request, endpoint=endpoint, api_transport=api_transport, credentials=credentials)


def upload_request(
    *,
    project: str,
    region: str,
    vertex_model: str,
    version: str,
    artifact_uri: str,
    image: str,
    aliases: list[str],
    description: str,
    labels: dict[str, str],
):  # -> aiplatform_v1.UploadModelRequest
    """The uploadModel request of a new version of `vertex_model` (parentModel set)."""
    from google.cloud.aiplatform_v1 import types

    parent = f"projects/{project}/locations/{region}"
    model = types.Model(
        display_name=vertex_model,
        artifact_uri=artifact_uri,
        container_spec=types.ModelContainerSpec(image_uri=image),
        version_aliases=aliases,
        version_description=f"{version}: {description}",
        labels=labels,
    )
    return types.UploadModelRequest(parent=parent, parent_model=f"{parent}/models/{vertex_model}", model=model)


def _upload(request, *, endpoint: str, api_transport: str | None, credentials) -> dict:
    from google.api_core.exceptions import NotFound
    from google.cloud.aiplatform_v1 import ModelServiceClient

    client = ModelServiceClient(
        credentials=credentials, transport=api_transport or "grpc", client_options={"api_endpoint": endpoint}
    )
    try:
        client.get_model(name=request.parent_model)
    except NotFound:  # the first registration creates the Model under its ID
        request.model_id, request.parent_model = request.parent_model.rsplit("/", 1)[-1], ""
    response = client.upload_model(request=request).result(timeout=UPLOAD_TIMEOUT_S)
    return {
        "vertex_model": response.model,
        "model_version_id": response.model_version_id,
        "artifact_uri": request.model.artifact_uri,
        "aliases": list(request.model.version_aliases),
    }
