"""Preprocess: an uploaded data file becomes a validated, split, profiled dataset version and a
pipeline run, or a rejection report. The raw bucket is only ever read.

Idempotency comes from names, not a lock table: the dataset version id is a hash of the
contract and the exact source objects (key, ETag, version), and the run name is a hash of the
event's identity. A redelivered event finds its run already there and stops; a crash halfway
re-creates the same version, and the manifest, written last, marks a version as complete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from functions.preprocess.cleaning import (
    SPLIT_BOUNDS,
    SPLITS,
    BatchCleaner,
    Deduplicator,
    RowIssues,
    assign_splits,
    infer_features,
    row_hashes,
)
from functions.preprocess.models import UNCHANGED_NOTE, PreprocessOutcome, RejectionReport
from functions.preprocess.profile import build_profile
from functions.preprocess.reader import (
    BLOCK_BYTES,
    HEADER_BYTES,
    UnreadableFileError,
    iter_batches,
    parse_header,
    read_header,
)
from functions.shared import layout
from functions.shared.contract import Contract, FeatureKind, parse_contract
from functions.shared.errors import ContractError, DataValidationError
from functions.shared.features import MISSING_CATEGORY, ColumnRole, DatasetSchema, FeatureSpec
from functions.shared.manifest import ExcludedFile, Manifest, RowCounts, SourceFile, Violation
from functions.shared.orchestration import Orchestrator
from functions.shared.progress import Progress, report_progress
from functions.shared.registry import ModelRegistry
from functions.shared.runs import (
    data_sources,
    dataset_version_id,
    manifest_key,
    run_input,
)
from functions.shared.s3_events import UploadedObject
from functions.shared.storage import ObjectInfo, ObjectStore, s3_uri

RUN_NAME_LIMIT = 80  # Step Functions execution names
GIB = 1024**3


class Policy(BaseModel):
    """Dataset-level limits; documented in docs/decisions.md."""

    min_rows: int = 100
    min_class_count: int = 10
    max_rejected_fraction: float = 0.05
    # One data object, checked from its S3 size before it is downloaded; the function's /tmp
    # (infra/aws/ingest.py) holds it plus the splits being written.
    max_upload_bytes: int = GIB


class RejectedUploadError(DataValidationError):
    """No run: ``note``, when given, says what to do beyond fixing the violations."""

    def __init__(
        self, violations: list[Violation], rows_read: int = 0, note: str | None = None
    ) -> None:
        super().__init__("; ".join(v.message for v in violations))
        self.violations = violations
        self.rows_read = rows_read
        self.note = note


@dataclass(frozen=True)
class BuiltVersion:
    manifest: Manifest
    reused: bool


@dataclass(frozen=True)
class _LeftOut:
    """A data file refused for a fault of its own; ``rows`` of it had been read (and added to
    the version being built) before it was refused."""

    source: ObjectInfo
    violations: list[Violation]
    rows: int = 0


def process_upload(
    upload: UploadedObject,
    *,
    store: ObjectStore,
    orchestrator: Orchestrator,
    artifacts_bucket: str,
    policy: Policy | None = None,
    registry: ModelRegistry | None = None,
) -> PreprocessOutcome:
    """Turn one upload into a dataset version and start its run, or reject it with a report.

    ``registry`` is where retirements are read: an upload to a retired dataset is rejected
    with a report naming the retirement (the deployed function always passes it; benchmarks
    that have no registry pass none).
    """
    policy = policy or Policy()
    data_key = layout.parse_data_key(upload.key) or layout.parse_data_key(unquote_plus(upload.key))
    if data_key is None:
        return PreprocessOutcome(
            status="ignored",
            reason=f"'{upload.key}' is not a data file (<dataset>/data/*.csv|parquet)",
        )
    dataset = data_key.dataset
    current = store.head(upload.bucket, data_key.key)
    if current is None:
        return PreprocessOutcome(status="stale", dataset=dataset, reason="object no longer exists")
    if _superseded(upload, current):
        return PreprocessOutcome(
            status="stale",
            dataset=dataset,
            reason="a newer upload replaced this object; its own event will run",
        )

    run_name = make_run_name(dataset, upload.identity())
    if orchestrator.run_exists(run_name):
        return PreprocessOutcome(
            status="duplicate",
            dataset=dataset,
            run_name=run_name,
            reason="this upload already started a run",
        )
    try:
        _refuse_if_retired(registry, dataset)
        contract, contract_sha = _load_contract(store, upload.bucket, dataset)
        built = build_dataset_version(
            store,
            upload.bucket,
            dataset,
            contract,
            contract_sha,
            artifacts_bucket=artifacts_bucket,
            policy=policy,
            trigger_key=data_key.key,
        )
    except RejectedUploadError as rejected:
        report_key = layout.rejected_key(dataset, run_name)
        report = RejectionReport(
            dataset=dataset,
            run_name=run_name,
            trigger=upload,
            violations=rejected.violations,
            rows_read=rejected.rows_read,
            note=UNCHANGED_NOTE if rejected.note is None else f"{UNCHANGED_NOTE} {rejected.note}",
            created_at=_now(),
        )
        store.put_bytes(artifacts_bucket, report_key, report.model_dump_json(indent=2).encode())
        reason = "; ".join(v.message for v in rejected.violations[:3])
        return PreprocessOutcome(
            status="rejected",
            dataset=dataset,
            run_name=run_name,
            report_key=report_key,
            reason=reason if rejected.note is None else f"{reason}. {rejected.note}",
        )

    manifest = built.manifest
    run = run_input(run_name, manifest, contract, artifacts_bucket)
    started = orchestrator.start_run(run)
    reason = "pipeline run started" if started.started else "this upload already started a run"
    if manifest.excluded:
        reason += "; left out of the dataset: " + ", ".join(
            f"{f.key} ({f.rule}; report {f.report_key})" for f in manifest.excluded
        )
    return PreprocessOutcome(
        status="started" if started.started else "duplicate",
        dataset=dataset,
        run_name=run_name,
        run_id=started.run_id,
        dataset_version=manifest.dataset_version,
        reused_dataset_version=built.reused,
        rows=manifest.rows,
        excluded=manifest.excluded,
        reason=reason,
    )


def _refuse_if_retired(registry: ModelRegistry | None, dataset: str) -> None:
    retirement = None if registry is None else registry.retirement(dataset)
    if retirement is None:
        return
    raise RejectedUploadError(
        [
            Violation(
                rule="dataset_retired",
                message=f"dataset '{dataset}' was retired on {retirement.at.isoformat()} by "
                f"{retirement.actor} ({retirement.reason}); uploads are not processed. "
                f"Run `sluice retire {dataset} --undo --reason ...` to take it back into "
                "service; the file was kept",
            )
        ]
    )


def make_run_name(dataset: str, identity: str) -> str:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return f"{dataset[: RUN_NAME_LIMIT - 25]}-{digest}"


def build_dataset_version(
    store: ObjectStore,
    raw_bucket: str,
    dataset: str,
    contract: Contract,
    contract_sha: str,
    *,
    artifacts_bucket: str,
    policy: Policy,
    trigger_key: str | None = None,
) -> BuiltVersion:
    """The dataset version of every data file under ``<dataset>/data/``, less the files refused
    for a fault of their own, each with its report (docs/decisions.md, "One bad file").

    The version id names every file listed, the refused ones included: the same objects give the
    same version, with the same files left out. When ``trigger_key`` (the upload being
    processed) is itself refused, nothing is written and the upload is rejected with that
    file's violations. A file refused after some of its rows went into the version (a parse
    error deep in the file, too many bad rows) makes the version be read again without it.
    """
    sources = data_sources(store, raw_bucket, dataset)
    if not sources:
        raise RejectedUploadError(
            [Violation(rule="no_data", message=f"no CSV or Parquet files under {dataset}/data/")]
        )
    version = dataset_version_id(contract_sha, sources)
    if store.head(artifacts_bucket, manifest_key(dataset, version)) is not None:
        existing = Manifest.model_validate_json(
            store.get_bytes(artifacts_bucket, manifest_key(dataset, version))
        )
        _refuse_if_trigger_excluded(store, artifacts_bucket, existing.excluded, trigger_key)
        return BuiltVersion(manifest=existing, reused=True)
    left_out = {
        s.key: _LeftOut(s, _too_large(store, contract, [s], policy.max_upload_bytes))
        for s in sources
        if s.size > policy.max_upload_bytes
    }
    _refuse_if_trigger_left_out(left_out, trigger_key)

    with tempfile.TemporaryDirectory(prefix="sluice-preprocess-") as tmp:
        for attempt in itertools.count():
            included = [s for s in sources if s.key not in left_out]
            if not included:
                raise RejectedUploadError(
                    [
                        Violation(
                            rule="no_data",
                            message=f"no usable file under {dataset}/data/: each was left out "
                            "for the reasons below",
                        ),
                        *(v for f in left_out.values() for v in f.violations),
                    ]
                )
            work = Path(tmp) / f"read-{attempt}"
            work.mkdir()
            builder = _VersionBuilder(contract, dataset, version, work, policy)
            builder.bytes_total = sum(source.size for source in included)
            for source in included:
                builder.add_file(store, source)
            # Refused after some of their rows went in: read the version again without them.
            partly_read = {f.source.key: f for f in builder.left_out if f.rows}
            left_out.update(partly_read)
            _refuse_if_trigger_left_out(left_out, trigger_key)
            if not partly_read:
                break
            builder.discard()
            shutil.rmtree(work)
        left_out.update({f.source.key: f for f in builder.left_out})
        _refuse_if_trigger_left_out(left_out, trigger_key)
        excluded = _report_exclusions(store, artifacts_bucket, dataset, left_out.values())
        builder.finish(excluded)
        return BuiltVersion(
            manifest=builder.upload(store, artifacts_bucket, contract_sha, excluded),
            reused=False,
        )


def _what_to_do(bucket: str, key: str) -> str:
    """How to get past a refused data file: one sentence, with the command that deletes it."""
    return (
        f"{key} is left out of the dataset and later uploads are processed without it: "
        "upload a corrected file under the same key to replace it, or delete it with "
        f"`aws s3 rm {s3_uri(bucket, key)}` (sluice never changes or deletes raw data)"
    )


def _refuse_if_trigger_left_out(left_out: dict[str, _LeftOut], trigger_key: str | None) -> None:
    refused = None if trigger_key is None else left_out.get(trigger_key)
    if refused is not None:
        raise RejectedUploadError(
            refused.violations,
            rows_read=refused.rows,
            note=_what_to_do(refused.source.bucket, refused.source.key),
        )


def _refuse_if_trigger_excluded(
    store: ObjectStore, bucket: str, excluded: list[ExcludedFile], trigger_key: str | None
) -> None:
    """The same, for a version built before: the trigger's violations are in its report (or,
    that report gone, in the manifest's one line)."""
    entry = next((f for f in excluded if f.key == trigger_key), None)
    if entry is None:
        return
    if store.head(bucket, entry.report_key) is None:
        violations = [Violation(rule=entry.rule, file=entry.key, message=entry.message)]
        raise RejectedUploadError(violations)
    report = RejectionReport.model_validate_json(store.get_bytes(bucket, entry.report_key))
    raise RejectedUploadError(
        report.violations,
        rows_read=report.rows_read,
        note=_what_to_do(report.trigger.bucket, entry.key),
    )


