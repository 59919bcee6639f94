"""Score one batch file with the live model, in chunks, and write the predictions.

The file (CSV or Parquet, the same formats and null tokens as training data) is streamed from
the store in chunks of ``chunk_rows``, never downloaded, so neither memory nor ``/tmp`` bounds
its size; each chunk becomes one Parquet part under
``<artifacts>/<dataset>/predictions/<file>/v<model version>/``, staged as it is made and made
visible with the others only once every row is scored, and a ``_manifest.json`` written last says
the result is complete. The raw file is never modified.
The model is the one live when the file arrives, loaded once and sha256-checked like the API's.
A file past ``max_file_bytes`` is scored by a processing job instead (route.py, job.py), which
runs ``score_with`` with the model pinned here and writes the same outputs.

Each output row is ``row`` (its 0-based position in the file), the contract's ``id_column`` and
``passthrough`` columns copied from the input unchanged (a CSV cell as its text, a Parquet value
with its type, a missing value as null), then the prediction columns. Only those columns are
read, so other columns of the file may hold anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from functions.batch.route import (
    BatchJobInput,
    BatchJobLimits,
    BatchJobRequest,
    BatchJobState,
    BatchRoute,
)
from functions.shared import layout
from functions.shared.contract import FeatureKind, parse_contract
from functions.shared.errors import ContractError, SluiceError
from functions.shared.features import NULL_TOKENS
from functions.shared.model_card import ModelCard
from functions.shared.registry import LivePointer, ModelRegistry
from functions.shared.runs import training_job_name
from functions.shared.scoring import ModelIntegrityError, ScoringModel
from functions.shared.storage import (
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectStore,
    StagedObject,
    parse_s3_uri,
    s3_uri,
)

CHUNK_ROWS = 50_000
# The file is streamed, so neither memory nor /tmp bounds its size; Lambda's 15 minutes do.
# SCORING_SECONDS of them are for scoring (the rest: cold start, the commit, S3's latency), at
# the throughput bench/batch.py measures: 15.3 MB of CSV per CPU-second (2026-12-04, a 200 MB
# file, the test multiclass model), taken as 15 MB a second on one of the 3008 MB function's
# ≈ 1.7 vCPUs. Half of that many bytes is accepted, as a larger model or a wider row scores
# fewer bytes a second; a larger file is refused with a report naming its size, never
# half-scored.
SCORED_BYTES_PER_SECOND = 15_000_000
SCORING_SECONDS = 600
MAX_FILE_BYTES = SCORED_BYTES_PER_SECOND * SCORING_SECONDS // 2  # 4.5 GB
CSV_BLOCK_BYTES = 8 << 20
REQUEST_FILE = "request.json"
ROW_COLUMN = "row"
LABEL_COLUMN = "label"
VALUE_COLUMN = "value"
PROBABILITY_PREFIX = "p_"  # then the class as the data spells it


class BatchError(SluiceError):
    """The file cannot be scored; the message names what is wrong and where."""


class StoreReadError(SluiceError):
    """Reading the file from the store failed (the network, S3), not the file: raised, never
    reported as the file's fault, so that the invocation fails and is retried. (pyarrow re-raises
    what a read raised, and a dropped connection is an OSError, which would read as a bad file.)"""


class BatchOutcome(BaseModel):
    """What the handler returns and ``_manifest.json`` (or ``_error.json``) holds."""

    model_config = ConfigDict(frozen=True)

    status: Literal["scored", "rejected", "ignored", "routed", "duplicate"]
    reason: str
    dataset: str | None = None
    source: str | None = None
    model_version: int | None = None
    model_sha256: str | None = None
    rows: int = 0
    parts: list[str] = []
    seconds: float = 0.0
    created_at: str = ""
    job_name: str | None = None  # routed: the processing job that scores the file
    execution: str | None = None  # routed: its state machine execution


@dataclass(frozen=True)
class VersionedModel:
    """A registered model version, loaded and checked, with its number."""

    version: int
    scoring: ScoringModel


def score_batch(
    store: ObjectStore,
    registry: ModelRegistry,
    *,
    raw_bucket: str,
    artifacts_bucket: str,
    key: str,
    chunk_rows: int = CHUNK_ROWS,
    max_file_bytes: int = MAX_FILE_BYTES,
    route: BatchRoute | None = None,
    identity: str | None = None,
    limits: BatchJobLimits | None = None,
) -> BatchOutcome:
    """Score the file at ``key`` with the live model, or, past ``max_file_bytes``, start a
    processing job on ``route`` to score it (named by ``identity``, the upload's: a redelivered
    event finds it started). Without a route such a file is refused, as one past the job's own
    cap always is."""
    started = time.perf_counter()
    batch = layout.parse_batch_key(key)
    if batch is None:
        return BatchOutcome(status="ignored", reason=f"{key} is not a batch file")
    dataset, source = batch.dataset, s3_uri(raw_bucket, key)
    try:
        info = store.head(raw_bucket, key)
        past = info is not None and info.size > max_file_bytes
        if past:
            assert info is not None
            limits = limits or BatchJobLimits()
            _check_size(key, info.size, max_file_bytes, route, limits)
        live = _live_record(registry, dataset)
        card = ModelCard.model_validate_json(store.get_bytes(*parse_s3_uri(live.card_uri)))
        carried = _carried_columns(store, raw_bucket, dataset, card)
        if past:  # the checks above are made before a job is started, not after it ran
            assert info is not None and route is not None and limits is not None
            request = BatchJobRequest(
                job_name="-",
                dataset=dataset,
                raw_bucket=raw_bucket,
                artifacts_bucket=artifacts_bucket,
                key=key,
                size=info.size,
                etag=info.etag,
                model_version=live.version,
                model_uri=live.model_uri,
                card_uri=live.card_uri,
                model_sha256=live.sha256,
                chunk_rows=chunk_rows,
            )
            return _start_job(store, route, limits, request, identity or key, started)
        model = VersionedModel(
            live.version, load_scoring(store, live.model_uri, card, live.sha256, live.version)
        )
    except BatchError as error:
        return reject(store, artifacts_bucket, source, key, str(error), started)
    return score_with(
        store,
        model,
        raw_bucket=raw_bucket,
        artifacts_bucket=artifacts_bucket,
        key=key,
        chunk_rows=chunk_rows,
        started=started,
        etag=info.etag if info is not None else None,
        carried=carried,
    )


def score_with(
    store: ObjectStore,
    model: VersionedModel,
    *,
    raw_bucket: str,
    artifacts_bucket: str,
    key: str,
    chunk_rows: int,
    started: float,
    etag: str | None = None,
    carried: _Carried | None = None,
    job_name: str | None = None,
) -> BatchOutcome:
    """Score the file with this model (the Lambda's live one, or the one a job was pinned to):
    its predictions and ``_manifest.json``, or its ``_error.json``. ``etag``: every read is of
    that object, and a file replaced or deleted meanwhile is left to its own event (``ignored``,
    nothing written). ``job_name``: the processing job scoring it, recorded in what is written."""
    batch = layout.parse_batch_key(key)
    assert batch is not None
    dataset, source = batch.dataset, s3_uri(raw_bucket, key)
    try:
        if carried is None:
            carried = _carried_columns(store, raw_bucket, dataset, model.scoring.card)
        prefix = layout.predictions_prefix(dataset, key, model.version)
        parts, rows = _score_file(
            store,
            raw_bucket,
            key,
            model.scoring,
            carried,
            artifacts_bucket,
            prefix,
            chunk_rows,
            etag,
        )
    except BatchError as error:
        return reject(store, artifacts_bucket, source, key, str(error), started, job_name)
    except (ObjectChangedError, ObjectNotFoundError):
        return BatchOutcome(
            status="ignored",
            reason=f"{key} was replaced or deleted while it was scored; nothing of it was "
            "published, and a replacement's own event scores it",
            dataset=dataset,
            source=source,
            job_name=job_name,
        )
    outcome = BatchOutcome(
        status="scored",
        reason=f"{rows} rows scored by model version {model.version}",
        dataset=dataset,
        source=source,
        model_version=model.version,
        model_sha256=model.scoring.sha256,
        rows=rows,
        parts=[s3_uri(artifacts_bucket, part) for part in parts],
        seconds=round(time.perf_counter() - started, 3),
        created_at=_now(),
        job_name=job_name,
    )
    manifest = outcome.model_dump_json(indent=2).encode()
    store.put_bytes(artifacts_bucket, f"{prefix}_manifest.json", manifest)  # last: complete
    return outcome


def reject(
    store: ObjectStore,
    artifacts_bucket: str,
    source: str,
    key: str,
    reason: str,
    started: float,
    job_name: str | None = None,
) -> BatchOutcome:
    """The file's report (``_error.json``, beside its predictions): nothing of it is published."""
    batch = layout.parse_batch_key(key)
    assert batch is not None
    outcome = BatchOutcome(
        status="rejected",
        reason=reason,
        dataset=batch.dataset,
        source=source,
        seconds=round(time.perf_counter() - started, 3),
        created_at=_now(),
        job_name=job_name,
    )
    errors = layout.predictions_error_key(batch.dataset, key)
    store.put_bytes(artifacts_bucket, errors, outcome.model_dump_json(indent=2).encode())
    return outcome


def read_job_request(store: ObjectStore, request_uri: str) -> BatchJobRequest:
    bucket, prefix = parse_s3_uri(request_uri)
    text = store.get_bytes(bucket, f"{prefix.rstrip('/')}/{REQUEST_FILE}")
    return BatchJobRequest.model_validate_json(text)


def if_replaced(
    store: ObjectStore, request: BatchJobRequest, said: str = ""
) -> BatchOutcome | None:
    """``ignored`` when the request's file is no longer the object it was asked for (replaced
    or deleted: the replacement's own event scores it), else None. ``said`` opens the reason."""
    current = store.head(request.raw_bucket, request.key)
    if current is not None and current.etag == request.etag:
        return None
    return BatchOutcome(
        status="ignored",
        reason=f"{said}{request.key} was replaced or deleted since its event; a replacement's "
        "own event scores it",
        dataset=request.dataset,
        source=s3_uri(request.raw_bucket, request.key),
        job_name=request.job_name,
    )


def report_failed_job(store: ObjectStore, state: BatchJobState) -> BatchOutcome:
    """A processing job that failed (the batch jobs machine's Catch): the file's ``_error.json``
    says which job and why. Its parts are committed only once every row is scored, so no
    ``_manifest.json`` says its predictions are complete. A file replaced since its job was
    asked for is left to its own event: no report blames the new one."""
    request = read_job_request(store, state.request_uri)
    source = s3_uri(request.raw_bucket, request.key)
    replaced = if_replaced(store, request, f"processing job {state.job_name} failed, but ")
    if replaced is not None:
        return replaced
    reason = (
        f"processing job {state.job_name}, which scores this file with model version "
        f"{request.model_version}, failed ({state.failure.Error}: "
        f"{state.failure.message[:500]}); its predictions are not complete (no "
        "_manifest.json): upload the file again to score it again"
    )
    started = time.perf_counter()
    return reject(
        store, request.artifacts_bucket, source, request.key, reason, started, state.job_name
    )


def job_outcome(store: ObjectStore, request_uri: str) -> dict[str, Any] | None:
    """What a batch job left for its file: the ``_manifest.json`` of its model version's
    predictions, else the file's ``_error.json``, when that job wrote it (an earlier scoring of
    the key is not this job's outcome); None when it wrote neither (the file was replaced)."""
    request = read_job_request(store, request_uri)
    bucket = request.artifacts_bucket
    predictions = layout.predictions_prefix(request.dataset, request.key, request.model_version)
    for key in (
        f"{predictions}_manifest.json",
        layout.predictions_error_key(request.dataset, request.key),
    ):
        if store.head(bucket, key) is not None:
            said: dict[str, Any] = json.loads(store.get_bytes(bucket, key))
            if said.get("job_name") == request.job_name:
                return said
    return None


def _check_size(
    key: str, size: int, max_file_bytes: int, route: BatchRoute | None, limits: BatchJobLimits
) -> None:
    if route is None:
        raise BatchError(
            f"{key}: {size} bytes is over the batch file cap of {max_file_bytes} bytes "
            f"({max_file_bytes / 1e9:.1f} GB, what the batch function scores within Lambda's "
            "15 minutes), and no processing route for larger files is deployed "
            "(BATCH_JOBS_STATE_MACHINE_ARN); split it into smaller files under the same "
            "batch/ prefix"
        )
    if size > limits.max_file_bytes:
        raise BatchError(
            f"{key}: {size} bytes is over what one processing job scores, "
            f"{limits.max_file_bytes} bytes ({limits.max_file_bytes / 1e9:.0f} GB in "
            f"{limits.max_runtime_seconds // 3600} h on one {limits.instance_type}); split it "
            "into smaller files under the same batch/ prefix"
        )


def _live_record(registry: ModelRegistry, dataset: str) -> LivePointer:
    live = registry.live(dataset)
    if live is None:
        raise BatchError(f"dataset '{dataset}' has no live model to score with")
    return live


def load_scoring(
    store: ObjectStore, model_uri: str, card: ModelCard, sha256: str, version: int
) -> ScoringModel:
    onnx = store.get_bytes(*parse_s3_uri(model_uri))
    try:
        return ScoringModel(onnx, card, expected_sha256=sha256)
    except ModelIntegrityError as error:
        raise BatchError(f"the live model version {version} is refused: {error}") from None


def _start_job(
    store: ObjectStore,
    route: BatchRoute,
    limits: BatchJobLimits,
    request: BatchJobRequest,
    identity: str,
    started: float,
) -> BatchOutcome:
    """Write the job's request and start it (named by the upload: a redelivered event finds it
    started and starts nothing)."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    run_name = f"{request.dataset[:40]}-batch-{digest}"
    job_name = training_job_name(run_name)
    source = s3_uri(request.raw_bucket, request.key)
    said = dict(dataset=request.dataset, source=source, model_version=request.model_version)
    if route.exists(run_name):
        return BatchOutcome(
            status="duplicate",
            reason=f"this upload already started processing job {job_name}",
            job_name=job_name,
            **said,
        )
    request = request.model_copy(update={"job_name": job_name})
    prefix = layout.batch_job_prefix(request.dataset, request.key, job_name)
    store.put_bytes(
        request.artifacts_bucket,
        f"{prefix}{REQUEST_FILE}",
        request.model_dump_json(indent=2).encode(),
    )
    job = BatchJobInput(
        run_name=run_name,
        dataset=request.dataset,
        job_name=job_name,
        request_uri=s3_uri(request.artifacts_bucket, prefix),
        instance_type=limits.instance_type,
        volume_gb=limits.volume_gb,
        max_runtime_seconds=limits.max_runtime_seconds,
    )
    start = route.start(job)
    predictions = layout.predictions_prefix(request.dataset, request.key, request.model_version)
    return BatchOutcome(
        status="routed" if start.started else "duplicate",
        reason=(
            f"{request.size:,} bytes is more than the batch function scores: processing job "
            f"{job_name} scores it on one {limits.instance_type} with model version "
            f"{request.model_version}; its predictions and _manifest.json land under "
            f"{s3_uri(request.artifacts_bucket, predictions)}"
            if start.started
            else f"this upload already started processing job {job_name}"
        ),
        job_name=job_name,
        execution=start.run_id,
        seconds=round(time.perf_counter() - started, 3),
        created_at=_now(),
        **said,
    )


@dataclass(frozen=True)
class _Carried:
    """The input columns copied into every output row: the contract's id column, then its
    ``passthrough`` list, in the contract's order."""

    id_column: str | None = None
    passthrough: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return ([self.id_column] if self.id_column else []) + list(self.passthrough)


def output_columns(card: ModelCard) -> list[str]:
    """The columns a prediction adds to each row, by the model's task and classes."""
    if card.task == "classification":
        probabilities = [f"{PROBABILITY_PREFIX}{name}" for name in card.classes or []]
        return [ROW_COLUMN, LABEL_COLUMN, *probabilities]
    return [ROW_COLUMN, VALUE_COLUMN]


def _carried_columns(
    store: ObjectStore, raw_bucket: str, dataset: str, card: ModelCard
) -> _Carried:
    """The contract's id column and passthrough list, checked against the prediction columns.

    No contract: nothing is carried (rows keep ``row``). A contract that does not parse is a
    refusal: its passthrough list cannot be guessed, and output missing columns the user asked
    for would be silently wrong."""
    key = layout.contract_key(dataset)
    if store.head(raw_bucket, key) is None:
        return _Carried()
    try:
        contract = parse_contract(store.get_bytes(raw_bucket, key), source=key)
    except ContractError as error:
        raise BatchError(
            f"the dataset's contract is invalid, so nothing is scored: {error}"
        ) from None
    carried = _Carried(contract.id_column, tuple(contract.passthrough))
    outputs = output_columns(card)
    for name in carried.names:
        if name in outputs:
            field = "id_column" if name == carried.id_column else "passthrough"
            what = f"id_column '{name}'" if field == "id_column" else f"passthrough column '{name}'"
            raise BatchError(
                f"{key}: {what} has the name of a prediction column; the predictions hold "
                f"{outputs}: leave it out of {field}, or rename it in the data"
            )
    return carried


def _score_file(
    store: ObjectStore,
    bucket: str,
    key: str,
    model: ScoringModel,
    carried: _Carried,
    out_bucket: str,
    prefix: str,
    chunk_rows: int,
    etag: str | None = None,
) -> tuple[list[str], int]:
    """Each chunk's predictions are staged as its part as soon as they are made (nothing is
    kept); the parts become visible together once every row is scored, and on any failure none
    does: a reader never sees half a result, and no upload is left open."""
    card = model.card
    staged: list[StagedObject] = []
    committed = 0
    try:
        offset = 0
        for chunk in _chunks(store, bucket, key, card, carried, chunk_rows, etag):
            table = _predictions(model, chunk, offset, carried)
            part = f"{prefix}part-{len(staged):05d}.parquet"
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            data = sink.getvalue().to_pybytes()
            staged.append(store.stage(out_bucket, part, data, "application/vnd.apache.parquet"))
            offset += chunk.num_rows
        if offset == 0:
            raise BatchError(f"{key}: the file holds no rows")
        # every read was of the object with this ETag; one put since has its own event, whose
        # result must not be overwritten by this older one
        store.require_etag(bucket, key, etag)
        for upload in staged:
            store.commit(upload)
            committed += 1
    except BaseException:
        for upload in staged[committed:]:
            with contextlib.suppress(Exception):  # the bucket's lifecycle rule is the backstop
                store.abort(upload)
        raise
    return [upload.key for upload in staged], offset


def _chunks(
    store: ObjectStore,
    bucket: str,
    key: str,
    card: ModelCard,
    carried: _Carried,
    chunk_rows: int,
    etag: str | None = None,
) -> Iterator[pa.Table]:
    """The file's feature and carried columns, ``chunk_rows`` rows at a time, read from the
    store as they are needed: a CSV from the object's byte stream, a Parquet file by ranged
    reads (its footer, then one row group's columns at a time)."""
    try:
        if key.lower().endswith(".parquet"):
            with _RangeReader(store, bucket, key, etag) as source:
                parquet = pq.ParquetFile(source)
                wanted = _wanted(key, parquet.schema_arrow.names, card, carried)
                for record_batch in parquet.iter_batches(batch_size=chunk_rows, columns=wanted):
                    yield pa.Table.from_batches([record_batch])
            return
        read_options = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, encoding="utf8")
        parse_options = pacsv.ParseOptions(newlines_in_values=True)
        # the header first, from a stream dropped after its first block; then the whole file
        with (
            _Stream(store, bucket, key, etag) as stream,
            pacsv.open_csv(stream, read_options=read_options, parse_options=parse_options) as head,
        ):
            header = head.schema.names
        wanted = _wanted(key, header, card, carried)
        # carried columns are text as written (a CSV has no other type); features as the model
        # reads them, which is also how a carried column that is a feature comes out
        types: dict[str, pa.DataType] = dict.fromkeys(carried.names, pa.string())
        for f in card.features:
            types[f.name] = pa.float64() if f.kind is FeatureKind.NUMERIC else pa.string()
        with _Stream(store, bucket, key, etag) as stream:
            reader = pacsv.open_csv(
                stream,
                parse_options=parse_options,
                read_options=read_options,
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    null_values=sorted(NULL_TOKENS),
                    strings_can_be_null=True,
                    include_columns=wanted,
                ),
            )
            pending: list[pa.RecordBatch] = []
            held = 0
            for record_batch in reader:
                pending.append(record_batch)
                held += record_batch.num_rows
                while held >= chunk_rows:
                    table = pa.Table.from_batches(pending)
                    yield table.slice(0, chunk_rows)
                    rest = table.slice(chunk_rows)
                    pending, held = rest.to_batches(), rest.num_rows
            if held:
                yield pa.Table.from_batches(pending)
    except (pa.ArrowInvalid, OSError) as error:
        raise BatchError(f"{key}: cannot read the file: {error}") from None


