"""Kubeflow Pipelines (v2) definitions: the training and the scoring pipeline, on the one image.

    fmnist pipeline compile                  # -> infra/kfp/training.yaml, infra/kfp/scoring.yaml (no project named)
    fmnist pipeline compile --deployment deployment.json --output build/kfp   # with its pipeline root

Every step task runs the image with the same `fmnist <step> ...` command line as the
container smoke test (tests/test_container.py builds both from the `*_command` functions
below), wrapped by `python -m jobs.kfp_outputs`, which runs that command and then turns its
JSON result (and the manifest, metrics.json, run summary it names) into typed KFP artifacts.

Every task takes the image reference pinned by digest (`...@sha256:...`, refused otherwise) as
an input: the tasks and the Dataflow workers run exactly the code that was released. Caching is
off for every task: a cached task hands on artifacts in the pipeline root, which the pipelines
bucket's lifecycle rule deletes after its retention period (infra/terraform/storage.tf), and
neither KFP's nor Vertex AI's cache key can tell that they are gone; a hit would point the next
task at nothing. What lasts (models, tables) is published outside the root by the steps
themselves; prepare and train are minutes of CPU, so a rerun costs less than a broken run.
prepare's output carries the data set's manifest digest, which train takes as an input
(lineage in the model card). Tuning inputs are generated from the steps' parameter
dataclasses (the fields marked `tuning`, components.contracts.parameters): each is an optional input of
its task and pipeline, and when a run leaves one unset the flag is left off and the step's own
default applies (as with the CLI).
"""

import copy
import functools
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Optional  # KFP reads component signatures and does not parse `X | None`

from kfp import compiler, dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.cloud.deployment import PUBLIC_IPS_FLAGS, load_deployment
from components.cloud.run_context import RunContextParameters
from components.contracts.parameters import Parameter, flag_of, parameters_of, tuning_parameters
from components.errors import InputError
from components.prepare.dataset import PrepareParameters
from components.score.parameters import ScoreParameters
from components.train.training import TrainParameters

# Stands in for the image until each task's `set_container_image(image)` names the pinned one.
IMAGE_INPUT_DEFAULT = "fmnist-jobs"
ADAPTER = ("python", "-m", "jobs.kfp_outputs", "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER)
# Filled by the schedule (dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER), never a run parameter.
SCHEDULED_TIME = "scheduled_time"
# Every task logs one JSON object per line (jobs/entrypoint.py): Cloud Logging files each line at
# its own severity, with the run's labels.
TASK_ENVIRONMENT = {"FMNIST_LOG_FORMAT": "json"}
# The Dataflow settings every scoring run gives, as Beam's standard options (dataflow_flags):
# name -> the scoring pipeline's default (None: the run must give it). Inputs of the pipeline and,
# all required, of its score task.
DATAFLOW_SETTINGS = {
    "runner": "DataflowRunner",
    "project": None,
    "region": None,
    "temp_location": None,
    "worker_image": None,
    "service_account": None,
    "public_ips_flag": PUBLIC_IPS_FLAGS[0],
}
# Beam's own options a scoring run may set for its Dataflow job (name -> type): optional inputs of
# the scoring pipeline and its score task, passed on to Beam only when a run gives them.
BEAM_OPTIONS = {"network": str, "subnetwork": str, "max_num_workers": int, "machine_type": str, "labels": dict, "job_name": str}


def optional_flags(values: dict) -> list:
    """`--name value` pairs of the set keywords (plain values: the smoke test's command line)."""
    return [item for name, value in values.items() if value is not None for item in (flag_of(name), str(value))]


def if_present_flags(inputs: dict) -> list:
    """`--name value` pairs that KFP drops at run time when the optional input was not given."""
    return [dsl.IfPresentPlaceholder(input_name=name, then=[flag_of(name), value]) for name, value in inputs.items()]


def if_present_beam_options(inputs: dict) -> list:
    """`--name value` pairs of Beam options (Beam spells them with underscores), when given at run time."""
    return [dsl.IfPresentPlaceholder(input_name=name, then=[f"--{name}", value]) for name, value in inputs.items()]


def given_flags(inputs: dict) -> list:
    """`--name value` pairs of inputs every run gives."""
    return [item for name, value in inputs.items() for item in (flag_of(name), value)]


def dataflow_inputs(*, defaults: bool) -> list[inspect.Parameter]:
    """The Dataflow settings as KFP string inputs, with the pipeline's defaults when `defaults`
    (a pipeline's input) or required (a component's, which the pipeline always sets)."""
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=default if defaults and default is not None else inspect.Parameter.empty,
            annotation=str,
        )
        for name, default in DATAFLOW_SETTINGS.items()
    ]


