"""Warm models for the inference function, following the registry's live pointer.

A Lambda environment serves thousands of requests; reading the registry and S3 and building an
onnxruntime session for each would cost more than the prediction. So:

- the live pointer of a dataset and its retirement (and any version record looked up for a
  pinned request) are re-read at most every ``ttl_seconds``: a promotion, a rollback or a
  retirement is noticed within seconds, with no redeploy, and the registry sees at most two
  reads (two GetItems) per dataset per TTL per environment;
- sessions are kept by ``(dataset, version, sha256)`` in a small LRU, so a warm request does no
  I/O and a rollback to a recently served version is instant;
- a live version that cannot be loaded (its file fails the sha256 check against the registry
  record, or storage fails) is not served: the dataset's last good model keeps answering, the
  failure is logged and counted (``ModelIntegrityFailure`` / ``ModelLoadFailure``), and the load
  is retried only after the next pointer read. With no last good model the request gets 503.

One lock guards the cache: a Lambda environment runs one invocation at a time, and the local
HTTP server's threads only need loads not to race (two threads must not build one session twice).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from functions.inference.errors import (
    ModelNotExplainableError,
    ModelNotFoundError,
    ModelRetiredError,
    ModelUnavailableError,
    VersionNotFoundError,
)
from functions.shared.features import LabelValue
from functions.shared.model_card import ModelCard
from functions.shared.observability import logger, metrics
from functions.shared.registry import (
    DatasetRetirement,
    LivePointer,
    ModelRegistry,
    ModelVersion,
    ModelVersionNotFoundError,
)
from functions.shared.scoring import ModelIntegrityError, ScoringModel, verified
from functions.shared.storage import ObjectStore, parse_s3_uri

# Registry answers kept per dataset / version; bounded, so a client probing random names cannot
# grow the cache without limit.
MAX_REGISTRY_ENTRIES = 1024

if TYPE_CHECKING:  # imported on a first explain: predict-only environments never load it
    from functions.inference.explain import ExplainingModel

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)


@dataclass(frozen=True)
class ServedModel:
    """A loaded, verified model: what answers a request."""

    dataset: str
    version: int
    sha256: str
    scoring: ScoringModel

    @property
    def card(self) -> ModelCard:
        return self.scoring.card

    @property
    def labels(self) -> list[LabelValue]:
        return self.scoring.labels


@dataclass(frozen=True)
class LiveModel:
    """The dataset's live pointer and what actually answers for it.

    ``served`` is the live version when it loaded, the last good version when it did not, and
    ``None`` when nothing can answer; ``failure`` says why the live version is not serving.
    """

    pointer: LivePointer
    served: ServedModel | None
    failure: str | None


@dataclass
class _LiveState:
    pointer: LivePointer | None
    read_at: float
    retirement: DatasetRetirement | None = None
    tried: bool = False  # a load of this pointer was attempted since it was read
    failure: str | None = None
    last_good: ServedModel | None = None


@dataclass(frozen=True)
class _Record:
    version: ModelVersion | None  # None: the registry has no such version
    read_at: float


@dataclass(frozen=True)
class _Datasets:
    names: list[str]
    read_at: float


@dataclass(frozen=True)
class _Failure:
    message: str
    at: float


class ModelCache:
    """Models for the prediction API, by live pointer or pinned version.

    Parameters
    ----------
    registry, store
        Where pointers and version records, and model files and cards, are read from.
    ttl_seconds
        How stale a registry answer may be: the bound on how long a promotion or a rollback
        takes to reach this environment, and on how often a failed load is retried.
    clock
        Monotonic seconds; tests pass a fake to step over the TTL.
    max_sessions
        Sessions kept besides each dataset's serving one; every session holds its model in
        memory, and a Lambda's memory is small.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        store: ObjectStore,
        *,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = 8,
    ) -> None:
        self._registry = registry
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: _Lru[tuple[str, int, str], ServedModel] = _Lru(max_sessions)
        self._live: _Lru[str, _LiveState] = _Lru(MAX_REGISTRY_ENTRIES)
        self._records: _Lru[tuple[str, int], _Record] = _Lru(MAX_REGISTRY_ENTRIES)
        self._failures: _Lru[tuple[str, int, str], _Failure] = _Lru(MAX_REGISTRY_ENTRIES)
        self._cards: _Lru[tuple[str, int, str], ModelCard] = _Lru(MAX_REGISTRY_ENTRIES)
        # Explaining sessions (or why a version cannot explain), built on a first explain.
        self._explaining: _Lru[tuple[str, int, str], ExplainingModel | str] = _Lru(max_sessions)
        self._datasets: _Datasets | None = None

    def live(self, dataset: str) -> LiveModel:
        """The dataset's live model, loading it if needed; falls back to the last good one.

        Raises
        ------
        ModelNotFoundError
            The dataset has no live model.
        ModelRetiredError
            An operator retired the dataset.
        ModelUnavailableError
            The registry cannot be read and nothing was read before.
        """
        now = self._clock()
        with self._lock:
            state = self._in_service(dataset, now)
            pointer = state.pointer
            if pointer is None:
                raise ModelNotFoundError(
                    f"dataset '{dataset}' has no live model: it is unknown or no version has "
                    "passed the gate yet"
                )
            good = state.last_good
            if good is not None and (good.version, good.sha256) == (
                pointer.version,
                pointer.sha256,
            ):
                state.failure = None  # a rollback to the good version ends any refusal
                return LiveModel(pointer, good, None)
            if not state.tried:
                state.tried = True
                try:
                    state.last_good = self._load(
                        dataset,
                        pointer.version,
                        pointer.sha256,
                        pointer.model_uri,
                        pointer.card_uri,
                    )
                    state.failure = None
                except _LoadFailedError as exc:
                    state.failure = str(exc)
            return LiveModel(pointer, state.last_good, state.failure)

    def pinned(self, dataset: str, version: int) -> ServedModel:
        """One version of a dataset, whatever its status; the caller decides whether that status
        may serve.

        Raises
        ------
        VersionNotFoundError
            The registry has no such version.
        ModelRetiredError
            An operator retired the dataset.
        ModelUnavailableError
            It cannot be loaded (retried after the TTL), or the registry cannot be read.
        """
        record = self.record(dataset, version)
        key = (dataset, version, record.sha256)
        now = self._clock()
        with self._lock:
            served = self._sessions.get(key)
            if served is not None:
                return served
            failure = self._failures.get(key)
            if failure is not None and now - failure.at < self._ttl:
                raise ModelUnavailableError(failure.message)
            try:
                return self._load(
                    dataset, version, record.sha256, record.model_uri, record.card_uri
                )
            except _LoadFailedError as exc:
                raise ModelUnavailableError(str(exc)) from exc

    def explaining(self, served: ServedModel) -> ExplainingModel:
        """``served`` opened for explanations: its file read again (one storage read per
        version and environment, checked against the same sha256) and kept while it is used.

        Raises
        ------
        ModelNotExplainableError
            The file carries no usable explanation table (remembered: not read again).
        ModelUnavailableError
            The file cannot be read or fails its sha256 check.
        """
        key = (served.dataset, served.version, served.sha256)
        with self._lock:
            cached = self._explaining.get(key)
        if cached is None:
            record = self.record(served.dataset, served.version)
            where = f"version {served.version} of '{served.dataset}'"
            try:
                data = verified(
                    self._store.get_bytes(*parse_s3_uri(record.model_uri)), served.sha256
                )
            except Exception as exc:
                logger.error("model file could not be read again to explain", exc_info=exc)
                raise ModelUnavailableError(f"{where} cannot be read to explain it") from exc
            from functions.inference.explain import ExplainingModel
            from functions.shared.explanation import ExplanationTableError

            try:
                cached = ExplainingModel(data, served.scoring)
            except ExplanationTableError as exc:
                cached = f"{where} cannot explain its predictions: {exc}"
            with self._lock:
                self._explaining.put(key, cached)
        if isinstance(cached, str):
            raise ModelNotExplainableError(cached)
        return cached

    def record(self, dataset: str, version: int) -> ModelVersion:
        """The registry record of one version, at most ``ttl_seconds`` old.

        Raises
        ------
        VersionNotFoundError, ModelRetiredError, ModelUnavailableError
        """
        now = self._clock()
        with self._lock:
            self._in_service(dataset, now)
            cached = self._records.get((dataset, version))
            if cached is None or now - cached.read_at >= self._ttl:
                try:
                    found: ModelVersion | None = self._registry.get(dataset, version)
                except ModelVersionNotFoundError:
                    found = None
                except Exception as exc:  # the registry is down: a stale answer beats none
                    if cached is None:
                        raise _registry_unavailable(dataset, exc) from exc
                    logger.warning("registry read failed; using the last answer", exc_info=exc)
                    found = cached.version
                cached = _Record(found, now)
                self._records.put((dataset, version), cached)
        if cached.version is None:
            raise VersionNotFoundError(f"dataset '{dataset}' has no version {version}")
        return cached.version

    def pointer(self, dataset: str) -> LivePointer | None:
        """The dataset's live pointer, at most ``ttl_seconds`` old, without loading the model.

        Raises
        ------
        ModelRetiredError, ModelUnavailableError
        """
        with self._lock:
            return self._in_service(dataset, self._clock()).pointer

    def active_datasets(self) -> list[str]:
        """The datasets in service (``ModelRegistry.active_datasets``, one Scan), at most
        ``ttl_seconds`` old.

        Raises
        ------
        ModelUnavailableError
            The registry cannot be read and nothing was read before.
        """
        now = self._clock()
        with self._lock:
            cached = self._datasets
            if cached is None or now - cached.read_at >= self._ttl:
                try:
                    cached = _Datasets(self._registry.active_datasets(), now)
                except Exception as exc:  # the registry is down: a stale answer beats none
                    if cached is None:
                        logger.error("registry read failed", exc_info=exc)
                        raise ModelUnavailableError(
                            "the model registry cannot be read to list the models; retry shortly"
                        ) from exc
                    logger.warning("registry read failed; using the last answer", exc_info=exc)
                    cached = _Datasets(cached.names, now)
                self._datasets = cached
            return list(cached.names)

    def card(self, dataset: str, version: int, sha256: str, card_uri: str) -> ModelCard:
        """A version's model card: from its session when loaded, else read once and kept (a
        version's card never changes).

        Raises
        ------
        ModelUnavailableError
            The card cannot be read or does not validate.
        """
        key = (dataset, version, sha256)
        with self._lock:
            served = self._sessions.get(key)
            if served is not None:
                return served.card
            card = self._cards.get(key)
            if card is not None:
                return card
            try:
                card = ModelCard.model_validate_json(self._store.get_bytes(*parse_s3_uri(card_uri)))
            except Exception as exc:
                logger.error(
                    "model card could not be read",
                    extra={"dataset": dataset, "version": version},
                    exc_info=exc,
                )
                raise ModelUnavailableError(
                    f"the card of version {version} of '{dataset}' cannot be read"
                ) from exc
            self._cards.put(key, card)
            return card

    def load_failure(self, dataset: str, version: int, sha256: str) -> str | None:
        """Why this version last failed to load, if it did (for the status routes)."""
        with self._lock:
            state = self._live.get(dataset)
            if (
                state is not None
                and state.pointer is not None
                and state.failure is not None
                and (state.pointer.version, state.pointer.sha256) == (version, sha256)
            ):
                return state.failure
            failure = self._failures.get((dataset, version, sha256))
            return None if failure is None else failure.message

    def _in_service(self, dataset: str, now: float) -> _LiveState:
        """The dataset's pointer state, re-read when older than the TTL; the caller holds the
        lock.

        Raises
        ------
        ModelRetiredError, ModelUnavailableError
        """
        state = self._live.get(dataset)
        if state is None or now - state.read_at >= self._ttl:
            state = self._read_pointer(dataset, state, now)
        if state.retirement is not None:
            raise ModelRetiredError(
                f"dataset '{dataset}' was retired on {state.retirement.at:%Y-%m-%d} and no "
                "longer serves predictions"
            )
        return state

    def _read_pointer(self, dataset: str, state: _LiveState | None, now: float) -> _LiveState:
        try:
            pointer = self._registry.live(dataset)
            retirement = self._registry.retirement(dataset)
        except Exception as exc:  # the registry is down: keep serving what we have
            if state is None:
                raise _registry_unavailable(dataset, exc) from exc
            logger.warning("registry read failed; keeping the current pointer", exc_info=exc)
            state.read_at = now
            return state
        if state is None:
            state = _LiveState(pointer=pointer, read_at=now, retirement=retirement)
            self._live.put(dataset, state)
        else:
            state.pointer, state.read_at, state.tried = pointer, now, False
            state.retirement = retirement
        return state

    def _load(
        self, dataset: str, version: int, sha256: str, model_uri: str, card_uri: str
    ) -> ServedModel:
        """Read, verify and open one model; the caller holds the lock."""
        key = (dataset, version, sha256)
        served = self._sessions.get(key)
        if served is not None:
            return served
        context = {"dataset": dataset, "version": version, "sha256": sha256}
        try:
            card = ModelCard.model_validate_json(self._store.get_bytes(*parse_s3_uri(card_uri)))
            onnx_bytes = self._store.get_bytes(*parse_s3_uri(model_uri))
            scoring = ScoringModel(onnx_bytes, card, expected_sha256=sha256)
        except ModelIntegrityError as exc:
            metrics.add_metric(name="ModelIntegrityFailure", unit=MetricUnit.Count, value=1)
            logger.error("model refused: integrity check failed", extra=context, exc_info=exc)
            raise self._failed(key, f"version {version} of '{dataset}' is refused: {exc}") from exc
        except Exception as exc:  # storage, or a card that does not validate
            metrics.add_metric(name="ModelLoadFailure", unit=MetricUnit.Count, value=1)
            logger.error("model could not be loaded", extra=context, exc_info=exc)
            message = f"version {version} of '{dataset}' cannot be loaded: {type(exc).__name__}"
            raise self._failed(key, message) from exc
        served = ServedModel(dataset, version, sha256, scoring)
        self._sessions.put(key, served)
        self._failures.pop(key)  # the file was fixed: the status routes stop reporting it
        logger.info("model loaded", extra=context)
        return served

    def _failed(self, key: tuple[str, int, str], message: str) -> _LoadFailedError:
        self._failures.put(key, _Failure(message, self._clock()))
        return _LoadFailedError(message)


class _LoadFailedError(Exception):
    """A model could not be loaded; already logged and counted."""


def _registry_unavailable(dataset: str, exc: Exception) -> ModelUnavailableError:
    logger.error("registry read failed", extra={"dataset": dataset}, exc_info=exc)
    return ModelUnavailableError(
        f"the model registry cannot be read for dataset '{dataset}'; retry shortly"
    )
