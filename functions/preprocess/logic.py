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
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from functions.preprocess.assemble import (
    MAX_DIFFS,
    TOO_LARGE,
    Assembler,
    Parts,
    PartStore,
    Totals,
    VersionState,
    base_of_state,
    build_parts,
    class_names,
    latest_state,
    schema_of,
    work_dir,
)
from functions.preprocess.cleaning import SPLIT_BOUNDS, SPLITS, RowIssues
from functions.preprocess.models import UNCHANGED_NOTE, PreprocessOutcome, RejectionReport
from functions.preprocess.part_job import BuildPlan, JobLimits, PlannedObject
from functions.preprocess.parts import (
    Policy,
    issues_of,
    part_id,
    profiling_schema,
    row_violations,
    size_text,
)
from functions.shared import layout
from functions.shared.contract import Contract, parse_contract
from functions.shared.errors import ContractError, DataValidationError
from functions.shared.features import MISSING_CATEGORY, DatasetSchema
from functions.shared.manifest import ExcludedFile, Manifest, PartRef, RowCounts, Violation
from functions.shared.orchestration import BuildInput, Orchestrator
from functions.shared.pipeline_state import BuildState
from functions.shared.progress import Progress, report_progress
from functions.shared.registry import ModelRegistry
from functions.shared.runs import (
    data_sources,
    dataset_version_id,
    manifest_key,
    run_input,
    training_job_name,
)
from functions.shared.s3_events import RemovedObject, UploadedObject
from functions.shared.storage import (
    ObjectChangedError,
    ObjectInfo,
    ObjectStore,
    parse_s3_uri,
    s3_uri,
)

RUN_NAME_LIMIT = 80  # Step Functions execution names


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


class PastOneLambdaError(Exception):
    """The upload needs more reading than one invocation does: ``pending`` have no part yet."""

    def __init__(self, sources: list[ObjectInfo], pending: list[ObjectInfo]) -> None:
        super().__init__(
            f"{len(pending)} object(s) without a part, {sum(s.size for s in pending)} B"
        )
        self.sources = sources
        self.pending = pending


