"""One data object becomes one dataset *part*, once: its rows typed, cleaned, deduplicated
within the file and split, written with each row's hash, plus the sorted index of those hashes
and a record of its counts and profile (docs/decisions.md, "Per-file parts").

A part is named by what decides its bytes: the object (key, ETag, version), the contract's
data fields (``Contract.data_digest``) and the column roles it was built under (the *pin*). The
record, ``part.json``, is written last: a part without it is built again. A refused object gets
``rejected.json`` instead and is never read again.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from functions.preprocess.cleaning import (
    SPLITS,
    BatchCleaner,
    Deduplicator,
    RowIssues,
    RuleCount,
    assign_splits,
    infer_features,
)
from functions.preprocess.profile import (
    PROFILE_ROWS,
    NumericState,
    ProfileState,
    category_counts,
)
from functions.preprocess.reader import (
    BLOCK_BYTES,
    HEADER_BYTES,
    UnreadableFileError,
    iter_batches,
    parse_header,
    prefetched,
    read_header,
)
from functions.shared import layout
from functions.shared.contract import Contract, FeatureKind
from functions.shared.features import ColumnRole, DatasetSchema, FeatureSpec
from functions.shared.manifest import RowCounts, SourceFile, Violation
from functions.shared.row_hash import ROW_HASH
from functions.shared.storage import ObjectInfo, ObjectStore

PART_FORMAT = 1

GIB = 1024**3
RELEASE_EVERY = 32  # batches (of 4 MB) between returns of Arrow's freed memory
WRITES_AHEAD = 2  # row groups waiting for the writer thread at most
ROW_GROUP_ROWS = 65_536  # a part file's row groups (PROFILE_ROWS reads four at a time)


class Policy(BaseModel):
    """Dataset-level limits; documented in docs/decisions.md."""

    min_rows: int = 100
    min_class_count: int = 10
    max_rejected_fraction: float = 0.05
    # One data object, checked from its S3 size before it is downloaded; the function's /tmp
    # (infra/aws/ingest.py) holds it plus the part being written. A processing job's instance
    # takes far more (part_job.JobLimits).
    max_upload_bytes: int = GIB
    # What one preprocess invocation reads of objects without a part; an upload that needs more
    # goes to a processing job when one can be started (docs/decisions.md, "Parts past one
    # Lambda"): 2 GiB is under 40 s at the measured 60 MB/s (13 MB/s before the Arrow-native
    # preprocess: under 3 minutes), far inside 15.
    max_read_bytes: int = 2 * GIB
    # A part's rows are read this many CSV bytes at a time (its layout does not depend on it;
    # the pin always comes from the first BLOCK_BYTES); a processing job reads less at a time
    # to hold a big file's row hashes in its memory (part_job.JobLimits)
    read_block_bytes: int = BLOCK_BYTES


class Roles(BaseModel):
    """What one object's first rows say each column is; the pin is the lowest key's."""

    features: list[FeatureSpec] = Field(default_factory=list)
    roles: list[ColumnRole] = Field(default_factory=list)
    readable: bool = True

    @property
    def sha(self) -> str:
        """What a part's bytes depend on: each feature's name and kind and each column's use,
        not the reasons (they quote the inferring file's counts, so another file with the same
        roles must not rebuild every part)."""
        body = json.dumps(
            [
                [[f.name, f.kind.value] for f in self.features],
                [[r.column, r.use, r.kind.value if r.kind else None] for r in self.roles],
            ]
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]


class StoredIssue(BaseModel):
    rule: str
    column: str | None = None
    message: str
    count: int
    examples: list[dict[str, object]] = Field(default_factory=list)


class PartSummary(BaseModel):
    """A part's record less its profile: what a version's state keeps of each of its parts."""

    part_id: str
    format: int = PART_FORMAT
    data_digest: str
    roles_sha: str
    source: SourceFile
    rows: RowCounts  # duplicates_dropped: within the file
    issues: list[StoredIssue] = Field(default_factory=list)
    classes: dict[str, int] = Field(default_factory=dict)  # accepted rows per class (matched)
    spellings: dict[str, dict[str, int]] = Field(default_factory=dict)
    numeric_categories: list[str] = Field(default_factory=list)
    extremes: dict[str, tuple[float, float]] = Field(default_factory=dict)
    split_keys: dict[str, str]
    index_key: str


class PartRecord(PartSummary):
    """``part.json``: the summary plus the train rows' mergeable profile."""

    profile: dict[str, Any]

    def summary(self) -> PartSummary:
        return PartSummary.model_validate(self.model_dump(exclude={"profile"}))


