"""Inference capture: a sample of prediction requests, written to S3 in batches off the hot path.

The prediction route calls ``CaptureBuffer.offer`` once per answered request. One random draw
decides whether the request is sampled; a request that is not costs that draw and a counter. A
sampled one has its excluded columns (PII) stripped and is appended to an in-memory batch, under a
lock held for a few list operations: ``offer`` never serialises, compresses or does I/O.

A daemon thread, started on the first sampled request, wakes every ``flush_interval_seconds``
(or at once when a batch fills) and writes each batch that holds ``max_records`` records or whose
first record is ``max_age_seconds`` old, as gzip'd JSON Lines objects of at most ``max_records``
lines, one dataset, model version and hour each. At most ``max_buffer_records`` records are held;
a sampled request that does not fit is dropped and counted, and the next flush writes every batch.
Serialising holds the GIL, so the flusher yields it every ``YIELD_EVERY`` lines. Keys::

    <prefix>dt=YYYY-MM-DD/hr=HH/<model_version>-<YYYYMMDDTHHMMSSZ>-<uuid4 hex>.jsonl.gz

``<prefix>`` is ``{dataset}/capture/`` unless configured (``capture_key``). ``dt``/``hr`` are
Hive-style partitions (UTC, of each record's own time: a batch that spans an hour boundary is
written as two objects), so Athena and the drift job can prune by time. One line per instance::

    {"request_id": "...", "index": 0, "at": "2026-11-22T10:15:30.123Z", "model_version": "3",
     "instance": {...}, "prediction": ...}

Lambda freezes an environment between invocations, and the flusher with it: the handler calls
``maybe_flush_async`` as each invocation starts, which wakes the thread when a batch is due and
never blocks. Records still held when Lambda reclaims an environment are lost (Python functions
get no shutdown signal without an extension): capture is a sample and at-most-once, never a log.
A batch whose upload fails is kept for one more attempt under the same key (so an upload that
did land is overwritten, not doubled), then dropped and counted; nothing here raises into the
request path. ``stats()`` gives the counters.

Only the standard library and pydantic are imported, as the inference layer requires
(tests/unit/test_inference_imports.py).
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import re
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_json

from functions.shared.layout import (
    CAPTURE_PREFIX_TEMPLATE,
    TELEMETRY_TAGS,
    capture_hour_prefix,
)
from functions.shared.storage import ObjectStore

DEFAULT_PREFIX = CAPTURE_PREFIX_TEMPLATE
CONTENT_TYPE = "application/gzip"
SUFFIX = ".jsonl.gz"
COMPRESS_LEVEL = 1  # 4× faster than 6 on 1000 records, 15% larger; zlib frees the GIL
SECONDS_PER_HOUR = 3600
# Serialising holds the GIL, and a thread waiting for it gets it only after the 5 ms switch
# interval: the flusher yields after about this many lines (~0.3 ms of work), so a request that
# comes in during a flush waits well under a millisecond for it.
YIELD_EVERY = 64

# Environment variables read by ``CaptureSettings.from_env``, field → variable.
ENV_VARS: dict[str, str] = {
    "bucket": "CAPTURE_BUCKET",
    "sample_rate": "CAPTURE_SAMPLE_RATE",
    "exclude": "CAPTURE_EXCLUDE",
    "max_records": "CAPTURE_MAX_RECORDS",
    "max_age_seconds": "CAPTURE_MAX_AGE_SECONDS",
    "max_buffer_records": "CAPTURE_MAX_BUFFER_RECORDS",
    "prefix": "CAPTURE_PREFIX",
    "flush_interval_seconds": "CAPTURE_FLUSH_INTERVAL_SECONDS",
}

_MODEL_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = logging.getLogger(__name__)


class CaptureSettings(BaseModel):
    """What to capture and how to batch it; capture is off unless a bucket is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str | None = Field(default=None, description="Where batches go; unset: capture off.")
    sample_rate: float = Field(default=0.1, ge=0, le=1, description="Share of requests kept.")
    exclude: frozenset[str] = Field(
        default=frozenset(), description="Instance columns never written (PII), in every dataset."
    )
    max_records: int = Field(default=1000, ge=1, description="Records (instances) per object.")
    max_age_seconds: float = Field(
        default=60.0, gt=0, description="A batch is written once its first record is this old."
    )
    max_buffer_records: int = Field(
        default=10_000, ge=1, description="Records held at most; a request beyond is dropped."
    )
    prefix: str = Field(
        default=DEFAULT_PREFIX, description="Key prefix template; '{dataset}' is substituted."
    )
    flush_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the flusher thread looks for due batches."
    )

    @field_validator("bucket")
    @classmethod
    def _empty_bucket_is_none(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    @field_validator("prefix")
    @classmethod
    def _prefix_template(cls, value: str) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if fields - {"dataset"}:
            raise ValueError(f"only '{{dataset}}' may be substituted, not {sorted(fields)}")
        if value.startswith("/") or not value.endswith("/"):
            raise ValueError("the prefix must not start with '/' and must end with '/'")
        return value

    @property
    def enabled(self) -> bool:
        return self.bucket is not None and self.sample_rate > 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CaptureSettings:
        """Settings from ``CAPTURE_*`` variables (``ENV_VARS``); ``CAPTURE_EXCLUDE`` is a
        comma-separated list of column names. Unset or empty variables take the defaults.

        Raises
        ------
        pydantic.ValidationError
            A value out of range or of the wrong type: at cold start, like the handler's own
            settings, rather than capture silently doing something else.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in ENV_VARS.items():
            raw = env.get(variable, "").strip()
            if raw:
                values[name] = raw
        if "exclude" in values:
            values["exclude"] = {c.strip() for c in values["exclude"].split(",") if c.strip()}
        return cls.model_validate(values)


@dataclass(frozen=True)
class CaptureStats:
    """Counters since the buffer was made. Requests: ``offered``, ``sampled``. Records (one per
    instance): the rest. ``sampled_records == written_records + dropped + buffered`` whenever no
    flush is in progress. ``failed`` counts upload attempts that raised."""

    offered: int
    sampled: int
    sampled_records: int
    written_records: int
    written_objects: int
    dropped: int
    failed: int
    buffered: int


# One sampled request as held: (time, request id, stripped instances, predictions).
_Request = tuple[float, str, list[dict[str, Any]], list[Any]]


@dataclass
class _Batch:
    first_at: float
    records: int = 0
    requests: list[_Request] = field(default_factory=list)


@dataclass(frozen=True)
class _Upload:
    key: str
    data: bytes
    records: int


class CaptureBuffer:
    """Samples prediction requests into per-(dataset, model version) batches and writes them to
    ``settings.bucket`` from a background thread. Thread-safe; see the module docstring.

    ``clock`` gives epoch seconds (record times, partitions and batch ages); ``rng`` decides
    sampling. ``background=False`` never starts the thread: batches are written only by
    ``flush`` (tests, benchmarks).
    """

    def __init__(
        self,
        settings: CaptureSettings,
        store: ObjectStore,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        *,
        background: bool = True,
    ) -> None:
        self.settings = settings
        self._store = store
        self._clock = clock
        self._draw = (rng if rng is not None else random.Random()).random
        self._rate = settings.sample_rate if settings.enabled else 0.0
        self._exclude = tuple(settings.exclude)
        self._max_records = settings.max_records
        self._max_age = settings.max_age_seconds
        self._cap = settings.max_buffer_records
        self._background = background
        self._lock = threading.Lock()  # batches, retries and counters
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stopping = False
        self._overflowed = False  # a request was dropped for want of room since the last flush
        self._thread: threading.Thread | None = None
        self._batches: dict[tuple[str, str], _Batch] = {}
        self._retries: list[_Upload] = []
        self._offered = 0
        self._sampled = 0
        self._sampled_records = 0
        self._written_records = 0
        self._written_objects = 0
        self._dropped = 0
        self._failed = 0
        self._buffered = 0

    # --- hot path ----------------------------------------------------------------------------

    def offer(
        self,
        dataset: str,
        model_version: str,
        request_id: str,
        instances: list[dict[str, Any]],
        predictions: list[Any],
    ) -> bool:
        """Consider one answered request for capture; True when it was sampled and buffered.

        ``predictions[i]`` answers ``instances[i]``. The instances are copied (without the
        excluded columns) and ``predictions`` shallow-copied, so the caller may reuse them.
        Values are written as JSON; one that is not JSON (a numpy value, say) is converted at
        write time (``tolist()``, else ``str``). Never raises, never does I/O.
        """
        if self._draw() >= self._rate:  # rate 0 (or capture off): never sampled
            with self._lock:
                self._offered += 1
            return False
        count = 0
        try:
            count = len(instances)
            if len(predictions) != count:
                raise ValueError("one prediction per instance")
            kept = [dict(row) for row in instances]
            if self._exclude:
                for copy in kept:  # a C-level copy and pops: 3× faster than a comprehension
                    for column in self._exclude:
                        copy.pop(column, None)
            request: _Request = (self._clock(), str(request_id), kept, list(predictions))
        except Exception:
            log.warning("capture: request %s not captured (malformed)", request_id, exc_info=True)
            with self._lock:
                self._offered += 1
                self._sampled += 1
                self._sampled_records += count
                self._dropped += count
            return False
        with self._lock:
            self._offered += 1
            self._sampled += 1
            self._sampled_records += count
            full = self._buffered + count > self._cap
            if full:
                self._dropped += count
                self._overflowed = due = True  # the flusher writes every batch (see ``flush``)
            else:
                key = (dataset, model_version)
                batch = self._batches.get(key)
                if batch is None:
                    batch = self._batches[key] = _Batch(first_at=request[0])
                batch.requests.append(request)
                batch.records += count
                self._buffered += count
                due = batch.records >= self._max_records
                if self._thread is None:
                    self._start_thread()
        if due:
            self._wake.set()
        return not full

    def maybe_flush_async(self) -> bool:
        """Wake the flusher if a batch is due (or an upload awaits its retry); never blocks on
        I/O. Call it as each invocation starts: Lambda froze the thread between invocations.
        True when a batch was due."""
        if not self._batches and not self._retries:  # unlocked peek: the common case
            return False
        now = self._clock()
        with self._lock:
            due = bool(self._retries) or self._overflowed
            due = due or any(self._is_due(b, now) for b in self._batches.values())
            if due and self._thread is None:
                self._start_thread()
        if due:
            self._wake.set()
        return due

    # --- flushing ----------------------------------------------------------------------------

    def flush(self, force: bool = True) -> int:
        """Write the batches that are due (every batch held, with ``force`` or once a request
        was dropped because the buffer was full) and retry the uploads that failed once; return
        the number of objects written. Blocks for the uploads; never raises. With ``force`` an
        upload that fails is retried at once (for shutdown and tests), else at the next flush."""
        with self._flush_lock:
            now = self._clock()
            with self._lock:
                retries, self._retries = self._retries, []
                everything, self._overflowed = force or self._overflowed, False
                taken: list[tuple[tuple[str, str], _Batch]] = []
                for key, batch in list(self._batches.items()):
                    if everything or self._is_due(batch, now):
                        taken.append((key, batch))
                        del self._batches[key]
            written = sum(self._put(upload, last_try=True) for upload in retries)
            for (dataset, model_version), batch in taken:
                for upload in self._uploads(dataset, model_version, batch):
                    written += self._put(upload, last_try=False)
            if force:
                with self._lock:
                    retries, self._retries = self._retries, []
                written += sum(self._put(upload, last_try=True) for upload in retries)
            return written

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the flusher thread and write everything held. For a clean shutdown; the thread
        is a daemon, so without it an exiting process loses what is held."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
        self.flush(force=True)

    def stats(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(
                offered=self._offered,
                sampled=self._sampled,
                sampled_records=self._sampled_records,
                written_records=self._written_records,
                written_objects=self._written_objects,
                dropped=self._dropped,
                failed=self._failed,
                buffered=self._buffered,
            )

    @property
    def thread_started(self) -> bool:
        return self._thread is not None

    def _is_due(self, batch: _Batch, now: float) -> bool:
        return batch.records >= self._max_records or now - batch.first_at >= self._max_age

    def _start_thread(self) -> None:
        """Called with ``_lock`` held."""
        if not self._background or self._stopping:
            return
        self._thread = threading.Thread(target=self._run, name="sluice-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.settings.flush_interval_seconds
        while not self._stopping:
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.flush(force=False)
            except Exception:  # flush does not raise; the thread must outlive a bug if it does
                log.exception("capture: flush failed")

    def _uploads(self, dataset: str, model_version: str, batch: _Batch) -> Iterator[_Upload]:
        """The batch as objects: by hour of each record, ``max_records`` lines each."""
        by_hour: dict[int, list[tuple[float, bytes]]] = {}
        serialised = 0
        try:
            for at, request_id, rows, predictions in batch.requests:
                if serialised >= YIELD_EVERY:
                    serialised = 0
                    time.sleep(0)  # let a request thread waiting for the GIL run (see YIELD_EVERY)
                serialised += len(rows)
                stamp = _iso(at)
                lines = by_hour.setdefault(int(at // SECONDS_PER_HOUR), [])
                for index, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
                    line = {
                        "request_id": request_id,
                        "index": index,
                        "at": stamp,
                        "model_version": model_version,
                        "instance": row,
                        "prediction": prediction,
                    }
                    lines.append((at, to_json(line, inf_nan_mode="null", fallback=_jsonable)))
        except Exception:
            log.exception("capture: a batch of %d records could not be serialised", batch.records)
            self._count(dropped=batch.records, buffered=-batch.records)
            return
        for lines in by_hour.values():
            for start in range(0, len(lines), self._max_records):
                chunk = lines[start : start + self._max_records]
                try:
                    key = capture_key(
                        dataset,
                        model_version,
                        min(at for at, _ in chunk),
                        uuid.uuid4().hex,
                        self.settings.prefix,
                    )
                    body = b"\n".join(line for _, line in chunk) + b"\n"
                    data = gzip.compress(body, compresslevel=COMPRESS_LEVEL, mtime=0)
                except Exception:
                    log.exception("capture: %d records could not be written", len(chunk))
                    self._count(dropped=len(chunk), buffered=-len(chunk))
                    continue
                yield _Upload(key, data, len(chunk))

    def _put(self, upload: _Upload, *, last_try: bool) -> int:
        """Upload one object: 1 when written. A first failure keeps it for one retry (same key,
        so a put that did land is overwritten rather than doubled); a second drops it."""
        bucket = self.settings.bucket
        try:
            if bucket is None:
                raise RuntimeError("capture has no bucket")
            self._store.put_bytes(
                bucket, upload.key, upload.data, content_type=CONTENT_TYPE, tags=TELEMETRY_TAGS
            )
        except Exception as exc:
            log.warning("capture: upload of %s failed: %r", upload.key, exc)
            with self._lock:
                self._failed += 1
                if last_try:
                    self._dropped += upload.records
                    self._buffered -= upload.records
                else:
                    self._retries.append(upload)
            return 0
        self._count(written_records=upload.records, written_objects=1, buffered=-upload.records)
        return 1

    def _count(
        self,
        *,
        written_records: int = 0,
        written_objects: int = 0,
        dropped: int = 0,
        buffered: int = 0,
    ) -> None:
        with self._lock:
            self._written_records += written_records
            self._written_objects += written_objects
            self._dropped += dropped
            self._buffered += buffered


# --- key layout ------------------------------------------------------------------------------


def capture_key(
    dataset: str,
    model_version: str,
    first_at: float,
    unique: str,
    template: str = DEFAULT_PREFIX,
) -> str:
    """The key of one batch: its hour's partition, then ``<model_version>-<first record's time,
    ISO 8601 basic, UTC>-<unique>.jsonl.gz``.

    Raises
    ------
    ValueError
        A dataset name or model version that cannot be part of a key.
    """
    if not _MODEL_VERSION.match(model_version):
        raise ValueError(f"not a model version: {model_version!r}")
    moment = datetime.fromtimestamp(first_at, UTC)
    hour = capture_hour_prefix(dataset, moment, template)
    return f"{hour}{model_version}-{moment:%Y%m%dT%H%M%SZ}-{unique}{SUFFIX}"


def _iso(at: float) -> str:
    """``2026-11-22T10:15:30.250Z``: ``isoformat`` (0.3 µs) rather than ``strftime`` (3 µs)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _jsonable(value: Any) -> Any:
    """What a value that is not JSON is written as: numpy's ``tolist()``, else its ``str``."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)
