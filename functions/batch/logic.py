"""Score one batch file with the live model, in chunks, and write the predictions.

The file (CSV or Parquet, the same formats and null tokens as training data) is streamed in
chunks of ``chunk_rows``, so memory stays bounded whatever its size; each chunk becomes one
Parquet part under ``<artifacts>/<dataset>/predictions/<file>/v<model version>/``, and a
``_manifest.json`` written last says the result is complete. The raw file is never modified.
The model is the one live when the job starts, loaded once and sha256-checked like the API's.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from functions.shared import layout
from functions.shared.contract import FeatureKind, parse_contract
from functions.shared.errors import ContractError, SluiceError
from functions.shared.features import NULL_TOKENS
from functions.shared.model_card import ModelCard
from functions.shared.registry import ModelRegistry
from functions.shared.scoring import ModelIntegrityError, ScoringModel
from functions.shared.storage import ObjectStore, parse_s3_uri, s3_uri

CHUNK_ROWS = 50_000
CSV_BLOCK_BYTES = 8 << 20
ROW_COLUMN = "row"


class BatchError(SluiceError):
    """The file cannot be scored; the message names what is wrong and where."""


class BatchOutcome(BaseModel):
    """What the handler returns and ``_manifest.json`` (or ``_error.json``) holds."""

    model_config = ConfigDict(frozen=True)

    status: Literal["scored", "rejected", "ignored"]
    reason: str
    dataset: str | None = None
    source: str | None = None
    model_version: int | None = None
    model_sha256: str | None = None
    rows: int = 0
    parts: list[str] = []
    seconds: float = 0.0
    created_at: str = ""


@dataclass(frozen=True)
class _Model:
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
) -> BatchOutcome:
    started = time.perf_counter()
    batch = layout.parse_batch_key(key)
    if batch is None:
        return BatchOutcome(status="ignored", reason=f"{key} is not a batch file")
    dataset, source = batch.dataset, s3_uri(raw_bucket, key)
    try:
        model = _live_model(store, registry, dataset)
        id_column = _id_column(store, raw_bucket, dataset)
        prefix = layout.predictions_prefix(dataset, key, model.version)
        parts, rows = _score_file(
            store, raw_bucket, key, model.scoring, id_column, artifacts_bucket, prefix, chunk_rows
        )
    except BatchError as error:
        outcome = BatchOutcome(
            status="rejected",
            reason=str(error),
            dataset=dataset,
            source=source,
            seconds=round(time.perf_counter() - started, 3),
            created_at=_now(),
        )
        errors = f"{dataset}/predictions/{key.split('/', 2)[2]}/_error.json"
        store.put_bytes(artifacts_bucket, errors, outcome.model_dump_json(indent=2).encode())
        return outcome
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
    )
    manifest = outcome.model_dump_json(indent=2).encode()
    store.put_bytes(artifacts_bucket, f"{prefix}_manifest.json", manifest)  # last: complete
    return outcome


def _live_model(store: ObjectStore, registry: ModelRegistry, dataset: str) -> _Model:
    live = registry.live(dataset)
    if live is None:
        raise BatchError(f"dataset '{dataset}' has no live model to score with")
    card = ModelCard.model_validate_json(store.get_bytes(*parse_s3_uri(live.card_uri)))
    onnx = store.get_bytes(*parse_s3_uri(live.model_uri))
    try:
        scoring = ScoringModel(onnx, card, expected_sha256=live.sha256)
    except ModelIntegrityError as error:
        raise BatchError(f"the live model version {live.version} is refused: {error}") from None
    return _Model(version=live.version, scoring=scoring)


def _id_column(store: ObjectStore, raw_bucket: str, dataset: str) -> str | None:
    """The contract's id column, carried into the predictions so rows can be joined back."""
    key = layout.contract_key(dataset)
    if store.head(raw_bucket, key) is None:
        return None
    try:
        return parse_contract(store.get_bytes(raw_bucket, key), source=key).id_column
    except ContractError:
        return None  # the live model was trained under a valid contract; rows keep ROW_COLUMN


def _score_file(
    store: ObjectStore,
    bucket: str,
    key: str,
    model: ScoringModel,
    id_column: str | None,
    out_bucket: str,
    prefix: str,
    chunk_rows: int,
) -> tuple[list[str], int]:
    card = model.card
    with tempfile.TemporaryDirectory(prefix="sluice-batch-") as tmp:
        local = Path(tmp) / "input"
        store.download(bucket, key, local)
        parts: list[str] = []
        offset = 0
        for chunk in _chunks(local, key, card, id_column, chunk_rows):
            missing = [f.name for f in card.features if f.name not in chunk.column_names]
            if missing:
                raise BatchError(
                    f"{key}: the model needs the columns {missing}; the file has "
                    f"{chunk.column_names}"
                )
            table = _predictions(model, chunk, offset, id_column)
            part = f"{prefix}part-{len(parts):05d}.parquet"
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            store.put_bytes(
                out_bucket, part, sink.getvalue().to_pybytes(), "application/vnd.apache.parquet"
            )
            parts.append(part)
            offset += chunk.num_rows
        if offset == 0:
            raise BatchError(f"{key}: the file holds no rows")
        return parts, offset


def _chunks(
    path: Path, key: str, card: ModelCard, id_column: str | None, chunk_rows: int
) -> Iterator[pa.Table]:
    try:
        if key.lower().endswith(".parquet"):
            parquet = pq.ParquetFile(path)
            for record_batch in parquet.iter_batches(batch_size=chunk_rows):
                yield pa.Table.from_batches([record_batch])
            return
        types: dict[str, pa.DataType] = {
            f.name: pa.float64() if f.kind is FeatureKind.NUMERIC else pa.string()
            for f in card.features
        }
        if id_column:
            types[id_column] = pa.string()
        reader = pacsv.open_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, encoding="utf8"),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=sorted(NULL_TOKENS), strings_can_be_null=True
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


def _predictions(
    model: ScoringModel, chunk: pa.Table, offset: int, id_column: str | None
) -> pa.Table:
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
    if id_column and id_column in chunk.column_names:
        out[id_column] = chunk.column(id_column).cast(pa.string())
    if card.task == "classification":
        assert scores.codes is not None and scores.probabilities is not None
        out["label"] = pa.array([model.labels[code] for code in scores.codes])
        for i, name in enumerate(card.classes or []):
            out[f"p_{name}"] = pa.array(scores.probabilities[:, i])
    else:
        assert scores.values is not None
        out["value"] = pa.array(scores.values)
    return pa.table(out)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
