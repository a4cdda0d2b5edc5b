"""The scoring pipeline: image shards -> staged Parquet parts of the prediction and error tables.

    ScoreShards: ListShards -> DistributeShards (Reshuffle; only for more than one shard) -> ScoreShard (one DoFn call per shard)

The unit of parallel work is a shard (components.score.shard_scoring does one). The model is
loaded once per worker process (apache_beam.utils.shared), and once per process when the
launcher runs in it (components.score.model_scorer.load_model).
"""

from collections.abc import Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from components.contracts.shards import ShardExpectation
from components.contracts.summary import ShardReceipt
from components.errors import Terminated
from components.score.model_scorer import ModelScorer, load_model, scorer_of
from components.score.shard_scoring import ScoringTarget, score_shard

COUNTER_NAMESPACE = "fmnist_score"


class ScoreShardFn(beam.DoFn):
    """(shard index, shard URI) -> the shard's receipt, parts staged; counts as Beam counters."""

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

    def process(self, element: tuple[int, str]) -> Iterator[ShardReceipt]:
        shard_index, shard_uri = element
        try:
            receipt = score_shard(
                shard_index, shard_uri, scorer=self._scorer, target=self._target, expected=self._expectations.get(shard_uri)
            )
        except Terminated as stop:
            # A worker in the main thread (the in-process local runner) is where SIGTERM lands.
            # A stop is no failure of the step: marked as already annotated, Beam passes it on
            # as it is instead of logging a traceback, and the entry point reports it in one line.
            stop._tagged_with_step = True
            raise
        Metrics.counter(COUNTER_NAMESPACE, "shards").inc()
        for name in ("read", "scored", "failed"):
            Metrics.counter(COUNTER_NAMESPACE, f"records_{name}").inc(getattr(receipt, name))
        for error_type, count in receipt.failed_by_type.items():
            Metrics.counter(COUNTER_NAMESPACE, f"failed_{error_type}").inc(count)
        yield receipt


class ScoreShards(beam.PTransform):
    """Root transform: scores the given shards in parallel; a PCollection of their receipts.

    `expectations` (shard URI -> its manifest entry) makes each shard reconcile with its manifest.
    """

    def __init__(
        self,
        *,
        shard_uris: Sequence[str],
        keras_uri: str,
        target: ScoringTarget,
        expectations: Mapping[str, ShardExpectation] | None = None,
        model_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self._shard_uris = list(shard_uris)
        self._keras_uri = keras_uri
        self._model_sha256 = model_sha256
        self._target = target
        self._expectations = dict(expectations or {})

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        # Create would reshuffle on its own; one (named) reshuffle is enough to spread the
        # shards over the workers, the second cost a stage of start-up.
        shards = pbegin | "ListShards" >> beam.Create(list(enumerate(self._shard_uris)), reshuffle=False)
        if len(self._shard_uris) > 1:
            shards = shards | "DistributeShards" >> beam.Reshuffle()
        # One shard has nothing to spread: without the reshuffle the run is one stage and one
        # bundle instead of two (measured: docs/benchmarks.md, the fixed cost of scoring).
        return shards | "ScoreShard" >> beam.ParDo(
            ScoreShardFn(
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
    expectations: Mapping[str, ShardExpectation] | None = None,
    model_sha256: str | None = None,
) -> beam.Pipeline:
    """The scoring pipeline over the given shards, built but not run."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "ScoreShards" >> ScoreShards(
        shard_uris=shard_uris, keras_uri=keras_uri, target=target, expectations=expectations, model_sha256=model_sha256
    )
    return pipeline