def _unbuilt(
    base: VersionState | None, contract: Contract, sources: list[ObjectInfo]
) -> list[ObjectInfo]:
    """The objects the last version's state does not hold a part or refusal of: what this
    upload would read (all of them without a state under this contract's data fields)."""
    digest = contract.data_digest()
    if base is None or base.data_digest != digest:
        return list(sources)
    known = {*base.parts, *base.refused}
    return [s for s in sources if part_id(digest, base.roles_sha, s) not in known]


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
    assembling: BuildState | None = None,
    jobs: JobLimits | None = None,
) -> PreprocessOutcome:
    """Turn one upload into a dataset version and start its run, or reject it with a report.

    ``registry`` is where retirements are read: an upload to a retired dataset is rejected
    with a report naming the retirement (the deployed function always passes it; benchmarks
    that have no registry pass none).

    When the upload needs more reading than one invocation does and the orchestrator can
    build parts, a processing job builds them (``building``; ``jobs``: its limits); its end
    calls this again with ``assembling`` (that build), which builds nothing big and starts the
    run from the parts.
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
        return _duplicate(dataset, run_name, "upload")
    routed = None if assembling is not None or not orchestrator.builds else jobs or JobLimits()
    try:
        _refuse_if_retired(registry, dataset)
        contract, contract_sha = _load_contract(store, upload.bucket, dataset)
        build_failed(assembling)
        built = build_dataset_version(
            store,
            upload.bucket,
            dataset,
            contract,
            contract_sha,
            artifacts_bucket=artifacts_bucket,
            policy=policy,
            trigger_key=data_key.key,
            jobs=routed,
        )
    except RejectedUploadError as rejected:
        return _rejected(store, artifacts_bucket, dataset, run_name, upload, rejected)
    except ObjectChangedError as changed:
        return _changed(dataset, changed)
    except PastOneLambdaError as heavy:
        assert routed is not None
        plan = BuildPlan(
            run_name=run_name,
            dataset=dataset,
            raw_bucket=upload.bucket,
            artifacts_bucket=artifacts_bucket,
            contract=store.get_bytes(upload.bucket, layout.contract_key(dataset)).decode(),
            trigger=upload,
            sources=[
                PlannedObject(key=s.key, size=s.size, etag=s.etag, version_id=s.version_id)
                for s in heavy.sources
            ],
            policy=policy.model_copy(
                update={
                    "max_upload_bytes": routed.max_object_bytes,
                    "read_block_bytes": routed.read_block_bytes,
                }
            ),
        )
        return _start_build(store, orchestrator, plan, heavy.pending, routed)

    return _start(orchestrator, run_name, built, contract, artifacts_bucket, dataset)


def assemble_build(
    build: BuildState,
    *,
    store: ObjectStore,
    orchestrator: Orchestrator,
    policy: Policy | None = None,
    registry: ModelRegistry | None = None,
) -> PreprocessOutcome:
    """The builds state machine's last step: the upload its plan names, processed again now
    that its parts are built (or rejected with the job's failure)."""
    bucket, key = parse_s3_uri(build.plan_uri)
    plan = BuildPlan.model_validate_json(store.get_bytes(bucket, key))
    return process_upload(
        plan.trigger,
        store=store,
        orchestrator=orchestrator,
        artifacts_bucket=plan.artifacts_bucket,
        policy=policy,
        registry=registry,
        assembling=build,
    )


def build_failed(build: BuildState | None) -> None:
    """A processing job that failed (the builds state machine's Catch): the upload is
    rejected with its reason, and nothing else changes."""
    if build is None or build.failure is None:
        return
    cause = build.failure.message
    raise RejectedUploadError(
        [
            Violation(
                rule="build_failed",
                message=f"the processing job {build.job_name} that builds this upload's parts "
                f"failed ({build.failure.Error}: {cause[:500]}); the parts it completed are "
                "kept, so uploading the file again under the same key resumes the build",
            )
        ]
    )


def _start_build(
    store: ObjectStore,
    orchestrator: Orchestrator,
    plan: BuildPlan,
    pending: list[ObjectInfo],
    limits: JobLimits,
) -> PreprocessOutcome:
    """Write the plan and start the builds state machine (named by the run: a redelivered
    event finds it started)."""
    if orchestrator.build_exists(plan.run_name):
        return PreprocessOutcome(
            status="duplicate",
            dataset=plan.dataset,
            run_name=plan.run_name,
            reason="this upload already started the build of its parts",
        )
    key = layout.build_plan_key(plan.dataset, plan.run_name)
    store.put_bytes(plan.artifacts_bucket, key, plan.model_dump_json(indent=2).encode())
    sizes = [s.size for s in pending]
    build = BuildInput(
        run_name=plan.run_name,
        dataset=plan.dataset,
        job_name=training_job_name(plan.run_name),
        plan_uri=s3_uri(plan.artifacts_bucket, key),
        report_uri=s3_uri(
            plan.artifacts_bucket, layout.build_report_prefix(plan.dataset, plan.run_name)
        ),
        instance_count=limits.instances(sizes),
        instance_type=limits.instance_type,
        volume_gb=limits.volume_gb,
        max_runtime_seconds=limits.max_runtime_seconds,
    )
    started = orchestrator.start_build(build)
    return PreprocessOutcome(
        status="building" if started.started else "duplicate",
        dataset=plan.dataset,
        run_name=plan.run_name,
        run_id=started.run_id,
        reason=(
            f"{len(pending)} file(s) without a part, {size_text(sum(sizes))}, are more than one "
            f"preprocess invocation reads: processing job {build.job_name} builds them on "
            f"{build.instance_count} {build.instance_type} instance(s); the dataset version "
            "and its run follow"
            if started.started
            else "this upload already started a build"
        ),
    )


def _start(
    orchestrator: Orchestrator,
    run_name: str,
    built: BuiltVersion,
    contract: Contract,
    artifacts_bucket: str,
    dataset: str,
) -> PreprocessOutcome:
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


def _changed(dataset: str, changed: ObjectChangedError) -> PreprocessOutcome:
    """A file of the dataset was replaced while this version was being built (its parts so far
    are kept: each names the object it read): the replacement's own event builds the version."""
    return PreprocessOutcome(
        status="stale",
        dataset=dataset,
        reason=f"{changed}: replaced while this version was built; its own event will run",
    )


def _duplicate(dataset: str, run_name: str, event: str) -> PreprocessOutcome:
    """The event was delivered before (its run's name is taken): nothing more to do."""
    return PreprocessOutcome(
        status="duplicate",
        dataset=dataset,
        run_name=run_name,
        reason=f"this {event} already started a run",
    )


def _rejected(
    store: ObjectStore,
    artifacts_bucket: str,
    dataset: str,
    run_name: str,
    trigger: UploadedObject,
    rejected: RejectedUploadError,
) -> PreprocessOutcome:
    """The rejection report, where the user looks, and the outcome naming it."""
    report_key = layout.rejected_key(dataset, run_name)
    report = RejectionReport(
        dataset=dataset,
        run_name=run_name,
        trigger=trigger,
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


def process_removal(
    removed: RemovedObject,
    *,
    store: ObjectStore,
    orchestrator: Orchestrator,
    artifacts_bucket: str,
    policy: Policy | None = None,
    registry: ModelRegistry | None = None,
) -> PreprocessOutcome:
    """A deleted data file: the dataset version of the files that remain, and a run over it
    when the deleted file's rows were in the last version (docs/decisions.md, "Deleted data
    files"). A delete of a file that was left out writes the version and starts nothing
    (``unchanged``); a key that exists again was re-uploaded, and its own event runs."""
    policy = policy or Policy()
    data_key = layout.parse_data_key(removed.key) or layout.parse_data_key(
        unquote_plus(removed.key)
    )
    if data_key is None:
        return PreprocessOutcome(
            status="ignored", reason=f"'{removed.key}' is not a data file of a dataset"
        )
    dataset = data_key.dataset
    if store.head(removed.bucket, data_key.key) is not None:
        return PreprocessOutcome(
            status="stale",
            dataset=dataset,
            reason="the object exists again; the upload that restored it runs on its own event",
        )
    run_name = make_run_name(dataset, removed.identity())
    if orchestrator.run_exists(run_name):
        return _duplicate(dataset, run_name, "delete")
    trigger = UploadedObject(
        bucket=removed.bucket,
        key=data_key.key,
        size=0,
        version_id=removed.version_id,
        sequencer=removed.sequencer,
    )
    try:
        _refuse_if_retired(registry, dataset)
        contract, contract_sha = _load_contract(store, removed.bucket, dataset)
        before = _latest_parts(store, artifacts_bucket, dataset)
        built = build_dataset_version(
            store,
            removed.bucket,
            dataset,
            contract,
            contract_sha,
            artifacts_bucket=artifacts_bucket,
            policy=policy,
        )
    except RejectedUploadError as rejected:
        return _rejected(store, artifacts_bucket, dataset, run_name, trigger, rejected)
    except ObjectChangedError as changed:
        return _changed(dataset, changed)
    manifest = built.manifest
    if before is not None and before == {p.part_id for p in manifest.parts}:
        return PreprocessOutcome(
            status="unchanged",
            dataset=dataset,
            dataset_version=manifest.dataset_version,
            reused_dataset_version=built.reused,
            rows=manifest.rows,
            excluded=manifest.excluded,
            reason=f"{data_key.key} held no rows of the last version (it was left out); "
            "the version without it has the same rows, so no run started",
        )
    return _start(orchestrator, run_name, built, contract, artifacts_bucket, dataset)


def _latest_parts(store: ObjectStore, bucket: str, dataset: str) -> set[str] | None:
    """The parts of the last version built, when its state can be read."""
    state = latest_state(store, bucket, dataset)
    return None if state is None else set(state.parts)


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
    jobs: JobLimits | None = None,
) -> BuiltVersion:
    """The dataset version of every data file under ``<dataset>/data/``, less the files refused
    for a fault of their own, each with its report (docs/decisions.md, "One bad file").

    Each file is read once, into its part (``functions.preprocess.parts``); the version lists
    the accepted parts and adds the new ones' distinct rows to the last version's totals
    (``functions.preprocess.assemble``), so its cost follows the upload, not the dataset's
    history. The version id names every file listed, the refused ones included: the same
    objects give the same version, with the same files left out. When ``trigger_key`` (the
    upload being processed) is itself refused, no version is written and the upload is
    rejected with that file's violations.

    ``jobs``: a processing job can be started; when the objects without a part are more than
    one invocation reads (``Policy.max_upload_bytes`` for one, ``max_read_bytes`` in all),
    ``PastOneLambdaError`` says which, before any is downloaded. Without it such an object is
    left out (``file_too_large``).
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
    latest = latest_state(store, artifacts_bucket, dataset)  # read once: routing and the base
    if jobs is not None:
        pending = _unbuilt(latest, contract, sources)
        if any(s.size > policy.max_upload_bytes for s in pending) or (
            sum(s.size for s in pending) > policy.max_read_bytes
        ):
            raise PastOneLambdaError(sources, pending)
    left_out: dict[str, _LeftOut] = {}
    readable = sources
    digest = contract.data_digest()
    progress = _Progress(dataset, sum(s.size for s in readable))
    with work_dir() as tmp:
        parts, base = build_parts(
            store,
            raw_bucket,
            artifacts_bucket,
            dataset,
            contract,
            readable,
            policy,
            Path(tmp),
            lambda pin: base_of_state(latest, digest, pin.sha),
            progress.report,
        )
        left_out.update(
            {k: _LeftOut(s, r.violations, r.rows) for k, (s, r) in parts.refused.items()}
        )
        _refuse_if_trigger_left_out(left_out, trigger_key)
        if not parts.accepted:
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
        excluded = _report_exclusions(store, artifacts_bucket, dataset, left_out.values())
        writer = _VersionWriter(store, artifacts_bucket, dataset, version, contract, parts)
        writer.assemble(base, Path(tmp))
        writer.check(policy, excluded)
        return BuiltVersion(manifest=writer.write(contract_sha, excluded), reused=False)


class _Progress:
    """Progress records over the bytes and rows of the files read in this call."""

    def __init__(self, dataset: str, total: int) -> None:
        self.dataset = dataset
        self.total = total
        self.started = time.perf_counter()
        self.before = (0, 0)  # bytes and rows of the files read to their end
        self.current: tuple[str, int, int] = ("", 0, 0)  # the file being read: key, bytes, rows

    def report(self, source: ObjectInfo, done: int, rows: int) -> None:
        key, last_bytes, last_rows = self.current
        if source.key != key:
            self.before = (self.before[0] + last_bytes, self.before[1] + last_rows)
        self.current = (source.key, done, rows)
        read = min(self.before[0] + done, self.total)
        report_progress(
            Progress(
                step="preprocess",
                dataset=self.dataset,
                done=read,
                total=self.total,
                unit="bytes",
                detail=f"{self.before[1] + rows:,} rows, "
                f"{size_text(read)} of {size_text(self.total)} read",
                elapsed_seconds=round(time.perf_counter() - self.started, 1),
            )
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


class _VersionWriter:
    """Totals a version's parts, checks the dataset rules on them, and writes the version:
    state, schema, profile, channels, then the manifest (last: it marks the version complete)."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        dataset: str,
        version: str,
        contract: Contract,
        parts: Parts,
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.dataset = dataset
        self.version = version
        self.contract = contract
        self.parts = parts
        # Parts in id order: the order readers keep the first copy of a row in.
        self.summaries = [parts.accepted[p] for p in sorted(parts.accepted)]
        self.totals: Totals | None = None

    def schema(self) -> DatasetSchema:
        assert self.totals is not None
        return schema_of(
            self.contract,
            self.parts.pin,
            self.dataset,
            self.version,
            self.summaries,
            self.totals.classes,
        )

    def assemble(self, base: VersionState | None, work: Path) -> None:
        """The distinct rows' totals, added to the base's when it is near, else summed afresh;
        the state is written before the dataset rules run, so a version they refuse is still
        the next upload's base."""
        plain = profiling_schema(self.contract, self.parts.pin, self.dataset)
        reader = PartStore(self.store, self.bucket, self.dataset, work)
        assembler = Assembler(self.parts, reader, plain)
        near = base is not None and (len(set(base.parts) ^ set(self.parts.accepted)) <= MAX_DIFFS)
        self.totals = assembler.incremental(base) if base is not None and near else assembler.full()
        state = VersionState(
            data_digest=self.contract.data_digest(),
            roles_sha=self.parts.pin.sha,
            parts=dict(self.parts.accepted),
            refused={  # not those refused unread for their size: a processing job reads them
                part_id(self.contract.data_digest(), self.parts.pin.sha, source): refused
                for source, refused in self.parts.refused.values()
                if refused.violations[0].rule != TOO_LARGE
            },
            per_split=self.totals.per_split,
            classes=self.totals.classes,
            profile=self.totals.profile.to_dict(),
        )
        self.store.put_bytes(
            self.bucket,
            layout.version_state_key(self.dataset, self.version),
            state.model_dump_json().encode(),
        )
        self.store.put_bytes(
            self.bucket,
            layout.latest_state_key(self.dataset),
            json.dumps({"dataset_version": self.version}).encode(),
        )

    def issues(self) -> RowIssues:
        merged = RowIssues()
        for summary in sorted(self.summaries, key=lambda s: s.source.key):
            merged.merge(issues_of(summary.issues))
        return merged

    def rows(self) -> RowCounts:
        assert self.totals is not None
        rejected: dict[str, int] = {}
        for summary in self.summaries:
            for rule, count in summary.rows.rejected.items():
                rejected[rule] = rejected.get(rule, 0) + count
        accepted = sum(self.totals.per_split.values())
        within = sum(s.rows.duplicates_dropped for s in self.summaries)
        across = sum(s.rows.accepted for s in self.summaries) - accepted
        return RowCounts(
            read=sum(s.rows.read for s in self.summaries),
            duplicates_dropped=within + across,
            rejected=rejected,
            accepted=accepted,
            per_split={s: self.totals.per_split.get(s, 0) for s in SPLITS},
        )

    def check(self, policy: Policy, excluded: list[ExcludedFile]) -> None:
        """Dataset rules over the files accepted; a refusal also lists the files left out."""
        violations = self._dataset_checks(policy)
        if violations:
            violations.extend(row_violations(self.issues()))
            violations.extend(
                Violation(rule=f.rule, file=f.key, message=f.message) for f in excluded
            )
            raise RejectedUploadError(violations, rows_read=self.rows().read)

    def _dataset_checks(self, policy: Policy) -> list[Violation]:
        assert self.totals is not None
        found: list[Violation] = []
        if not self.parts.pin.features:
            found.append(
                Violation(
                    rule="no_features",
                    message="no column can be a feature: "
                    + "; ".join(f"'{r.column}': {r.reason}" for r in self.parts.pin.roles),
                )
            )
        # No rejected-rows check here: each accepted file is within the limit, so their sum is.
        rows = self.rows()
        rejected = sum(rows.rejected.values())
        if rows.accepted < policy.min_rows:
            found.append(
                Violation(
                    rule="too_few_rows",
                    count=rows.accepted,
                    message=f"{rows.accepted} usable rows after cleaning "
                    f"({rows.read} read, {rows.duplicates_dropped} exact duplicates dropped, "
                    f"{rejected} broke a row rule); at least {policy.min_rows} needed",
                )
            )
        empty = [s for s, n in rows.per_split.items() if n == 0]
        if empty and not found:
            found.append(
                Violation(
                    rule="too_few_rows",
                    count=rows.accepted,
                    message=f"no rows landed in split(s) {empty}; add more data",
                )
            )
        if self.contract.task == "classification":
            names = class_names(self.summaries, self.totals.classes)
            classes = {names[k]: n for k, n in self.totals.classes.items()}
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
        if not found and rows.per_split.get("train"):
            found.extend(self._all_missing_features())
        return found

    def _all_missing_features(self) -> list[Violation]:
        """Features without a single value in the train split, read off its profile."""
        found = []
        for name, feature in self.profile().get("features", {}).items():
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

    def profile(self) -> dict[str, Any]:
        assert self.totals is not None
        return self.totals.profile.summary()

    def write(self, contract_sha: str, excluded: list[ExcludedFile]) -> Manifest:
        prefix = layout.version_prefix(self.dataset, self.version)
        schema_key = f"{prefix}dataset.json"
        self.store.put_bytes(
            self.bucket, schema_key, self.schema().model_dump_json(indent=2).encode()
        )
        profile_key = f"{prefix}profile.json"
        self.store.put_bytes(
            self.bucket, profile_key, json.dumps(self.profile(), indent=2).encode()
        )
        channels = {}
        dataset_root = s3_uri(self.bucket, f"{self.dataset}/")
        for split in SPLITS:
            keys = [s.split_keys[split] for s in self.summaries if split in s.split_keys]
            if split == "train":
                keys.append(schema_key)
            listing = [{"prefix": dataset_root}, *(k[len(self.dataset) + 1 :] for k in keys)]
            channels[split] = layout.channel_key(self.dataset, self.version, split)
            self.store.put_bytes(self.bucket, channels[split], json.dumps(listing).encode())
        manifest = Manifest(
            dataset=self.dataset,
            dataset_version=self.version,
            created_at=_now(),
            contract_sha256=contract_sha,
            sources=sorted((s.source for s in self.summaries), key=lambda f: f.key),
            rows=self.rows(),
            row_issues=row_violations(self.issues()),
            split={
                "method": "hash",
                "key": self.contract.id_column or "row",
                "fractions": {
                    "train": SPLIT_BOUNDS[0],
                    "validation": round(SPLIT_BOUNDS[1] - SPLIT_BOUNDS[0], 2),
                    "test": round(1 - SPLIT_BOUNDS[1], 2),
                },
            },
            schema_key=schema_key,
            profile_key=profile_key,
            split_keys={},
            excluded=excluded,
            format=2,
            parts=[
                PartRef(
                    part_id=s.part_id,
                    key=s.source.key,
                    etag=s.source.etag,
                    version_id=s.source.version_id,
                    size=s.source.size,
                    rows_accepted=s.rows.accepted,
                    split_keys=s.split_keys,
                    index_key=s.index_key,
                )
                for s in self.summaries
            ],
            channels=channels,
            state_key=layout.version_state_key(self.dataset, self.version),
        )
        # Written last: a version without a manifest is incomplete and is rebuilt next time.
        self.store.put_bytes(
            self.bucket, f"{prefix}manifest.json", manifest.model_dump_json(indent=2).encode()
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


__all__ = [
    "Policy",
    "PreprocessOutcome",
    "assemble_build",
    "make_run_name",
    "process_removal",
    "process_upload",
]