class RefusedPart(BaseModel):
    """``rejected.json``: the object broke a file rule; ``rows`` of it had been read."""

    violations: list[Violation]
    rows: int = 0


def object_id(data_digest: str, source: ObjectInfo) -> str:
    body = json.dumps([data_digest, source.key, source.etag, source.version_id or ""])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def part_id(data_digest: str, roles_sha: str, source: ObjectInfo) -> str:
    body = json.dumps(
        [PART_FORMAT, data_digest, roles_sha, source.key, source.etag, source.version_id or ""]
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def issues_of(stored: list[StoredIssue]) -> RowIssues:
    issues = RowIssues()
    for entry in stored:
        issues._counts[(entry.rule, entry.column)] = RuleCount(
            entry.rule, entry.column, entry.message, entry.count, list(entry.examples)
        )
    return issues


def row_violations(issues: RowIssues) -> list[Violation]:
    return [
        Violation(
            rule=e.rule,
            column=e.column,
            count=e.count,
            examples=e.examples,
            message=f"{e.count} row(s) dropped: {e.column}: {e.message}",
        )
        for e in issues.entries()
    ]


def header_violations(
    contract: Contract, key: str, header: list[str], known_features: list[str] | None = None
) -> list[Violation]:
    """File rules about a header: names present, unique, the contract's columns there.

    Any other text is a name (``a b``, ``revenu €``, ``label``): the model graph spells it its
    own way (``features.onnx_input_name``). A name of only whitespace is no name, and names
    that differ only in surrounding whitespace (``a`` and `` a ``) are duplicates: a person
    cannot tell them apart in a request or a report.
    """
    problems = []
    unnamed = [i + 1 for i, name in enumerate(header) if not name.strip()]
    if unnamed:
        problems.append(
            Violation(
                rule="empty_column_name",
                file=key,
                message=f"{key}: header column(s) {unnamed} (1-based) have no name (empty or "
                "only whitespace); an unnamed first column is often a saved row index",
            )
        )
    dupes = sorted({c for c in header if c.strip() and header.count(c) > 1})
    if dupes:
        problems.append(
            Violation(
                rule="duplicate_column",
                file=key,
                column=dupes[0],
                message=f"{key}: duplicated column names {dupes}",
            )
        )
    spellings: dict[str, set[str]] = {}
    for name in header:
        if name.strip():
            spellings.setdefault(name.strip(), set()).add(name)
    for names in (sorted(s) for s in spellings.values() if len(s) > 1):
        problems.append(
            Violation(
                rule="duplicate_column",
                file=key,
                column=names[0],
                message=f"{key}: column names {names} differ only in surrounding whitespace; "
                "rename one of them",
            )
        )
    for col in contract.required_columns():
        if col not in header:
            rule = "target_missing" if col == contract.target else "missing_column"
            problems.append(
                Violation(
                    rule=rule,
                    file=key,
                    column=col,
                    message=f"{key}: required column '{col}' is missing",
                )
            )
    for col in contract.unexpected_columns(header):
        if not col:
            continue
        problems.append(
            Violation(
                rule="unexpected_column",
                file=key,
                column=col,
                message=f"{key}: column '{col}' is not in the contract's features",
            )
        )
    if known_features is not None:
        absent = sorted(set(known_features) - set(header))
        if absent and not problems:
            problems.append(
                Violation(
                    rule="missing_column",
                    file=key,
                    column=absent[0],
                    message=f"{key}: lacks feature columns {absent} "
                    "that other files of the dataset have",
                )
            )
    return problems


def too_large_violations(
    store: ObjectStore, contract: Contract, sources: list[ObjectInfo], cap: int
) -> list[Violation]:
    """Files over the size cap, refused from their size alone; a CSV's header is still read,
    with a ranged GET of its first bytes, so the report also says whether its columns fit."""
    found = []
    for source in sources:
        columns = "its columns were not checked (a Parquet schema sits at the end of the file)"
        header_problems: list[Violation] = []
        if not source.key.lower().endswith(".parquet"):
            head = store.read_head(
                source.bucket, source.key, HEADER_BYTES + 1, version_id=source.version_id
            )
            try:
                header_problems = header_violations(contract, source.key, parse_header(head))
                columns = (
                    "its header also breaks the rules below"
                    if header_problems
                    else "its header has the contract's columns"
                )
            except UnreadableFileError as exc:
                header_problems = [
                    Violation(
                        rule="unreadable_file",
                        file=source.key,
                        message=f"{source.key}: {exc}",
                    )
                ]
                columns = "its first bytes are not a CSV header either (below)"
        found.append(
            Violation(
                rule="file_too_large",
                file=source.key,
                message=f"{source.key}: {size_text(source.size)} ({source.size} bytes) is over "
                f"the {size_text(cap)} limit for one data file, so it was not downloaded; split "
                f"it into several files under the same data/ folder; {columns}",
            )
        )
        found.extend(header_problems)
    return found


def size_text(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def release_memory() -> None:
    """Give back what Arrow's allocator keeps of freed memory: a big file's peak is then its row
    hashes plus what one batch needs, not plus what every batch left."""
    pa.default_memory_pool().release_unused()


def infer_roles(contract: Contract, local: Path, key: str) -> Roles:
    """The roles one object's header and first batch give (``infer_features``); unreadable
    when the header breaks a rule or no batch can be read."""
    try:
        header = read_header(local)
        if header_violations(contract, key, header):
            return Roles(readable=False)
        found = None
        for batch in iter_batches(local, header, BLOCK_BYTES):  # the pin's rows: fixed
            features, roles = infer_features(contract, header, batch.frame)
            found = Roles(features=features, roles=roles)
            break
        release_memory()  # the reader's read-ahead, now closed
        if found is not None:
            return found
    except UnreadableFileError:
        pass
    return Roles(readable=False)


def schema_for(
    contract: Contract,
    features: list[FeatureSpec],
    roles: list[ColumnRole],
    dataset: str,
    version: str,
    classes: list[str] | None = None,
) -> DatasetSchema:
    """A version's schema (validated: the dataset rules have passed), from its features and
    classes."""
    return DatasetSchema(
        dataset=dataset,
        dataset_version=version,
        task=contract.task,
        target=contract.target,
        metric=contract.metric,
        features=features,
        classes=classes,
        id_column=contract.id_column,
        sensitive=contract.sensitive,
        columns=roles,
    )


def profiling_schema(contract: Contract, pin: Roles, dataset: str) -> DatasetSchema:
    """What a part's rows are profiled by: the pin's features and the target. Built before
    the dataset rules have run, so unvalidated: a pin may have no feature yet (the version is
    then refused, ``no_features``) and a classifier's classes are not known."""
    return DatasetSchema.model_construct(
        dataset=dataset,
        dataset_version="",
        task=contract.task,
        target=contract.target,
        metric=contract.metric,
        features=pin.features,
        classes=None,
        id_column=contract.id_column,
        sensitive=contract.sensitive,
        columns=pin.roles,
    )


def arrow_schema(contract: Contract, features: list[FeatureSpec], hashed: bool) -> pa.Schema:
    """A split file's columns: features, target, id and sensitive columns, as a request sends
    them (booleans and dates as text), then the row hash when ``hashed``."""
    fields = []
    for spec in features:
        kind = pa.float64() if spec.kind is FeatureKind.NUMERIC else pa.string()
        fields.append(pa.field(spec.name, kind))
    target_type = pa.string() if contract.task == "classification" else pa.float64()
    fields.append(pa.field(contract.target, target_type))
    if contract.id_column:
        fields.append(pa.field(contract.id_column, pa.string()))
    names = {f.name for f in fields}
    fields.extend(pa.field(s, pa.string()) for s in contract.sensitive if s not in names)
    if hashed:
        fields.append(pa.field(ROW_HASH, pa.uint64()))
    return pa.schema(fields)


@dataclass
class Rows:
    """Rows of a part: per split, per class, and the train rows' profile."""

    per_split: dict[str, int]
    classes: dict[str, int]
    profile: ProfileState


def rows_of(
    files: dict[str, Path],
    schema: DatasetSchema,
    keep: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None = None,
) -> Rows:
    """Counts and train profile of the rows of split ``files`` whose hash ``keep`` selects
    (all rows when ``keep`` is None)."""
    per_split = dict.fromkeys(SPLITS, 0)
    classes: dict[str, int] = {}
    profile = None
    columns = [*(s.name for s in schema.features), schema.target]
    for split, path in files.items():
        table = pq.read_table(path, columns=[*dict.fromkeys([*columns, ROW_HASH])])
        if keep is not None:
            table = table.filter(pa.array(keep(table.column(ROW_HASH).to_numpy())))
        per_split[split] += table.num_rows
        if schema.task == "classification":
            for label, count in category_counts(table.column(schema.target)).items():
                classes[label] = classes.get(label, 0) + count
        if split == "train":
            profile = ProfileState.from_table(table, schema)
    profile = empty_profile(schema) if profile is None else profile
    return Rows(per_split=per_split, classes=classes, profile=profile)


def empty_profile(schema: DatasetSchema) -> ProfileState:
    """The profile state of no rows: a part or version with an empty train split."""
    fields = [
        pa.field(s.name, pa.float64() if s.kind is FeatureKind.NUMERIC else pa.string())
        for s in schema.features
    ]
    target = pa.string() if schema.task == "classification" else pa.float64()
    table = pa.schema([*fields, pa.field(schema.target, target)]).empty_table()
    return ProfileState.from_table(table, schema)


@dataclass
class Built:
    """The outcome of building one part: its record, or its refusal."""

    source: ObjectInfo
    part_id: str
    record: PartRecord | None = None
    refused: RefusedPart | None = None
    local: dict[str, Path] = field(default_factory=dict)  # split files still on disk
    index: np.ndarray[Any, Any] | None = None
    index_file: Path | None = None  # the index as NPY on disk, uploaded without a copy


class PartBuilder:
    """Builds one part on local disk from one downloaded object, batch by batch."""

    def __init__(
        self,
        contract: Contract,
        pin: Roles,
        dataset: str,
        pid: str,
        work: Path,
        policy: Policy,
        progress: Callable[[int, int], None] = lambda done, rows: None,
    ) -> None:
        self.contract = contract
        self.pin = pin
        self.dataset = dataset
        self.part_id = pid
        self.work = work
        self.policy = policy
        self.progress = progress
        carried = [r for r in pin.roles if r.use == "excluded"]
        self.cleaner = BatchCleaner(contract, pin.features, carried)
        self.dedup = Deduplicator()
        self.issues = RowIssues()
        self.writers: dict[str, pq.ParquetWriter] = {}
        # Row groups are encoded and compressed on a thread of their own (Arrow releases the GIL
        # there), in the order written, while the next batch is cleaned; at most WRITES_AHEAD
        # wait, so memory stays a few row groups.
        self.writes: deque[Future[None]] = deque()
        self.profiles: deque[Future[None]] = deque()
        # The train rows' profile, PROFILE_ROWS at a time as they are written (the chunks
        # ProfileState.from_parquet reads the file in, so the state is the one it gives), on
        # a thread of its own, in order: the split file is never read back.
        self.profiling_schema = profiling_schema(contract, pin, dataset)
        self.profiling: list[pa.Table] = []
        self.profiling_rows = 0
        self.profile: ProfileState | None = None
        self.held: dict[str, list[pa.Table]] = {}  # rows not yet a whole row group, by split
        self.held_rows: dict[str, int] = {}
        self.split_rows = dict.fromkeys(SPLITS, 0)
        self.classes: dict[str, int] = {}
        self.duplicates = 0
        self.rows = 0

    def build(self, local: Path, source: ObjectInfo, sha: str) -> Built:
        try:
            header = read_header(local)
            known = [f.name for f in self.pin.features]
            problems = header_violations(self.contract, source.key, header, known)
            if not problems:
                with (
                    ThreadPoolExecutor(1, thread_name_prefix="sluice-part-writer") as writing,
                    ThreadPoolExecutor(1, thread_name_prefix="sluice-part-profiler") as profiling,
                ):
                    self._read(local, header, source, writing, profiling)
                problems = self._file_row_checks(source.key)
        except UnreadableFileError as exc:
            problems = [
                Violation(rule="unreadable_file", file=source.key, message=f"{source.key}: {exc}")
            ]
        finally:
            for writer in self.writers.values():
                writer.close()
        self.progress(source.size, self.rows)
        if problems:
            return Built(
                source, self.part_id, refused=RefusedPart(violations=problems, rows=self.rows)
            )
        return self._record(source, sha)

    def _read(
        self,
        local: Path,
        header: list[str],
        source: ObjectInfo,
        writing: ThreadPoolExecutor,
        profiling: ThreadPoolExecutor,
    ) -> None:
        """Every batch of the file into the split files: the next batch parsed on one thread
        and row groups written on another while this one cleans (both cores busy)."""
        self._writing, self._profiling = writing, profiling
        try:
            block = self.policy.read_block_bytes if local.suffix == ".csv" else 0
            batches = prefetched(iter_batches(local, header, self.policy.read_block_bytes))
            for number, batch in enumerate(batches, start=1):
                self.rows += batch.records.num_rows
                self._add_batch(batch.records, source.key, batch.first_row)
                self.progress(min(source.size, number * block), self.rows)
                if number % RELEASE_EVERY == 0:
                    release_memory()
            self._flush_all()
            if self.profiling_rows:
                self._profile_ahead(self.profiling_rows)
        finally:
            for pending in (self.writes, self.profiles):
                while pending:  # every write done (its error raised) before the files close
                    pending.popleft().result()

    def _file_row_checks(self, key: str) -> list[Violation]:
        """A file with no rows, or too many bad ones, is the file's fault: it is left out."""
        if self.rows == 0:
            return [
                Violation(rule="empty_file", file=key, message=f"{key}: header but no data rows")
            ]
        if self.issues.total / self.rows <= self.policy.max_rejected_fraction:
            return []
        return [
            Violation(
                rule="too_many_rejected_rows",
                file=key,
                count=self.issues.total,
                message=f"{key}: {self.issues.total} of {self.rows} rows broke a rule "
                f"(more than {self.policy.max_rejected_fraction:.0%}); see the row rules below",
            ),
            *row_violations(self.issues),
        ]

    def _add_batch(self, batch: pa.RecordBatch, key: str, first_row: int) -> None:
        clean = self.cleaner.clean(batch, file=key, first_row=first_row, issues=self.issues)
        kept = np.flatnonzero(clean.keep)
        if not kept.size:
            return
        # Exact duplicates are rows equal in every column read, the ones left out included.
        hashes = clean.row_hashes(kept)
        fresh = self.dedup.fresh(hashes)
        self.duplicates += int((~fresh).sum())
        kept, hashes = kept[fresh], hashes[fresh]
        split_key = (
            clean.row_hashes(kept, [self.contract.id_column]) if self.contract.id_column else hashes
        )
        if self.contract.task == "classification":
            for label, count in clean.class_counts(kept):
                self.classes[label] = self.classes.get(label, 0) + count
        splits = assign_splits(split_key)
        columns = arrow_schema(self.contract, self.pin.features, hashed=False)
        schema = columns.append(pa.field(ROW_HASH, pa.uint64()))
        for index, name in enumerate(SPLITS):
            rows = kept[splits == index]
            if rows.size:
                # a table per split, not slices of one: a split's rows wait for a whole row
                # group (the smaller splits over several batches), and a slice would keep its
                # whole batch's buffers alive meanwhile
                table = clean.table(rows, columns)
                table = table.append_column(
                    schema.field(ROW_HASH), pa.array(hashes[splits == index])
                )
                self._write(name, schema, table)
                self.split_rows[name] += int(rows.size)

    def _write(self, split: str, schema: pa.Schema, table: pa.Table) -> None:
        """Rows of a split, written in row groups of exactly ``ROW_GROUP_ROWS`` (the last one
        shorter): a file's layout does not depend on how its source was cut into batches, and
        a big part has a few hundred row groups, not one per batch (the writer holds every
        row group's metadata until it closes)."""
        held = self.held.setdefault(split, [])
        held.append(table)
        self.held_rows[split] = self.held_rows.get(split, 0) + table.num_rows
        while self.held_rows[split] >= ROW_GROUP_ROWS:
            self._flush(split, schema, ROW_GROUP_ROWS)

    def _flush(self, split: str, schema: pa.Schema, rows: int) -> None:
        pending = pa.concat_tables(self.held.pop(split))
        writer = self._writer(split, schema)
        while len(self.writes) >= WRITES_AHEAD:
            self.writes.popleft().result()
        group = pending.slice(0, rows)
        self.writes.append(self._writing.submit(writer.write_table, group, row_group_size=rows))
        rest = pending.slice(rows)
        self.held[split] = [rest] if rest.num_rows else []
        self.held_rows[split] = rest.num_rows
        if split == "train":
            self.profiling.append(group)
            self.profiling_rows += group.num_rows
            if self.profiling_rows >= PROFILE_ROWS:
                self._profile_ahead(PROFILE_ROWS)

    def _profile_ahead(self, rows: int) -> None:
        """The next ``rows`` train rows profiled on the profiler's thread, in order."""
        chunk = pa.concat_tables(self.profiling)
        rest = chunk.slice(rows)
        self.profiling = [rest] if rest.num_rows else []
        self.profiling_rows = rest.num_rows
        while self.profiles:  # one chunk waits at most: a chunk holds PROFILE_ROWS rows
            self.profiles.popleft().result()
        self.profiles.append(self._profiling.submit(self._profile_chunk, chunk.slice(0, rows)))

    def _profile_chunk(self, chunk: pa.Table) -> None:
        state = ProfileState.from_table(chunk, self.profiling_schema)
        self.profile = state if self.profile is None else self.profile.merge(state)

    def _flush_all(self) -> None:
        for split in list(self.held):
            if self.held_rows.get(split):
                schema = self.held[split][0].schema
                self._flush(split, schema, self.held_rows[split])

    def _writer(self, split: str, schema: pa.Schema) -> pq.ParquetWriter:
        if split not in self.writers:
            path = self.work / f"{split}-{self.part_id}.parquet"
            # every row's hash, and an id, is nearly always distinct: a dictionary of them is
            # built, then thrown away for plain encoding, at a fifth of the write's time
            distinct = {ROW_HASH, self.contract.id_column}
            dictionary = [name for name in schema.names if name not in distinct]
            self.writers[split] = pq.ParquetWriter(
                path, schema, compression="zstd", use_dictionary=dictionary
            )
        return self.writers[split]

    def _record(self, source: ObjectInfo, sha: str) -> Built:
        files = {s: self.work / f"{s}-{self.part_id}.parquet" for s in self.writers}
        # the hashes of every row written, sorted and distinct: what deduplication kept
        index_file = self.work / f"rows-{self.part_id}.u64.npy"
        self.dedup.drain(index_file)
        # mapped, not read: the part's maker may never look at it (a processing job)
        index = np.load(index_file, mmap_mode="r", allow_pickle=False)
        release_memory()  # what parsing kept
        profile = self.profile or empty_profile(self.profiling_schema)
        extremes = {
            name: (state.min, state.max)
            for name, state in {**profile.features, "__target__": profile.target}.items()
            if isinstance(state, NumericState) and state.min is not None and state.max is not None
        }
        rejected: dict[str, int] = {}
        for entry in self.issues.entries():
            rejected[entry.rule] = rejected.get(entry.rule, 0) + entry.count
        record = PartRecord(
            part_id=self.part_id,
            data_digest=self.contract.data_digest(),
            roles_sha=self.pin.sha,
            source=SourceFile(
                key=source.key,
                etag=source.etag,
                version_id=source.version_id,
                size=source.size,
                sha256=sha,
                rows_read=self.rows,
            ),
            rows=RowCounts(
                read=self.rows,
                duplicates_dropped=self.duplicates,
                rejected=rejected,
                accepted=int(index.size),
                per_split=self.split_rows,
            ),
            issues=[StoredIssue(**vars(e)) for e in self.issues.entries()],
            classes=self.classes,
            spellings=self.cleaner.spellings,
            numeric_categories=sorted(self.cleaner.numeric_categories),
            extremes=extremes,
            split_keys={s: layout.part_split_key(self.dataset, self.part_id, s) for s in files},
            index_key=layout.part_index_key(self.dataset, self.part_id),
            profile=profile.to_dict(),
        )
        return Built(
            source, self.part_id, record=record, local=files, index=index, index_file=index_file
        )


def upload_part(store: ObjectStore, bucket: str, dataset: str, built: Built) -> None:
    """The part's files, then its record (or only its refusal): written last, it marks the part
    complete."""
    if built.refused is not None:
        store.put_bytes(
            bucket,
            layout.part_rejected_key(dataset, built.part_id),
            built.refused.model_dump_json(indent=2).encode(),
        )
        return
    assert built.record is not None and built.index is not None
    for split, path in built.local.items():
        store.upload(path, bucket, built.record.split_keys[split])
    if built.index_file is not None:
        store.upload(built.index_file, bucket, built.record.index_key)
    else:
        store.put_bytes(bucket, built.record.index_key, index_bytes(built.index))
    store.put_bytes(
        bucket,
        layout.part_record_key(dataset, built.part_id),
        built.record.model_dump_json().encode(),
    )


def index_bytes(index: np.ndarray[Any, Any]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, index.astype("<u8"), allow_pickle=False)
    return buffer.getvalue()


def read_index(raw: bytes, expected_rows: int, where: str) -> np.ndarray[Any, Any]:
    """A part's index, checked: NPY of 1-D little-endian uint64, strictly increasing, as many as
    the part's rows. Read in place over ``raw`` (no copy: an index is 8 bytes a row)."""
    import io

    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = header(stream)
    except ValueError as exc:
        raise ValueError(f"{where}: not an NPY file ({exc})") from None
    if dtype != np.dtype("<u8") or len(shape) != 1 or shape[0] != expected_rows or fortran:
        raise ValueError(
            f"{where}: not the part's index ({dtype}, shape {shape}, {expected_rows} rows expected)"
        )
    index: np.ndarray[Any, Any] = np.frombuffer(raw, dtype="<u8", offset=stream.tell())
    if index.size != expected_rows:
        raise ValueError(f"{where}: {index.size} hashes, {expected_rows} rows expected")
    if index.size > 1 and not bool(np.all(index[1:] > index[:-1])):
        raise ValueError(f"{where}: the row hashes are not strictly increasing")
    return index
