"""Kubeflow Pipelines (v2) definitions: the training and the scoring pipeline, on the one image.

    fmnist pipeline compile                  # -> infra/kfp/training.yaml, infra/kfp/scoring.yaml

Every step task runs the image with the same `fmnist <step> ...` command line as the
container smoke test (tests/test_container.py builds both from the `*_command` functions
below), wrapped by `python -m jobs.kfp_outputs`, which runs that command and then turns its
published outputs (manifest, metrics.json, run summary) into typed KFP artifacts.

Caching is keyed on content, not tags: every task takes the image reference pinned by
digest (`...@sha256:...`, refused otherwise) as an input, because KFP's cache key holds only
the unresolved image placeholder; prepare's output carries the data set's manifest digest,
which train takes as an input. Tuning flags are optional inputs: when a run leaves one unset,
the flag is left off and the step's own default applies (as with the CLI).
"""

import copy
import os
from collections.abc import Sequence
from typing import Optional  # KFP reads component signatures and does not parse `X | None`

from kfp import compiler, dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.errors import InputError
from components.schedules import PUBLIC_IPS_FLAGS

# Stands in for the image until each task's `set_container_image(image)` names the pinned one.
IMAGE_INPUT_DEFAULT = "fmnist-jobs"
# Where KFP and Vertex AI Pipelines keep the tasks' artifacts unless a run names another root:
# terraform's `pipeline_root` output for the project the schedules name (fmnist-prod).
DEFAULT_PIPELINE_ROOT = "gs://fmnist-prod-pipelines/root"
ADAPTER = ("python", "-m", "jobs.kfp_outputs", "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER)


def flag(name: str) -> str:
    """The CLI flag of a keyword (`batch_size` -> `--batch-size`)."""
    return "--" + name.replace("_", "-")


def optional_flags(values: dict) -> list:
    """`--name value` pairs of the set keywords (plain values: the smoke test's command line)."""
    return [item for name, value in values.items() if value is not None for item in (flag(name), str(value))]


def if_present_flags(inputs: dict) -> list:
    """`--name value` pairs that KFP drops at run time when the optional input was not given."""
    return [dsl.IfPresentPlaceholder(input_name=name, then=[flag(name), value]) for name, value in inputs.items()]


def if_present_beam_options(inputs: dict) -> list:
    """`--name value` pairs of Beam options (Beam spells them with underscores), when given at run time."""
    return [dsl.IfPresentPlaceholder(input_name=name, then=[f"--{name}", value]) for name, value in inputs.items()]


def prepare_command(*, output, flags: Sequence = ()) -> list:
    """`fmnist prepare`: the raw data set (default: the image's embedded copy) -> shards + manifest."""
    return ["fmnist", "prepare", "--output", output, "--overwrite", *flags]


def train_command(*, data, model_root, flags: Sequence = ()) -> list:
    """`fmnist train`: shards -> a gated model version, published under `model_root` when it passes."""
    return ["fmnist", "train", "--data", data, "--model-root", model_root, *flags]


def score_command(*, shards, model, output, run_id, run_date, gcp_resources, flags: Sequence = ()) -> list:
    """`fmnist score`: shards (a glob) -> prediction and error tables of one run, the launched job in
    `gcp_resources`; `flags` may add Beam options."""
    return [
        "fmnist",
        "score",
        "--input",
        shards,
        "--model",
        model,
        "--output",
        output,
        "--run-id",
        run_id,
        "--run-date",
        run_date,
        "--gcp-resources",
        gcp_resources,
        *flags,
    ]


def dataflow_flags(
    *, runner, project, region, temp_location, worker_image, service_account, public_ips_flag=PUBLIC_IPS_FLAGS[0]
) -> list:
    """Beam's standard options for a Dataflow run of `fmnist score` (the DirectRunner ignores them)."""
    return [
        "--runner",
        runner,
        "--project",
        project,
        "--region",
        region,
        "--temp_location",
        temp_location,
        "--sdk_container_image",
        worker_image,
        "--service_account_email",
        service_account,
        public_ips_flag,
    ]


@dsl.container_component
def prepare(
    image: str,
    dataset: Output[Dataset],
    manifest_digest: dsl.OutputPath(str),
    source: Optional[str] = None,
    shards_per_split: Optional[int] = None,
):
    """Raw IDX files -> validated image shards (the Dataset artifact) and their manifest digest."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "prepare", "--image", image, "--"],
        args=prepare_command(
            output=dataset.path, flags=if_present_flags({"source": source, "shards_per_split": shards_per_split})
        ),
    )


@dsl.container_component
def train(
    image: str,
    dataset: Input[Dataset],
    manifest_digest: str,
    model_root: str,
    model: Output[Model],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    model_card: Output[Markdown],
    architecture: Optional[str] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    seed: Optional[int] = None,
    min_accuracy: Optional[float] = None,
):
    """Fits and evaluates a model; only one that passes the gate is published under model_root."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "train", "--image", image, "--model-root", model_root, "--manifest-digest", manifest_digest, "--"],
        args=train_command(
            data=dataset.path,
            model_root=model_root,
            flags=[
                dsl.IfPresentPlaceholder(input_name="architecture", then=["--model", architecture]),
                *if_present_flags(
                    {
                        "epochs": epochs,
                        "batch_size": batch_size,
                        "learning_rate": learning_rate,
                        "seed": seed,
                        "min_accuracy": min_accuracy,
                    }
                ),
            ],
        ),
    )


