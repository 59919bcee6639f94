"""Streaming readers: a data file becomes a sequence of bounded pandas batches.

CSV cells are read as strings and typed later by the contract, so a bad cell is reported with
its row instead of failing the whole parse. Memory is bounded by the block size, not the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from functions.shared.errors import DataValidationError
from functions.shared.features import NULL_TOKENS

BLOCK_BYTES = 4 * 1024 * 1024
PARQUET_BATCH_ROWS = 200_000


class UnreadableFileError(DataValidationError):
    """The file cannot be parsed as the format its name says."""


@dataclass(frozen=True)
class Batch:
    frame: pd.DataFrame
    first_row: int  # 1-based data row number of the frame's first row (header not counted)


def read_header(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableFileError(f"not a readable Parquet file: {exc}") from None
    with path.open("rb") as fh:
        head = fh.readline(1024 * 1024)
    if not head.strip():
        raise UnreadableFileError("empty file: no header row")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(f"header is not UTF-8 text: {exc}") from None
    if "\x00" in text:
        raise UnreadableFileError("binary content where a CSV header was expected")
    names = next(csv.reader(io.StringIO(text)))
    return [n.strip() for n in names]


def iter_batches(path: Path, columns: list[str]) -> Iterator[Batch]:
    """Yield the file's rows in bounded batches; ``columns`` is its header from read_header."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_batches(path)
    else:
        yield from _csv_batches(path, columns)


def _csv_batches(path: Path, columns: list[str]) -> Iterator[Batch]:
    read = pacsv.ReadOptions(column_names=columns, skip_rows=1, block_size=BLOCK_BYTES)
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in columns},
        null_values=list(NULL_TOKENS),
        strings_can_be_null=True,
    )
    row = 1
    try:
        reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
        for record_batch in reader:
            frame = record_batch.to_pandas()
            yield Batch(frame=frame, first_row=row)
            row += len(frame)
    except pa.ArrowInvalid as exc:
        raise UnreadableFileError(f"CSV parse error after data row {row - 1}: {exc}") from None


def _parquet_batches(path: Path) -> Iterator[Batch]:
    row = 1
    try:
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            frame = record_batch.to_pandas()
            yield Batch(frame=frame, first_row=row)
            row += len(frame)
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableFileError(f"Parquet read error after data row {row - 1}: {exc}") from None