def dataflow_settings_of(values: dict) -> dict:
    """The values of the Dataflow settings, out of a component's or pipeline's generated inputs."""
    return {name: values[name] for name in DATAFLOW_SETTINGS}


def beam_option_inputs() -> list[inspect.Parameter]:
    """The Beam options as optional KFP inputs: `name: Optional[type] = None`."""
    return [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Optional[kind])
        for name, kind in BEAM_OPTIONS.items()
    ]


def beam_options_of(values: dict) -> dict:
    """The values of the Beam option inputs, out of a component's or pipeline's generated inputs."""
    return {name: values[name] for name in BEAM_OPTIONS}


def tuning_inputs(parameters: type) -> list[inspect.Parameter]:
    """The step's tuning parameters as optional KFP inputs: `name: Optional[type] = None`."""
    return [_input(parameter, annotation=Optional[parameter.kind], default=None) for parameter in tuning_parameters(parameters)]


def declared_inputs(parameters: type, *, defaults: bool, exclude: Iterable[str] = ()) -> list[inspect.Parameter]:
    """Every parameter of the step as a KFP input of its type, with the step's default when
    `defaults` (a pipeline's input) or required (a component's, which the pipeline always sets)."""
    return [
        _input(parameter, annotation=parameter.kind, default=parameter.default if defaults else inspect.Parameter.empty)
        for parameter in parameters_of(parameters)
        if parameter.name not in exclude
    ]