@dsl.container_component
def run_context(
    image: str,
    scheduled_time: str,
    run_date: str,
    date_offset_days: int,
    time_zone: str,
    shards_template: str,
    run_id_template: str,
    date: dsl.OutputPath(str),
    shards: dsl.OutputPath(str),
    run_id: dsl.OutputPath(str),
):
    """The run's logical date (explicit run_date, else the scheduled time's date) and the names made from it."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "run-context", "--image", image],
        args=[
            "--scheduled-time",
            scheduled_time,
            "--run-date",
            run_date,
            "--date-offset-days",
            date_offset_days,
            "--time-zone",
            time_zone,
            "--shards-template",
            shards_template,
            "--run-id-template",
            run_id_template,
        ],
    )


@dsl.container_component
def score(
    image: str,
    shards: str,
    model_root: str,
    output: str,
    run_id: str,
    run_date: str,
    runner: str,
    project: str,
    region: str,
    temp_location: str,
    worker_image: str,
    service_account: str,
    public_ips_flag: str,
    predictions: Output[Dataset],
    summary: Output[Metrics],
    gcp_resources: dsl.OutputPath(str),
    max_error_rate: Optional[float] = None,
    network: Optional[str] = None,
    subnetwork: Optional[str] = None,
    max_num_workers: Optional[int] = None,
    machine_type: Optional[str] = None,
    labels: Optional[dict] = None,
    job_name: Optional[str] = None,
):
    """Scores one date's shards with the published model into the partitioned tables (on Dataflow,
    whose job `gcp_resources` names: the UI links it and cancelling the run cancels it)."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "score", "--image", image, "--output", output, "--run-id", run_id, "--run-date", run_date, "--"],
        args=score_command(
            shards=shards,
            model=model_root,
            output=output,
            run_id=run_id,
            run_date=run_date,
            gcp_resources=gcp_resources,
            flags=[
                *if_present_flags({"max_error_rate": max_error_rate}),
                *dataflow_flags(
                    runner=runner,
                    project=project,
                    region=region,
                    temp_location=temp_location,
                    worker_image=worker_image,
                    service_account=service_account,
                    public_ips_flag=public_ips_flag,
                ),
                *if_present_beam_options(
                    {
                        "network": network,
                        "subnetwork": subnetwork,
                        "max_num_workers": max_num_workers,
                        "machine_type": machine_type,
                        "labels": labels,
                        "job_name": job_name,
                    }
                ),
            ],
        ),
    )