class _Stream(io.RawIOBase):
    """The store's byte stream of an object, its failures raised as StoreReadError. Pinned to
    an ETag, a dropped connection is resumed where it broke (a ranged GET of the same object),
    up to ``RESUMES`` times a stream: a job reads one stream for hours. Unpinned, it is not:
    the object read again might be another one."""

    RESUMES = 5

    def __init__(self, store: ObjectStore, bucket: str, key: str, etag: str | None) -> None:
        super().__init__()
        self._store, self._bucket, self._key, self._etag = store, bucket, key, etag
        self._position, self._resumed, self._closing = 0, 0, False
        self._raw = self._open()

    def _open(self) -> BinaryIO:
        try:
            return self._store.open_read(
                self._bucket, self._key, start=self._position, if_match=self._etag
            )
        except (ObjectChangedError, ObjectNotFoundError):
            raise  # replaced or deleted: not a read failure
        except Exception as error:
            raise StoreReadError(
                f"{self._key}: reading it from the store failed: {error}"
            ) from error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):  # whole, unless the stream ends: a short read is not an end
            try:
                data = self._raw.read(len(view) - filled)
            except Exception as error:
                if self._closing:
                    break  # closed under a read-ahead thread's read: not a dropped connection
                if self._etag is None or self._resumed >= self.RESUMES:
                    raise StoreReadError(
                        f"{self._key}: reading it from the store failed: {error}"
                    ) from error
                self._resumed += 1
                with contextlib.suppress(Exception):
                    self._raw.close()
                self._raw = self._open()
                continue
            if not data:
                break
            view[filled : filled + len(data)] = data
            filled += len(data)
            self._position += len(data)
        return filled

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            self._raw.close()
        super().close()


