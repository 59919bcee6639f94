"""Streaming readers: a data file becomes a sequence of bounded Arrow record batches.

CSV cells are read as strings and typed later by the contract, so a bad cell is reported with
its row instead of failing the whole parse. Memory is bounded by the block size, not the file.

A file that is not comma-separated UTF-8 text (another encoding, a compressed archive, another
delimiter, binary bytes) is refused with a message that says what it looks like and where, so the
person who uploaded it knows what to change (docs/decisions.md, "Bad uploads").
"""

from __future__ import annotations

import csv
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from functions.shared.errors import DataValidationError
from functions.shared.features import NULL_TOKENS

BLOCK_BYTES = 4 * 1024 * 1024
PARSE_BLOCK_BYTES = 1024 * 1024  # what Arrow parses at a time; batches join BLOCK_BYTES of them
PARQUET_BATCH_ROWS = 200_000
HEADER_BYTES = 1024 * 1024  # the longest header line read; also what a ranged GET fetches
SCAN_BYTES = 8 * 1024 * 1024
# A quoted cell may hold line breaks (RFC 4180; pandas' to_csv and spreadsheets write them for
# multi-line text). Allowing them cost nothing measurable (20 MB: 0.10-0.17 s either way).
PARSE = pacsv.ParseOptions(newlines_in_values=True)

# What a file that is not CSV text starts with, and what to tell the uploader; consulted only
# once the header has been refused (a CSV column may well be called "PAR1").
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed; upload the uncompressed CSV"),
    (b"PK\x03\x04", "a zip archive; upload the CSV inside it, uncompressed"),
    (b"BZh", "bzip2-compressed; upload the uncompressed CSV"),
    (b"\xfd7zXZ\x00", "xz-compressed; upload the uncompressed CSV"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed; upload the uncompressed CSV"),
    (b"PAR1", "a Parquet file; name it .parquet"),
    (b"\xff\xfe\x00\x00", "UTF-32 text (byte-order mark FF FE 00 00); save it as UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (byte-order mark 00 00 FE FF); save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text (byte-order mark FF FE); save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text (byte-order mark FE FF); save it as UTF-8"),
)
_OTHER_DELIMITERS = {";": "';'", "\t": "tab", "|": "'|'"}
_ROW_NUMBER = re.compile(r"Row #(\d+)")
_COLUMN_NUMBER = re.compile(r"CSV column #(\d+)")


class UnreadableFileError(DataValidationError):
    """The file cannot be parsed as the format its name says."""


@dataclass(frozen=True)
class Batch:
    records: pa.RecordBatch  # a CSV's cells as text (nulls where a null token stood)
    first_row: int  # 1-based data row number of the batch's first row (header not counted)

    @property
    def frame(self) -> pd.DataFrame:
        """The batch as pandas reads it (inferring roles from a file's first batch)."""
        return self.records.to_pandas()


def read_header(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        try:
            schema = pq.ParquetFile(path).schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableFileError(f"not a readable Parquet file: {exc}") from None
        nested = [f"'{f.name}' ({f.type})" for f in schema if pa.types.is_nested(f.type)]
        if nested:
            raise UnreadableFileError(
                f"nested Parquet column(s) {', '.join(nested)}: sluice reads flat columns "
                "(numbers, text, booleans, dates); flatten or drop them"
            )
        return list(schema.names)
    with path.open("rb") as fh:
        head = fh.read(HEADER_BYTES + 1)
    return parse_header(head)


def parse_header(head: bytes) -> list[str]:
    """The column names on the first line of a CSV file, from the file's first bytes (at least
    ``HEADER_BYTES + 1`` of them, or all); raises UnreadableFileError saying what the bytes look
    like when they are not a CSV header."""
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) > HEADER_BYTES:
        _refuse(
            head,
            f"no end of the header line in the first {HEADER_BYTES // 1024} KiB: "
            "not a CSV file, or one without line breaks",
        )
    if not line.strip():
        _refuse(
            head,
            "empty file: no header row"
            if not head.strip()
            else "line 1 is blank: the header must be the first line",
        )
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _refuse(
            head,
            f"header (line 1) is not UTF-8 text: byte 0x{line[exc.start]:02x} at byte "
            f"{exc.start}; save the file as UTF-8 (was it Latin-1 or Windows-1252?)",
        )
    text = text.rstrip("\r")
    if "\r" in text:
        _refuse(head, "lines end in a bare CR (old Mac style): save the file with LF or CRLF")
    control = next((c for c in text if ord(c) < 32 and c != "\t"), None)
    if control is not None:
        _refuse(
            head,
            f"binary content where a CSV header was expected: byte 0x{ord(control):02x} "
            f"at character {text.index(control)} of line 1",
        )
    try:
        names = next(csv.reader([text]))
    except (csv.Error, StopIteration) as exc:
        _refuse(head, f"header (line 1) is not a CSV row: {exc}")
    if len(names) == 1:
        for delimiter, shown in _OTHER_DELIMITERS.items():
            if delimiter in names[0]:
                _refuse(
                    head,
                    f"the header (line 1) is one column holding {shown}: the file looks "
                    f"{shown}-separated; sluice reads comma-separated CSV",
                )
    return [n.strip() for n in names]


def _refuse(head: bytes, problem: str) -> NoReturn:
    for magic, looks_like in _SIGNATURES:
        if head.startswith(magic):
            raise UnreadableFileError(f"not CSV text: the file is {looks_like}")
    sample = head[:64]
    if len(sample) >= 8 and sample[1::2].count(0) == len(sample[1::2]):
        raise UnreadableFileError("not CSV text: the file looks UTF-16 encoded; save it as UTF-8")
    raise UnreadableFileError(problem)