def _input(parameter: Parameter, *, annotation, default) -> inspect.Parameter:
    if parameter.required:
        default = inspect.Parameter.empty
    return inspect.Parameter(parameter.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


def with_inputs(generated: Sequence[inspect.Parameter]) -> Callable:
    """Adds generated inputs to a component or pipeline function's signature, which KFP reads with
    `inspect.signature` (honouring `__signature__`) and calls positionally. The function declares
    its own inputs and takes the generated ones as one dict, `inputs`."""

    def decorate(function: Callable) -> Callable:
        own = [parameter for name, parameter in inspect.signature(function).parameters.items() if name != "inputs"]
        # Inputs without a default first: a Python signature's rule, whatever their origin.
        ordered = sorted([*own, *generated], key=lambda parameter: parameter.default is not inspect.Parameter.empty)
        signature = inspect.Signature(ordered)
        own_names, generated_names = [parameter.name for parameter in own], [parameter.name for parameter in generated]

        @functools.wraps(function)
        def with_generated_inputs(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = bound.arguments
            return function(**{name: values[name] for name in own_names}, inputs={name: values[name] for name in generated_names})

        with_generated_inputs.__signature__ = signature
        return with_generated_inputs

    return decorate


def inputs_of(parameters: type, values: dict) -> dict:
    """The values of one step's tuning inputs, out of a pipeline's generated inputs."""
    return {parameter.name: values[parameter.name] for parameter in tuning_parameters(parameters)}


def declared_of(parameters: type, values: dict) -> dict:
    """The values of one step's declared inputs that a pipeline's generated inputs hold."""
    return {parameter.name: values[parameter.name] for parameter in parameters_of(parameters) if parameter.name in values}


def prepare_command(*, output, flags: Sequence = ()) -> list:
    """`fmnist prepare`: the raw data set (default: the image's embedded copy) -> shards + manifest."""
    return ["fmnist", "prepare", "--output", output, "--overwrite", *flags]


def train_command(*, data, model_root, flags: Sequence = ()) -> list:
    """`fmnist train`: shards -> a gated model version, published under `model_root` when it passes."""
    return ["fmnist", "train", "--data", data, "--model-root", model_root, *flags]


def resolve_model_command(*, model_root) -> list:
    """`fmnist model resolve`: the version LATEST names now, as JSON (the run's Model artifact)."""
    return ["fmnist", "model", "resolve", "--model-root", model_root]


def register_model_command(*, model_root, version, project, region) -> list:
    """`fmnist model register --target vertex`: the version as a version of the Vertex AI registry Model."""
    return [
        "fmnist", "model", "register", "--target", "vertex", "--model-root", model_root, version,
        "--project", project, "--region", region,
    ]  # fmt: skip


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
@with_inputs(tuning_inputs(PrepareParameters))
def prepare(image: str, dataset: Output[Dataset], manifest_digest: dsl.OutputPath(str), inputs: dict):
    """Raw IDX files -> validated image shards (the Dataset artifact) and their manifest digest."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "prepare", "--image", image, "--"],
        args=prepare_command(output=dataset.path, flags=if_present_flags(inputs)),
    )


@dsl.container_component
@with_inputs(tuning_inputs(TrainParameters))
def train(
    image: str,
    dataset: Input[Dataset],
    manifest_digest: str,
    model_root: str,
    model: Output[Model],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    model_card: Output[Markdown],
    model_version: dsl.OutputPath(str),
    inputs: dict,
):
    """Fits and evaluates a model; only one that passes the gates (absolute, and against the
    published champion) is published under model_root."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "train", "--image", image, "--manifest-digest", manifest_digest, "--"],
        args=train_command(data=dataset.path, model_root=model_root, flags=if_present_flags(inputs)),
    )


@dsl.container_component
def resolve_model(
    image: str,
    model_root: str,
    model_version: dsl.OutputPath(str),
    model_uri: dsl.OutputPath(str),
    test_accuracy: dsl.OutputPath(str),
    test_ece: dsl.OutputPath(str),
    manifest_digest: dsl.OutputPath(str),
):
    """The version LATEST names at the start of the run, with its URI and figures: resolved once,
    so the whole run uses exactly this version even if LATEST moves while it runs."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "resolve-model", "--image", image, "--"],
        args=resolve_model_command(model_root=model_root),
    )


@dsl.container_component
def register_model(image: str, model_root: str, model_version: str, project: str, region: str):
    """Uploads the published version to the Vertex AI Model Registry (a version of one registry Model)."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "register-model", "--image", image, "--"],
        args=register_model_command(model_root=model_root, version=model_version, project=project, region=region),
    )


@dsl.container_component
@with_inputs(declared_inputs(RunContextParameters, defaults=False))
def run_context(
    image: str,
    date: dsl.OutputPath(str),
    shards: dsl.OutputPath(str),
    run_id: dsl.OutputPath(str),
    inputs: dict,
):
    """The run's logical date (explicit run_date, else the scheduled time's date) and the names made from it."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "run-context", "--image", image, "--"],
        args=["fmnist", "run-context", *given_flags(inputs)],
    )


@dsl.container_component
@with_inputs([*dataflow_inputs(defaults=False), *beam_option_inputs(), *tuning_inputs(ScoreParameters)])
def score(
    image: str,
    shards: str,
    model: Input[Model],
    output: str,
    run_id: str,
    run_date: str,
    predictions: Output[Dataset],
    summary: Output[Metrics],
    gcp_resources: dsl.OutputPath(str),
    inputs: dict,
):
    """Scores one date's shards with the run's model version (the Model artifact: lineage from the
    tables to the model) into the partitioned tables (on Dataflow, whose job `gcp_resources` names:
    the UI links it and cancelling the run cancels it)."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        # A failed score leaves its exit code and last error line for the exit handler's record.
        command=[*ADAPTER, "score", "--image", image, "--failure-scores", output, "--failure-run-id", run_id, "--"],
        args=score_command(
            shards=shards,
            model=model.uri,
            output=output,
            run_id=run_id,
            run_date=run_date,
            gcp_resources=gcp_resources,
            flags=[
                *if_present_flags(inputs_of(ScoreParameters, inputs)),
                *dataflow_flags(**dataflow_settings_of(inputs)),
                *if_present_beam_options(beam_options_of(inputs)),
            ],
        ),
    )