def _report_exclusions(
    store: ObjectStore, bucket: str, dataset: str, left_out: Iterable[_LeftOut]
) -> list[ExcludedFile]:
    """One rejection report per refused file, filed under a name derived from the object
    version (the same bad file left out again rewrites its report, never adds one)."""
    excluded = []
    for refused in sorted(left_out, key=lambda f: f.source.key):
        source = refused.source
        this_file = UploadedObject(
            bucket=source.bucket,
            key=source.key,
            size=source.size,
            etag=source.etag,
            version_id=source.version_id,
        )
        name = make_run_name(dataset, this_file.identity())
        report_key = layout.rejected_key(dataset, name)
        action = _what_to_do(source.bucket, source.key)
        report = RejectionReport(
            dataset=dataset,
            run_name=name,
            trigger=this_file,
            decision="excluded",
            violations=refused.violations,
            rows_read=refused.rows,
            note=f"{action}. The raw file was not modified.",
            created_at=_now(),
        )
        store.put_bytes(bucket, report_key, report.model_dump_json(indent=2).encode())
        first = refused.violations[0]
        excluded.append(
            ExcludedFile(
                key=source.key,
                etag=source.etag,
                version_id=source.version_id,
                size=source.size,
                rule=first.rule,
                message=f"{first.message}; {action}",
                report_key=report_key,
            )
        )
    return excluded


