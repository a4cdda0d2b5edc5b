"""The scoring pipeline: image shards -> staged Parquet parts of the prediction and error tables.

    ScoreShards: ListGroups -> DistributeGroups (Reshuffle; only for more than one group) -> ScoreGroup (one DoFn call per group)

The unit of parallel work is a group of consecutive shards (components.score.shard_scoring
scores one; the launcher, components.score.run, decides the groups). The model is loaded
once per worker process (apache_beam.utils.shared), and once per process when the launcher
runs in it (components.score.model_scorer.load_model).
"""

from collections.abc import Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from components.contracts.shards import ShardExpectation
from components.contracts.summary import GroupReceipt
from components.errors import Terminated
from components.score.model_scorer import ModelScorer, load_model, scorer_of
from components.score.shard_scoring import ScoringTarget, score_group

COUNTER_NAMESPACE = "fmnist_score"


class ScoreGroupFn(beam.DoFn):
    """A group's (shard index, shard URI) pairs -> the group's receipt, parts staged; counts as Beam counters."""

    def __init__(
        self,
        *,
        keras_uri: str,
        target: ScoringTarget,
        expectations: Mapping[str, ShardExpectation] | None = None,
        model_sha256: str | None = None,
    ) -> None:
        self._keras_uri = keras_uri
        self._model_sha256 = model_sha256
        self._target = target
        self._expectations = dict(expectations or {})
        self._shared_model = shared.Shared()
        self._scorer: ModelScorer | None = None

    def setup(self) -> None:
        # One model per worker process, however many threads run this DoFn.
        self._scorer = self._shared_model.acquire(self._new_scorer, tag=self._keras_uri)

    def _new_scorer(self) -> ModelScorer:
        # With the digest, a worker in the launcher's process reuses the model the launcher
        # checked; one elsewhere checks the bytes it reads against it.
        return scorer_of(load_model(self._keras_uri, expected_sha256=self._model_sha256))

    def process(self, element: Sequence[tuple[int, str]]) -> Iterator[GroupReceipt]:
        try:
            receipt = score_group(element, scorer=self._scorer, target=self._target, expectations=self._expectations)
        except Terminated as stop:
            # A worker in the main thread (the in-process local runner) is where SIGTERM lands.
            # A stop is no failure of the step: marked as already annotated, Beam passes it on
            # as it is instead of logging a traceback, and the entry point reports it in one line.
            stop._tagged_with_step = True
            raise
        Metrics.counter(COUNTER_NAMESPACE, "shards").inc(len(receipt.shards))
        for name in ("read", "scored", "failed"):
            Metrics.counter(COUNTER_NAMESPACE, f"records_{name}").inc(sum(getattr(shard, name) for shard in receipt.shards))
        for error_type, count in receipt.failed_by_type.items():
            Metrics.counter(COUNTER_NAMESPACE, f"failed_{error_type}").inc(count)
        yield receipt


class ScoreShards(beam.PTransform):
    """Root transform: scores the given shards in parallel, a group at a time; a PCollection of
    the groups' receipts.

    `groups` are lists of consecutive positions in `shard_uris` (by default one group per shard).
    `expectations` (shard URI -> its manifest entry) makes each shard reconcile with its manifest.
    """

    def __init__(
        self,
        *,
        shard_uris: Sequence[str],
        keras_uri: str,
        target: ScoringTarget,
        groups: Sequence[Sequence[int]] | None = None,
        expectations: Mapping[str, ShardExpectation] | None = None,
        model_sha256: str | None = None,
    ) -> None:
        super().__init__()
        groups = groups or [[index] for index in range(len(shard_uris))]
        self._groups = [[(index, shard_uris[index]) for index in group] for group in groups]
        self._keras_uri = keras_uri
        self._model_sha256 = model_sha256
        self._target = target
        self._expectations = dict(expectations or {})

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        # Create would reshuffle on its own; one (named) reshuffle is enough to spread the
        # groups over the workers, the second cost a stage of start-up.
        groups = pbegin | "ListGroups" >> beam.Create(self._groups, reshuffle=False)
        if len(self._groups) > 1:
            groups = groups | "DistributeGroups" >> beam.Reshuffle()
        # One group has nothing to spread: without the reshuffle the run is one stage and one
        # bundle instead of two (measured: docs/benchmarks.md, the fixed cost of scoring).
        return groups | "ScoreGroup" >> beam.ParDo(
            ScoreGroupFn(
                keras_uri=self._keras_uri,
                target=self._target,
                expectations=self._expectations,
                model_sha256=self._model_sha256,
            )
        )


def build_pipeline(
    *,
    shard_uris: Sequence[str],
    keras_uri: str,
    target: ScoringTarget,
    options: PipelineOptions,
    groups: Sequence[Sequence[int]] | None = None,
    expectations: Mapping[str, ShardExpectation] | None = None,
    model_sha256: str | None = None,
) -> beam.Pipeline:
    """The scoring pipeline over the given shards (in the given groups), built but not run."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "ScoreShards" >> ScoreShards(
        shard_uris=shard_uris,
        keras_uri=keras_uri,
        target=target,
        groups=groups,
        expectations=expectations,
        model_sha256=model_sha256,
    )
    return pipeline