def iter_batches(path: Path, columns: list[str], block_bytes: int = BLOCK_BYTES) -> Iterator[Batch]:
    """Yield the file's rows in bounded batches; ``columns`` is its header from read_header.
    A CSV is parsed ``block_bytes`` at a time (what a batch holds, and what its memory is
    proportional to)."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_batches(path)
    else:
        yield from _csv_batches(path, columns, block_bytes)


def _csv_batches(path: Path, columns: list[str], block_bytes: int) -> Iterator[Batch]:
    """Batches of about ``block_bytes`` of the file, parsed ``PARSE_BLOCK_BYTES`` at a time and
    joined: Arrow's CSV parser holds some 35× its block in buffers (147 MB at 4 MiB, 36 MB at
    1 MiB, bench/preprocess.py), while a batch's work has a fixed cost that small batches
    repeat too often."""
    if not _has_rows(path):
        return
    _refuse_nul_bytes(path)
    parse_bytes = min(block_bytes, PARSE_BLOCK_BYTES)
    read = pacsv.ReadOptions(column_names=columns, skip_rows=1, block_size=parse_bytes)
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in columns},
        null_values=list(NULL_TOKENS),
        strings_can_be_null=True,
    )
    joined = max(1, block_bytes // parse_bytes)
    row = 1
    try:
        reader = pacsv.open_csv(
            path, read_options=read, parse_options=PARSE, convert_options=convert
        )
        parsed: list[pa.RecordBatch] = []
        for record_batch in reader:
            parsed.append(record_batch)
            if len(parsed) == joined:
                yield (batch := _joined(parsed, row))
                row += batch.records.num_rows
                parsed = []
        if parsed:
            yield _joined(parsed, row)
    except pa.ArrowInvalid as exc:
        raise UnreadableFileError(_describe_csv_error(path, columns, exc)) from None


def _joined(parsed: list[pa.RecordBatch], row: int) -> Batch:
    if len(parsed) == 1:
        return Batch(records=parsed[0], first_row=row)
    table = pa.Table.from_batches(parsed).combine_chunks()
    return Batch(records=table.to_batches()[0], first_row=row)


_T = TypeVar("_T")
_DONE = object()


def prefetched(items: Iterator[_T], depth: int = 1) -> Iterator[_T]:
    """``items``, with the next ``depth`` produced on a thread while the caller works on the
    current one: Arrow parses a CSV block with the GIL released, so reading the next batch
    runs on the other core while this one is cleaned. What ``items`` raises is raised here, in
    order; leaving the loop early stops the thread."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="sluice-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = handoff.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting to hand over
            try:
                handoff.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def _has_rows(path: Path) -> bool:
    """Whether anything follows the header line (Arrow refuses a file that is only a header
    without a line break; that file is empty, not unreadable)."""
    with path.open("rb") as fh:
        fh.readline()
        return bool(fh.read(1))


def _refuse_nul_bytes(path: Path) -> None:
    """NUL bytes are binary content, not text: refuse them instead of loading them as cells.
    The file is read a block at a time into one buffer and searched (memchr's speed: 0.06 s for
    300 MB); lines are counted, reading again, only to name the one a NUL byte is on. Not
    mapped: a mapped file's pages count in the process's resident memory as they are read."""
    block = bytearray(SCAN_BYTES)
    offset = 0
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(block):
            at = block.find(b"\x00", 0, size)
            if at >= 0:
                line = 1 + _lines_before(path, offset + at)
                raise UnreadableFileError(
                    f"binary content: NUL byte at line {line} (data row {line - 1}); "
                    "a CSV file is text"
                )
            offset += size


def _lines_before(path: Path, position: int) -> int:
    """Line breaks in the file before byte ``position``."""
    breaks = 0
    with path.open("rb") as fh:
        while position > 0 and (chunk := fh.read(min(SCAN_BYTES, position))):
            breaks += chunk.count(b"\n")
            position -= len(chunk)
    return breaks


def _describe_csv_error(path: Path, columns: list[str], exc: pa.ArrowInvalid) -> str:
    """Arrow's message with the line it is about: the streaming reader does not say, so the
    failure path reads the file again, serially, to find it."""
    message = str(exc)
    if "invalid UTF8" in message:
        line = _first_non_utf8_line(path)
        where = f" at line {line} (data row {line - 1})" if line else ""
        column = _COLUMN_NUMBER.search(message)
        if column and int(column.group(1)) < len(columns):
            where += f", column '{columns[int(column.group(1))]}'"
        return f"not UTF-8 text{where}; save the file as UTF-8 (was it Latin-1 or Windows-1252?)"
    if not _ROW_NUMBER.search(message):
        serial = pacsv.ReadOptions(
            column_names=columns, skip_rows=1, block_size=BLOCK_BYTES, use_threads=False
        )
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns})
        try:
            for _ in pacsv.open_csv(
                path, read_options=serial, parse_options=PARSE, convert_options=convert
            ):
                pass
        except pa.ArrowInvalid as again:
            message = str(again)
    found = _ROW_NUMBER.search(message)
    if found:
        line = int(found.group(1))
        detail = _ROW_NUMBER.sub("", message.removeprefix("CSV parse error: ")).lstrip(": ")
        return f"CSV parse error at line {line} (data row {line - 1}): {detail}"
    return f"CSV parse error: {message}"


def _first_non_utf8_line(path: Path) -> int | None:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _parquet_batches(path: Path) -> Iterator[Batch]:
    row = 1
    try:
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield Batch(records=record_batch, first_row=row)
            row += record_batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableFileError(f"Parquet read error after data row {row - 1}: {exc}") from None