class _RangeReader(io.RawIOBase):
    """A seekable, read-only file over an object, each read one ranged read of the store,
    buffered so that neighbouring small reads (a row group's column chunks) share one."""

    BUFFER_BYTES = 8 << 20

    def __init__(self, store: ObjectStore, bucket: str, key: str, etag: str | None) -> None:
        super().__init__()
        info = store.head(bucket, key)
        if info is None:
            raise ObjectNotFoundError(bucket, key)
        if etag is not None and info.etag != etag:
            raise ObjectChangedError(bucket, key, etag)
        self._store, self._bucket, self._key, self._etag = store, bucket, key, etag
        self._size, self._position = info.size, 0
        self._buffer, self._buffer_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._position)
        if wanted <= 0:
            return 0
        start = self._position - self._buffer_start
        if start < 0 or start + wanted > len(self._buffer):
            end = min(self._size, self._position + max(wanted, self.BUFFER_BYTES))
            try:
                self._buffer = self._store.read_range(
                    self._bucket, self._key, self._position, end, if_match=self._etag
                )
            except (ObjectChangedError, ObjectNotFoundError):
                raise
            except Exception as error:
                raise StoreReadError(
                    f"{self._key}: reading it from the store failed: {error}"
                ) from error
            self._buffer_start, start = self._position, 0
        view[:wanted] = self._buffer[start : start + wanted]
        self._position += wanted
        return wanted