def _too_large(
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
                header_problems = _header_violations(contract, source.key, parse_header(head))
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
                message=f"{source.key}: {_size(source.size)} ({source.size} bytes) is over the "
                f"{_size(cap)} limit for one data file, so it was not downloaded; split it into "
                f"several files under the same data/ folder; {columns}",
            )
        )
        found.extend(header_problems)
    return found


def _size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _header_violations(
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


class _VersionBuilder:
    """Accumulates one dataset version on local disk, file by file and batch by batch; a file
    refused for a fault of its own is left out (``left_out``), its rows and issues not counted."""

    def __init__(
        self, contract: Contract, dataset: str, version: str, work: Path, policy: Policy
    ) -> None:
        self.contract = contract
        self.dataset = dataset
        self.version = version
        self.work = work
        self.policy = policy
        self.left_out: list[_LeftOut] = []
        self.issues = RowIssues()
        self.dedup = Deduplicator()
        self.sources: list[SourceFile] = []
        self.features: list[FeatureSpec] | None = None
        self.roles: list[ColumnRole] = []
        self.cleaner: BatchCleaner | None = None
        self._profile: dict[str, Any] | None = None
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.split_rows = dict.fromkeys(SPLITS, 0)
        self.rows_read = 0
        self.duplicates = 0
        self.bytes_total = 0  # of every file this version reads: the progress records' total
        self.bytes_read = 0  # of the files read to their end
        self.started = time.perf_counter()

    # -- reading -------------------------------------------------------------------------
    def add_file(self, store: ObjectStore, source: ObjectInfo) -> None:
        local = self.work / f"src-{len(self.sources)}{Path(source.key).suffix.lower()}"
        sha = store.download(source.bucket, source.key, local, version_id=source.version_id)
        issues = RowIssues()  # this file's, counted in the version's once the file is accepted
        rows = 0
        try:
            header = read_header(local)
            known = None if self.features is None else [f.name for f in self.features]
            problems = _header_violations(self.contract, source.key, header, known)
            if not problems:
                # A CSV batch is one block of the file; a Parquet file's bytes count once read
                block = BLOCK_BYTES if local.suffix == ".csv" else 0
                for number, batch in enumerate(iter_batches(local, header), start=1):
                    rows += len(batch.frame)
                    self._add_batch(batch.frame, header, source.key, batch.first_row, issues)
                    self._progress(min(source.size, number * block), rows)
                problems = self._file_row_checks(source.key, rows, issues)
        except UnreadableFileError as exc:
            problems = [
                Violation(rule="unreadable_file", file=source.key, message=f"{source.key}: {exc}")
            ]
        finally:
            local.unlink(missing_ok=True)
        self.bytes_read += source.size
        if problems:
            self.left_out.append(_LeftOut(source, problems, rows))
            self._progress(0, 0)
            return
        self.rows_read += rows
        self.issues.merge(issues)
        self._progress(0, 0)
        self.sources.append(
            SourceFile(
                key=source.key,
                etag=source.etag,
                version_id=source.version_id,
                size=source.size,
                sha256=sha,
                rows_read=rows,
            )
        )

    def _file_row_checks(self, key: str, rows: int, issues: RowIssues) -> list[Violation]:
        """A file with no rows, or too many bad ones, is the file's fault: it is left out."""
        if rows == 0:
            return [
                Violation(rule="empty_file", file=key, message=f"{key}: header but no data rows")
            ]
        if issues.total / rows <= self.policy.max_rejected_fraction:
            return []
        return [
            Violation(
                rule="too_many_rejected_rows",
                file=key,
                count=issues.total,
                message=f"{key}: {issues.total} of {rows} rows broke a rule "
                f"(more than {self.policy.max_rejected_fraction:.0%}); see the row rules below",
            ),
            *_row_violations(issues),
        ]

    def _progress(self, bytes_of_this_file: int, rows_of_this_file: int) -> None:
        read = self.bytes_read + bytes_of_this_file
        rows = self.rows_read + rows_of_this_file
        report_progress(
            Progress(
                step="preprocess",
                dataset=self.dataset,
                done=read,
                total=self.bytes_total,
                unit="bytes",
                detail=f"{rows:,} rows, {_size(read)} of {_size(self.bytes_total)} read",
                elapsed_seconds=round(time.perf_counter() - self.started, 1),
            )
        )

    def _add_batch(
        self, frame: pd.DataFrame, header: list[str], key: str, first_row: int, issues: RowIssues
    ) -> None:
        if self.features is None:
            self.features, self.roles = infer_features(self.contract, header, frame)
            carried = [r for r in self.roles if r.use == "excluded"]
            self.cleaner = BatchCleaner(self.contract, self.features, carried)
        assert self.cleaner is not None
        clean = self.cleaner.clean(frame, file=key, first_row=first_row, issues=issues)
        if clean.empty:
            return
        # Exact duplicates are rows equal in every column read, the ones left out included.
        hashes = row_hashes(clean, list(clean.columns))
        fresh = self.dedup.fresh(hashes)
        self.duplicates += int((~fresh).sum())
        clean, hashes = clean[fresh].reset_index(drop=True), hashes[fresh]
        clean = clean.drop(columns=[r.column for r in self.cleaner.carried])
        split_key = (
            row_hashes(clean, [self.contract.id_column]) if self.contract.id_column else hashes
        )
        splits = assign_splits(split_key)
        for index, name in enumerate(SPLITS):
            part = clean[splits == index]
            if len(part):
                self._writer(name).write_table(
                    pa.Table.from_pandas(part, schema=self._arrow_schema(), preserve_index=False)
                )
                self.split_rows[name] += len(part)

    def _arrow_schema(self) -> pa.Schema:
        assert self.features is not None
        fields = []
        for spec in self.features:
            # Booleans and dates are stored as text, as a request sends them.
            kind = pa.float64() if spec.kind is FeatureKind.NUMERIC else pa.string()
            fields.append(pa.field(spec.name, kind))
        target_type = pa.string() if self.contract.task == "classification" else pa.float64()
        fields.append(pa.field(self.contract.target, target_type))
        if self.contract.id_column:
            fields.append(pa.field(self.contract.id_column, pa.string()))
        names = {f.name for f in fields}
        fields.extend(pa.field(s, pa.string()) for s in self.contract.sensitive if s not in names)
        return pa.schema(fields)

    def _writer(self, split: str) -> pq.ParquetWriter:
        if split not in self.writers:
            path = self.work / split / "part-0.parquet"
            path.parent.mkdir(exist_ok=True)
            self.writers[split] = pq.ParquetWriter(path, self._arrow_schema(), compression="zstd")
        return self.writers[split]

    # -- dataset-level checks --------------------------------------------------------------
    def discard(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def finish(self, excluded: list[ExcludedFile]) -> None:
        """Dataset rules over the files accepted; a refusal also lists the files left out."""
        self.discard()
        violations = self._dataset_checks(self.policy)
        if violations:
            violations.extend(_row_violations(self.issues))
            violations.extend(
                Violation(rule=f.rule, file=f.key, message=f.message) for f in excluded
            )
            raise RejectedUploadError(violations, rows_read=self.rows_read)

    def _dataset_checks(self, policy: Policy) -> list[Violation]:
        found: list[Violation] = []
        if not self.features:
            found.append(
                Violation(
                    rule="no_features",
                    message="no column can be a feature: "
                    + "; ".join(f"'{r.column}': {r.reason}" for r in self.roles),
                )
            )
        # No rejected-rows check here: each accepted file is within the limit, so their sum is.
        rejected = self.issues.total
        accepted = sum(self.split_rows.values())
        if accepted < policy.min_rows:
            found.append(
                Violation(
                    rule="too_few_rows",
                    count=accepted,
                    message=f"{accepted} usable rows after cleaning "
                    f"({self.rows_read} read, {self.duplicates} exact duplicates dropped, "
                    f"{rejected} broke a row rule); at least {policy.min_rows} needed",
                )
            )
        empty = [s for s, n in self.split_rows.items() if n == 0]
        if empty and not found:
            found.append(
                Violation(
                    rule="too_few_rows",
                    count=accepted,
                    message=f"no rows landed in split(s) {empty}; add more data",
                )
            )
        if self.contract.task == "classification" and self.cleaner is not None:
            spelt = self.cleaner.class_spellings()
            classes = {spelt[key]: count for key, count in self.cleaner.classes.items()}
            if len(classes) < 2:
                found.append(
                    Violation(
                        rule="too_few_classes",
                        column=self.contract.target,
                        count=len(classes),
                        message=f"target '{self.contract.target}' has {len(classes)} class(es) "
                        f"{sorted(classes)}; classification needs at least 2",
                    )
                )
            small = {c: n for c, n in classes.items() if n < policy.min_class_count}
            if small and len(classes) >= 2:
                found.append(
                    Violation(
                        rule="class_too_small",
                        column=self.contract.target,
                        message=f"classes with fewer than {policy.min_class_count} rows: {small}",
                    )
                )
        if not found and "train" in self.writers:
            found.extend(self._all_missing_features())
        return found

    def _all_missing_features(self) -> list[Violation]:
        """Features without a single value in the train split, read off its profile (which
        ``upload`` writes): one pass over the split, one column at a time, for both."""
        found = []
        for name, feature in self._train_profile().get("features", {}).items():
            empty = (
                feature["missing"] == feature["count"]
                if feature["kind"] in ("numeric", "datetime")
                else feature["cardinality"] == 1 and MISSING_CATEGORY in feature["shares"]
            )
            if empty:
                found.append(
                    Violation(
                        rule="all_missing",
                        column=name,
                        message=f"feature '{name}' has no values at all",
                    )
                )
        return found

    def _train_profile(self) -> dict[str, Any]:
        """The train split's profile (the drift baseline), built once the split is written."""
        if self._profile is None:
            self._profile = build_profile(self.work / "train" / "part-0.parquet", self.schema())
        return self._profile

    # -- writing ----------------------------------------------------------------------------
    def schema(self) -> DatasetSchema:
        assert self.features is not None and self.cleaner is not None
        classes = None
        if self.contract.task == "classification" and self.cleaner.classes:
            # In the order of the matched (normalised) labels, spelt as the data spells them.
            spelt = self.cleaner.class_spellings()
            classes = [spelt[key] for key in sorted(self.cleaner.classes)]
        return DatasetSchema(
            dataset=self.dataset,
            dataset_version=self.version,
            task=self.contract.task,
            target=self.contract.target,
            metric=self.contract.metric,
            features=self.cleaner.features_seen(),
            classes=classes,
            id_column=self.contract.id_column,
            sensitive=self.contract.sensitive,
            columns=self.roles,
        )

    def upload(
        self, store: ObjectStore, bucket: str, contract_sha: str, excluded: list[ExcludedFile]
    ) -> Manifest:
        prefix = layout.version_prefix(self.dataset, self.version)
        schema_json = self.schema().model_dump_json(indent=2).encode()
        split_keys = {s: layout.split_key(self.dataset, self.version, s) for s in SPLITS}
        for split, key in split_keys.items():
            store.upload(self.work / split / "part-0.parquet", bucket, key)
        # The train channel is self-describing: SageMaker sees only the channel's prefix.
        store.put_bytes(bucket, f"{prefix}train/dataset.json", schema_json)
        store.put_bytes(bucket, f"{prefix}dataset.json", schema_json)
        profile = json.dumps(self._train_profile(), indent=2).encode()
        store.put_bytes(bucket, f"{prefix}profile.json", profile)
        rejected: dict[str, int] = {}
        for entry in self.issues.entries():
            rejected[entry.rule] = rejected.get(entry.rule, 0) + entry.count
        manifest = Manifest(
            dataset=self.dataset,
            dataset_version=self.version,
            created_at=_now(),
            contract_sha256=contract_sha,
            sources=self.sources,
            rows=RowCounts(
                read=self.rows_read,
                duplicates_dropped=self.duplicates,
                rejected=rejected,
                accepted=sum(self.split_rows.values()),
                per_split=self.split_rows,
            ),
            row_issues=_row_violations(self.issues),
            split={
                "method": "hash",
                "key": self.contract.id_column or "row",
                "fractions": {
                    "train": SPLIT_BOUNDS[0],
                    "validation": round(SPLIT_BOUNDS[1] - SPLIT_BOUNDS[0], 2),
                    "test": round(1 - SPLIT_BOUNDS[1], 2),
                },
            },
            schema_key=f"{prefix}dataset.json",
            profile_key=f"{prefix}profile.json",
            split_keys=split_keys,
            excluded=excluded,
        )
        # Written last: a version without a manifest is incomplete and is rebuilt next time.
        store.put_bytes(
            bucket, f"{prefix}manifest.json", manifest.model_dump_json(indent=2).encode()
        )
        return manifest


def _row_violations(issues: RowIssues) -> list[Violation]:
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


def _load_contract(store: ObjectStore, bucket: str, dataset: str) -> tuple[Contract, str]:
    key = layout.contract_key(dataset)
    if store.head(bucket, key) is None:
        raise RejectedUploadError(
            [
                Violation(
                    rule="contract_missing",
                    message=f"no contract: upload {s3_uri(bucket, key)} to declare the dataset",
                )
            ]
        )
    raw = store.get_bytes(bucket, key)
    try:
        contract = parse_contract(raw, source=key)
    except ContractError as exc:
        raise RejectedUploadError([Violation(rule="contract_invalid", message=str(exc))]) from None
    return contract, hashlib.sha256(raw).hexdigest()


def _superseded(upload: UploadedObject, current: ObjectInfo) -> bool:
    if upload.version_id and current.version_id:
        return upload.version_id != current.version_id
    if upload.etag:
        return upload.etag.strip('"') != current.etag
    return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["Policy", "PreprocessOutcome", "make_run_name", "process_upload"]