@dsl.container_component
@with_inputs(declared_inputs(RunContextParameters, defaults=False, exclude=("shards_template",)))
def record_failure(image: str, output: str, status: dsl.PipelineTaskFinalStatus, inputs: dict):
    """The scoring pipeline's exit handler: when a task failed, a failure record of the run's date
    and run id (the same run-context inputs name them) where the run summaries live."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "record-failure", "--image", image, "--"],
        args=["fmnist", "record-failure", "--scores", output, *given_flags(inputs), "--final-status", status],
    )


@dsl.container_component
def report_failure(image: str, status: dsl.PipelineTaskFinalStatus):
    """The training pipeline's exit handler: a failed run's final status as one ERROR log line."""
    return dsl.ContainerSpec(
        image=IMAGE_INPUT_DEFAULT,
        command=[*ADAPTER, "record-failure", "--image", image, "--"],
        args=["fmnist", "record-failure", "--final-status", status],
    )


def configure_task(
    task: dsl.PipelineTask, image, *, cpu: str, memory: str, cached: bool = False, display_name: str | None = None
) -> dsl.PipelineTask:
    """Runs the task on the pipeline's pinned image (a run parameter, not a compile-time tag), with
    `cpu`/`memory` both requested and as the limit: a batch step gets what it was sized for, and
    Vertex AI Pipelines picks the machine from the limits. Not cached unless `cached`: only a task
    whose outputs outlive the pipeline root's lifecycle rule may be (see the module docstring)."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    for name, value in TASK_ENVIRONMENT.items():
        task.set_env_variable(name, value)
    if not cached:
        task.set_caching_options(False)
    if display_name is not None:
        task.set_display_name(display_name)
    return task.set_container_image(image)


@dsl.pipeline(name="fmnist-training", description="prepare -> train, evaluate, gate, publish: on one image pinned by digest")
@with_inputs([*tuning_inputs(PrepareParameters), *tuning_inputs(TrainParameters)])
def training_pipeline(
    image: str,
    model_root: str,
    inputs: dict,
    register_in_vertex: bool = False,
    vertex_project: str = "",
    vertex_region: str = "",
):
    """Shards from the raw data set, then a model version that scoring uses once it passes the gates;
    with `register_in_vertex`, the published version also goes to the Vertex AI Model Registry."""
    exit_task = configure_task(report_failure(image=image), image, cpu="500m", memory="512M")
    with dsl.ExitHandler(exit_task, name="on-exit-report-failure"):
        # prepare encodes PNGs on every core; train holds the 60,000 training images in memory.
        # Neither is cached: prepare's shards live in the pipeline root, which its lifecycle rule empties.
        prepared = configure_task(prepare(image=image, **inputs_of(PrepareParameters, inputs)), image, cpu="4", memory="8G")
        trained = configure_task(
            train(
                image=image,
                dataset=prepared.outputs["dataset"],
                manifest_digest=prepared.outputs["manifest_digest"],
                model_root=model_root,
                **inputs_of(TrainParameters, inputs),
            ),
            image,
            cpu="4",
            memory="8G",
            display_name="train-gate-publish",
        )
        with dsl.If(register_in_vertex == True, name="register-in-vertex"):  # noqa: E712 (a KFP condition, not a Python test)
            configure_task(
                register_model(
                    image=image,
                    model_root=model_root,
                    model_version=trained.outputs["model_version"],
                    project=vertex_project,
                    region=vertex_region,
                ),
                image,
                cpu="500m",
                memory="1G",
                cached=False,  # the registry lives outside KFP
            )