def _wanted(key: str, header: list[str], card: ModelCard, carried: _Carried) -> list[str]:
    """The columns to read (features, then carried ones not already among them), or a
    BatchError naming the first kind of column the file lacks and the columns it has."""
    present = set(header)
    missing = [f.name for f in card.features if f.name not in present]
    if missing:
        raise BatchError(f"{key}: the model needs the columns {missing}; the file has {header}")
    if carried.id_column and carried.id_column not in present:
        raise BatchError(
            f"{key}: the contract's id_column '{carried.id_column}' is not in the file, so its "
            f"predictions could not be joined back; the file has {header}"
        )
    absent = [name for name in carried.passthrough if name not in present]
    if absent:
        raise BatchError(
            f"{key}: the contract's passthrough columns {absent} are not in the file; the file "
            f"has {header}"
        )
    features = [f.name for f in card.features]
    return features + [name for name in carried.names if name not in features]


def _predictions(model: ScoringModel, chunk: pa.Table, offset: int, carried: _Carried) -> pa.Table:
    card = model.card
    columns: dict[str, Any] = {}
    for spec in card.features:
        column = chunk.column(spec.name)
        if spec.kind is FeatureKind.NUMERIC:
            if not pa.types.is_floating(column.type) and not pa.types.is_integer(column.type):
                raise BatchError(
                    f"column '{spec.name}' must be numeric; the file has {column.type}"
                )
            columns[spec.name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            columns[spec.name] = column.cast(pa.string()).to_pylist()
    scores = model.score(columns)
    out: dict[str, Any] = {ROW_COLUMN: pa.array(np.arange(offset, offset + chunk.num_rows))}
    for name in carried.names:
        out[name] = chunk.column(name)
    if card.task == "classification":
        assert scores.codes is not None and scores.probabilities is not None
        out[LABEL_COLUMN] = pa.array([model.labels[code] for code in scores.codes])
        for i, name in enumerate(card.classes or []):
            out[f"{PROBABILITY_PREFIX}{name}"] = pa.array(scores.probabilities[:, i])
    else:
        assert scores.values is not None
        out[VALUE_COLUMN] = pa.array(scores.values)
    return pa.table(out)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