def on_image(task: dsl.PipelineTask, image, *, cpu: str, memory: str) -> dsl.PipelineTask:
    """Runs the task on the pipeline's pinned image (a run parameter, not a compile-time tag), with
    `cpu`/`memory` both requested and as the limit: a batch step gets what it was sized for, and
    Vertex AI Pipelines picks the machine from the limits."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    return task.set_container_image(image)


@dsl.pipeline(name="fmnist-training", description="prepare -> train, evaluate, gate, publish: on one image pinned by digest")
def training_pipeline(
    image: str,
    model_root: str,
    source: Optional[str] = None,
    shards_per_split: Optional[int] = None,
    architecture: Optional[str] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    seed: Optional[int] = None,
    min_accuracy: Optional[float] = None,
):
    """Shards from the raw data set, then a model version that scoring uses once it passes the gate."""
    # prepare encodes PNGs on every core; train holds the 60,000 training images in memory.
    prepared = on_image(prepare(image=image, source=source, shards_per_split=shards_per_split), image, cpu="4", memory="8G")
    trained = on_image(
        train(
            image=image,
            dataset=prepared.outputs["dataset"],
            manifest_digest=prepared.outputs["manifest_digest"],
            model_root=model_root,
            architecture=architecture,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            min_accuracy=min_accuracy,
        ),
        image,
        cpu="4",
        memory="8G",
    )
    trained.set_display_name("train-gate-publish")


@dsl.pipeline(name="fmnist-scoring", description="score one date's shards with the published model, on Dataflow")
def scoring_pipeline(
    image: str,
    worker_image: str,
    shards_template: str,
    model_root: str,
    output: str,
    project: str,
    region: str,
    temp_location: str,
    service_account: str,
    runner: str = "DataflowRunner",
    public_ips_flag: str = PUBLIC_IPS_FLAGS[0],
    network: Optional[str] = None,
    subnetwork: Optional[str] = None,
    max_num_workers: Optional[int] = None,
    machine_type: Optional[str] = None,
    labels: Optional[dict] = None,
    job_name: Optional[str] = None,
    run_date: str = "",
    date_offset_days: int = 0,
    time_zone: str = "UTC",
    run_id_template: str = "scheduled-{date}",
    max_error_rate: Optional[float] = None,
):
    """The logical date comes from the schedule (or run_date, for a backfill) and names the partition."""
    context = on_image(
        run_context(
            image=image,
            scheduled_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
            run_date=run_date,
            date_offset_days=date_offset_days,
            time_zone=time_zone,
            shards_template=shards_template,
            run_id_template=run_id_template,
        ),
        image,
        cpu="500m",
        memory="512M",
    )
    # Its input is a placeholder KFP resolves per run: a cache hit could reuse another day's date.
    context.set_caching_options(False)
    scored = on_image(
        score(
            image=image,
            shards=context.outputs["shards"],
            model_root=model_root,
            output=output,
            run_id=context.outputs["run_id"],
            run_date=context.outputs["date"],
            runner=runner,
            project=project,
            region=region,
            temp_location=temp_location,
            worker_image=worker_image,
            service_account=service_account,
            public_ips_flag=public_ips_flag,
            max_error_rate=max_error_rate,
            network=network,
            subnetwork=subnetwork,
            max_num_workers=max_num_workers,
            machine_type=machine_type,
            labels=labels,
            job_name=job_name,
        ),
        # Launches and watches the Dataflow job; the DirectRunner (a small backfill) scores in the task.
        image,
        cpu="2",
        memory="4G",
    )
    # The tables live outside KFP and a rerun of a date must rewrite its partition: never cached.
    scored.set_caching_options(False)


PIPELINES = {"training": training_pipeline, "scoring": scoring_pipeline}


def compile_pipelines(output: str, pipeline_root: str = DEFAULT_PIPELINE_ROOT) -> dict[str, str]:
    """Writes every pipeline's spec as `<output>/<name>.yaml`, declaring `pipeline_root` as its
    defaultPipelineRoot; returns name -> path."""
    if not pipeline_root.startswith("gs://"):
        raise InputError(f"--pipeline-root {pipeline_root}: a gs:// location (Vertex AI and KFP on GKE read it)")
    os.makedirs(output, exist_ok=True)
    paths = {name: os.path.join(output, f"{name}.yaml") for name in PIPELINES}
    for name, pipeline in PIPELINES.items():
        rooted = copy.deepcopy(pipeline)  # the module's pipelines stay as declared
        rooted.pipeline_spec.default_pipeline_root = pipeline_root
        compiler.Compiler().compile(rooted, package_path=paths[name])
    return paths