def _scoring_tasks(image: str, model_root: str, output: str, inputs: dict, context_inputs: dict, scheduled_time) -> None:
    """run-context -> score: the scoring pipeline's tasks inside its exit handler."""
    context = configure_task(
        run_context(image=image, scheduled_time=scheduled_time, **context_inputs),
        image,
        cpu="500m",
        memory="512M",
        # Its input is a placeholder KFP resolves per run: a cache hit could reuse another day's date.
        cached=False,
    )
    resolved = configure_task(
        resolve_model(image=image, model_root=model_root),
        image,
        cpu="500m",
        memory="512M",
        cached=False,  # LATEST moves between runs
    )
    # The version as a Model artifact: Vertex AI shows the lineage prediction tables <- model <- data set.
    model = dsl.importer(
        artifact_uri=resolved.outputs["model_uri"],
        artifact_class=Model,
        reimport=False,
        metadata={
            "model_version": resolved.outputs["model_version"],
            "test_accuracy": resolved.outputs["test_accuracy"],
            "test_ece": resolved.outputs["test_ece"],
            "manifest_digest": resolved.outputs["manifest_digest"],
        },
    )
    model.set_display_name("model")
    configure_task(
        score(
            image=image,
            shards=context.outputs["shards"],
            model=model.output,
            output=output,
            run_id=context.outputs["run_id"],
            run_date=context.outputs["date"],
            **dataflow_settings_of(inputs),
            **beam_options_of(inputs),
            **inputs_of(ScoreParameters, inputs),
        ),
        # Launches and watches the Dataflow job; the DirectRunner (a small backfill) scores in the task.
        image,
        cpu="2",
        memory="4G",
        # The tables live outside KFP and a rerun of a date must rewrite its partition: never cached.
        cached=False,
    )


@dsl.pipeline(name="fmnist-scoring", description="score one date's shards with the published model, on Dataflow")
@with_inputs(
    [
        *declared_inputs(RunContextParameters, defaults=True, exclude=(SCHEDULED_TIME,)),
        *dataflow_inputs(defaults=True),
        *beam_option_inputs(),
        *tuning_inputs(ScoreParameters),
    ]
)
def scoring_pipeline(image: str, model_root: str, output: str, inputs: dict):
    """The logical date comes from the schedule (or run_date, for a backfill) and names the partition."""
    context_inputs = declared_of(RunContextParameters, inputs)
    scheduled_time = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER
    # Runs however the tasks ended; an exit task can take no other task's output, so it names the
    # run's date and id from the same inputs run-context does.
    exit_task = configure_task(
        record_failure(
            image=image,
            output=output,
            scheduled_time=scheduled_time,
            **{name: value for name, value in context_inputs.items() if name != "shards_template"},
        ),
        image,
        cpu="500m",
        memory="512M",
    )
    with dsl.ExitHandler(exit_task, name="on-exit-record-failure"):
        _scoring_tasks(image, model_root, output, inputs, context_inputs, scheduled_time)


PIPELINES = {"training": training_pipeline, "scoring": scoring_pipeline}


def compile_pipelines(output: str, deployment: str | None = None, pipeline_root: str | None = None) -> dict[str, str]:
    """Writes every pipeline's spec as `<output>/<name>.yaml`; returns name -> path. With a deployment
    (or an explicit gs:// root) the specs declare its pipeline root as their defaultPipelineRoot;
    without, they name no project (the committed specs) and submit gives the root of each run."""
    if deployment is not None:
        names = load_deployment(deployment)
        if pipeline_root is not None:
            names.check_names("--pipeline-root", pipeline_root)
        pipeline_root = pipeline_root or names.pipeline_root
    if pipeline_root is not None and not pipeline_root.startswith("gs://"):
        raise InputError(f"--pipeline-root {pipeline_root}: a gs:// location (Vertex AI and KFP on GKE read it)")
    os.makedirs(output, exist_ok=True)
    paths = {name: os.path.join(output, f"{name}.yaml") for name in PIPELINES}
    for name, pipeline in PIPELINES.items():
        rooted = copy.deepcopy(pipeline)  # the module's pipelines stay as declared
        if pipeline_root is not None:
            rooted.pipeline_spec.default_pipeline_root = pipeline_root
        compiler.Compiler().compile(rooted, package_path=paths[name])
    return paths
