"""Preprocess: an uploaded data file becomes a validated, split, profiled dataset version and a
pipeline run, or a rejection report. The raw bucket is only ever read.

Idempotency comes from names, not a lock table: the dataset version id is a hash of the
contract and the exact source objects (key, ETag, version), and the run name is a hash of the
event's identity. A redelivered event finds its run already there and stops; a crash halfway
re-creates the same version, and the manifest, written last, marks a version as complete.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
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
from functions.preprocess.models import (
    Manifest,
    PreprocessOutcome,
    RejectionReport,
    RowCounts,
    SourceFile,
    Violation,
)
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
    def __init__(self, violations: list[Violation], rows_read: int = 0) -> None:
        super().__init__("; ".join(v.message for v in violations))
        self.violations = violations
        self.rows_read = rows_read


@dataclass(frozen=True)
class BuiltVersion:
    manifest: Manifest
    reused: bool


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
        )
    except RejectedUploadError as rejected:
        report_key = layout.rejected_key(dataset, run_name)
        report = RejectionReport(
            dataset=dataset,
            run_name=run_name,
            trigger=upload,
            violations=rejected.violations,
            rows_read=rejected.rows_read,
            created_at=_now(),
        )
        store.put_bytes(artifacts_bucket, report_key, report.model_dump_json(indent=2).encode())
        return PreprocessOutcome(
            status="rejected",
            dataset=dataset,
            run_name=run_name,
            report_key=report_key,
            reason="; ".join(v.message for v in rejected.violations[:3]),
        )

    manifest = built.manifest
    run = run_input(run_name, manifest, contract, artifacts_bucket)
    started = orchestrator.start_run(run)
    return PreprocessOutcome(
        status="started" if started.started else "duplicate",
        dataset=dataset,
        run_name=run_name,
        run_id=started.run_id,
        dataset_version=manifest.dataset_version,
        reused_dataset_version=built.reused,
        rows=manifest.rows,
        reason="pipeline run started" if started.started else "this upload already started a run",
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
) -> BuiltVersion:
    sources = data_sources(store, raw_bucket, dataset)
    if not sources:
        raise RejectedUploadError(
            [Violation(rule="no_data", message=f"no CSV or Parquet files under {dataset}/data/")]
        )
    oversized = [s for s in sources if s.size > policy.max_upload_bytes]
    if oversized:
        raise RejectedUploadError(_too_large(store, contract, oversized, policy.max_upload_bytes))
    version = dataset_version_id(contract_sha, sources)
    if store.head(artifacts_bucket, manifest_key(dataset, version)) is not None:
        existing = Manifest.model_validate_json(
            store.get_bytes(artifacts_bucket, manifest_key(dataset, version))
        )
        return BuiltVersion(manifest=existing, reused=True)

    with tempfile.TemporaryDirectory(prefix="sluice-preprocess-") as tmp:
        work = Path(tmp)
        builder = _VersionBuilder(contract, dataset, version, work)
        builder.bytes_total = sum(source.size for source in sources)
        for source in sources:
            builder.add_file(store, source)
        builder.finish(policy)
        return BuiltVersion(
            manifest=builder.upload(store, artifacts_bucket, contract_sha), reused=False
        )


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
    """Accumulates one dataset version on local disk, file by file and batch by batch."""

    def __init__(self, contract: Contract, dataset: str, version: str, work: Path) -> None:
        self.contract = contract
        self.dataset = dataset
        self.version = version
        self.work = work
        self.violations: list[Violation] = []
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
        rows_before = self.rows_read
        try:
            header = read_header(local)
            if not self._header_ok(source.key, header):
                return
            # A CSV batch is one block of the file; a Parquet file's bytes count once it is read
            block = BLOCK_BYTES if local.suffix == ".csv" else 0
            for number, batch in enumerate(iter_batches(local, header), start=1):
                self._add_batch(batch.frame, header, source.key, batch.first_row)
                self._progress(min(source.size, number * block))
            if self.rows_read == rows_before:
                self.violations.append(
                    Violation(
                        rule="empty_file",
                        file=source.key,
                        message=f"{source.key}: header but no data rows",
                    )
                )
        except UnreadableFileError as exc:
            self.violations.append(
                Violation(rule="unreadable_file", file=source.key, message=f"{source.key}: {exc}")
            )
        finally:
            local.unlink(missing_ok=True)
        self.bytes_read += source.size
        self._progress(0)
        self.sources.append(
            SourceFile(
                key=source.key,
                etag=source.etag,
                version_id=source.version_id,
                size=source.size,
                sha256=sha,
                rows_read=self.rows_read - rows_before,
            )
        )

    def _progress(self, bytes_of_this_file: int) -> None:
        read = self.bytes_read + bytes_of_this_file
        report_progress(
            Progress(
                step="preprocess",
                dataset=self.dataset,
                done=read,
                total=self.bytes_total,
                unit="bytes",
                detail=f"{self.rows_read:,} rows, {_size(read)} of {_size(self.bytes_total)} read",
                elapsed_seconds=round(time.perf_counter() - self.started, 1),
            )
        )

    def _header_ok(self, key: str, header: list[str]) -> bool:
        known = None if self.features is None else [f.name for f in self.features]
        problems = _header_violations(self.contract, key, header, known)
        self.violations.extend(problems)
        return not problems

    def _add_batch(self, frame: pd.DataFrame, header: list[str], key: str, first_row: int) -> None:
        self.rows_read += len(frame)
        if self.features is None:
            self.features, self.roles = infer_features(self.contract, header, frame)
            carried = [r for r in self.roles if r.use == "excluded"]
            self.cleaner = BatchCleaner(self.contract, self.features, carried)
        assert self.cleaner is not None
        clean = self.cleaner.clean(frame, file=key, first_row=first_row, issues=self.issues)
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
    def finish(self, policy: Policy) -> None:
        for writer in self.writers.values():
            writer.close()
        violations = list(self.violations)
        if not violations:
            violations.extend(self._dataset_checks(policy))
        if violations:
            violations.extend(self._row_violations())
            raise RejectedUploadError(violations, rows_read=self.rows_read)

    def _row_violations(self) -> list[Violation]:
        return [
            Violation(
                rule=e.rule,
                column=e.column,
                count=e.count,
                examples=e.examples,
                message=f"{e.count} row(s) dropped: {e.column}: {e.message}",
            )
            for e in self.issues.entries()
        ]

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
        rejected = self.issues.total
        if self.rows_read and rejected / self.rows_read > policy.max_rejected_fraction:
            found.append(
                Violation(
                    rule="too_many_rejected_rows",
                    count=rejected,
                    message=f"{rejected} of {self.rows_read} rows broke a rule "
                    f"(more than {policy.max_rejected_fraction:.0%}); see the row rules below",
                )
            )
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

    def upload(self, store: ObjectStore, bucket: str, contract_sha: str) -> Manifest:
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
            row_issues=self._row_violations(),
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
        )
        # Written last: a version without a manifest is incomplete and is rebuilt next time.
        store.put_bytes(
            bucket, f"{prefix}manifest.json", manifest.model_dump_json(indent=2).encode()
        )
        return manifest


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
