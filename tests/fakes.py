"""In-memory fakes for the ports: fast, honest, and with no mocking of call signatures."""

from __future__ import annotations

import builtins
import hashlib
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from functions.retrain.guard import GuardState
from functions.retrain.guard_store import DecisionRecord, GuardStore, check_commit, check_record
from functions.shared.notify import Decision, Notifier
from functions.shared.orchestration import Orchestrator, RunInput, RunStart
from functions.shared.registry import (
    AuditAction,
    AuditEntry,
    DatasetRetirement,
    InvalidTransitionError,
    LivePointer,
    ModelRegistry,
    ModelStatus,
    ModelVersion,
    ModelVersionNotFoundError,
    NewModelVersion,
    PromotionConflictError,
)
from functions.shared.storage import (
    ObjectChangedError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StagedObject,
)


class InMemoryObjectStore(ObjectStore):
    """A versioned bucket store: every put is a new version, like S3 with versioning on."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], list[tuple[bytes, str]]] = {}
        self.writes: list[tuple[str, str]] = []
        self.downloads: list[tuple[str, str]] = []
        self.head_reads: list[tuple[str, str, int]] = []
        self.streams: list[tuple[str, str]] = []  # open_read calls
        self.staged: dict[str, tuple[str, str, bytes]] = {}  # upload id → bucket, key, data
        self.tags: dict[tuple[str, str], dict[str, str]] = {}  # the latest put's object tags
        # sizes reported instead of the body's length: a "2 GiB" object without 2 GiB of RAM
        self.reported_sizes: dict[tuple[str, str, str], int] = {}

    def put(self, bucket: str, key: str, data: bytes, *, size: int | None = None) -> ObjectInfo:
        """Store a new version; ``size`` makes head and list report that size instead."""
        versions = self.objects.setdefault((bucket, key), [])
        versions.append((data, f"v{len(versions) + 1}"))
        if size is not None:
            self.reported_sizes[(bucket, key, versions[-1][1])] = size
        self.writes.append((bucket, key))
        info = self.head(bucket, key)
        assert info is not None
        return info

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        versions = self.objects.get((bucket, key))
        if not versions:
            return None
        data, version = versions[-1]
        size = self.reported_sizes.get((bucket, key, version), len(data))
        return ObjectInfo(bucket, key, size, hashlib.md5(data).hexdigest(), version)

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        found = [self.head(b, k) for (b, k) in self.objects if b == bucket and k.startswith(prefix)]
        return sorted((o for o in found if o is not None), key=lambda o: o.key)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._versions(bucket, key)[-1][0]

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.put(bucket, key, data)
        self.tags[(bucket, key)] = dict(tags or {})

    def download(
        self,
        bucket: str,
        key: str,
        dest: Path,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> str:
        self.downloads.append((bucket, key))
        versions = self._versions(bucket, key)
        data = next(d for d, v in versions if v == version_id) if version_id else versions[-1][0]
        if if_match is not None and hashlib.md5(data).hexdigest() != if_match.strip('"'):
            raise ObjectChangedError(bucket, key, if_match)
        dest.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def upload(self, src: Path, bucket: str, key: str) -> None:
        self.put(bucket, key, src.read_bytes())

    def read_head(
        self, bucket: str, key: str, max_bytes: int, version_id: str | None = None
    ) -> bytes:
        self.head_reads.append((bucket, key, max_bytes))
        versions = self._versions(bucket, key)
        data = next(d for d, v in versions if v == version_id) if version_id else versions[-1][0]
        return data[:max_bytes]

    def open_read(
        self, bucket: str, key: str, *, start: int = 0, if_match: str | None = None
    ) -> BinaryIO:
        self.streams.append((bucket, key))
        return super().open_read(bucket, key, start=start, if_match=if_match)

    def stage(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/json"
    ) -> StagedObject:
        upload_id = f"upload-{len(self.writes)}-{len(self.staged)}-{key}"
        self.staged[upload_id] = (bucket, key, data)
        return StagedObject(bucket, key, upload_id, hashlib.md5(data).hexdigest())

    def commit(self, staged: StagedObject) -> None:
        bucket, key, data = self.staged.pop(staged.upload_id)
        self.put(bucket, key, data)

    def abort(self, staged: StagedObject) -> None:
        self.staged.pop(staged.upload_id, None)

    def delete(self, bucket: str, key: str) -> None:
        """Every version gone, as an operator's ``aws s3 rm`` of an unversioned object."""
        self.objects.pop((bucket, key), None)

    def _versions(self, bucket: str, key: str) -> builtins.list[tuple[bytes, str]]:
        versions = self.objects.get((bucket, key))
        if not versions:
            raise ObjectNotFoundError(bucket, key)
        return versions

    def keys(self, bucket: str, prefix: str = "") -> builtins.list[str]:  # `list` is a method here
        return [o.key for o in self.list(bucket, prefix)]

    def purge_prefix(self, bucket: str, prefix: str) -> int:
        doomed = [k for k in self.objects if k[0] == bucket and k[1].startswith(prefix)]
        return sum(len(self.objects.pop(k)) for k in doomed)


class FailingObjectStore(InMemoryObjectStore):
    """Fails the first ``failures`` uploads (every one by default), recording each attempt:
    S3 unreachable for a while, or for good."""

    def __init__(self, failures: int = sys.maxsize) -> None:
        super().__init__()
        self.failures = failures
        self.attempts: list[str] = []

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.attempts.append(key)
        if len(self.attempts) <= self.failures:
            raise ConnectionError("S3 is unreachable")
        super().put_bytes(bucket, key, data, content_type, tags)


class RecordingOrchestrator(Orchestrator):
    """Keeps runs by name, refusing a second run of the same name as Step Functions does."""

    def __init__(self) -> None:
        self.runs: dict[str, RunInput] = {}
        self.finished: set[str] = set()  # runs no longer executing

    def run_exists(self, name: str) -> bool:
        return name in self.runs

    def start_run(self, run: RunInput) -> RunStart:
        if run.run_name in self.runs:
            return RunStart(run.run_name, f"run:{run.run_name}", started=False)
        self.runs[run.run_name] = run
        return RunStart(run.run_name, f"run:{run.run_name}", started=True)

    def running(self, dataset: str) -> list[str]:
        return [
            name
            for name, run in self.runs.items()
            if run.dataset == dataset and name not in self.finished
        ]


@dataclass
class _DatasetState:
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    live: LivePointer | None = None


class InMemoryRegistry(ModelRegistry):
    """The registry's rules kept in dicts, one lock around each operation.

    The lock plays the part of DynamoDB's conditional writes: every check and every change of an
    operation happen together, so racing threads see the same outcomes as racing Lambdas on the
    real table (one promotion wins, the others get ``PromotionConflictError``). Errors are checked
    in the same order as the DynamoDB adapter: unknown version, then a moved pointer, then a
    status that does not allow the change.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._datasets: dict[str, _DatasetState] = {}
        self._audit: dict[str, list[AuditEntry]] = {}
        self._retired: dict[str, DatasetRetirement] = {}

    def register(self, new: NewModelVersion, *, actor: str) -> ModelVersion:
        with self._lock:
            state = self._datasets.setdefault(new.dataset, _DatasetState())
            if new.run_name in state.runs:
                return state.versions[state.runs[new.run_name]]
            now = self._clock()
            record = ModelVersion(
                **new.model_dump(),
                version=len(state.versions) + 1,
                status=ModelStatus.CANDIDATE,
                created_at=now,
                updated_at=now,
            )
            state.versions[record.version] = record
            state.runs[new.run_name] = record.version
            reason = f"run {new.run_name} registered a candidate"
            self._append(new.dataset, "registered", record.version, actor, reason, run=new.run_name)
            return record

    def get(self, dataset: str, version: int) -> ModelVersion:
        with self._lock:
            return self._get(dataset, version)

    def versions(self, dataset: str) -> list[ModelVersion]:
        with self._lock:
            state = self._datasets.get(dataset)
            return [] if state is None else [state.versions[v] for v in sorted(state.versions)]

    def datasets(self) -> list[str]:
        with self._lock:
            return sorted(self._datasets)

    def live(self, dataset: str) -> LivePointer | None:
        with self._lock:
            state = self._datasets.get(dataset)
            return None if state is None else state.live

    def promote(
        self,
        dataset: str,
        version: int,
        *,
        expected_live: int | None,
        actor: str,
        reason: str,
        force: bool = False,
        action: Literal["promoted", "rolled_back"] = "promoted",
    ) -> LivePointer:
        with self._lock:
            target = self._get(dataset, version)
            state = self._datasets[dataset]
            current = state.live
            actual = None if current is None else current.version
            if actual != expected_live:
                raise PromotionConflictError(
                    f"'{dataset}': expected live version {expected_live}, found {actual}"
                )
            allowed = {ModelStatus.CANDIDATE, ModelStatus.RETIRED}
            if force:
                allowed.add(ModelStatus.REJECTED)
            if target.status is ModelStatus.LIVE:
                raise InvalidTransitionError(f"version {version} of '{dataset}' is already live")
            if target.status not in allowed:
                raise InvalidTransitionError(
                    f"version {version} of '{dataset}' is {target.status.value}; "
                    "only an operator's forced promotion can put a rejected version live"
                )
            now = self._clock()
            pointer = LivePointer(
                dataset=dataset,
                version=version,
                sha256=target.sha256,
                model_uri=target.model_uri,
                card_uri=target.card_uri,
                generation=1 if current is None else current.generation + 1,
                updated_at=now,
            )
            if current is not None:
                state.versions[current.version] = state.versions[current.version].model_copy(
                    update={
                        "status": ModelStatus.RETIRED,
                        "status_reason": f"replaced by version {version}",
                        "updated_at": now,
                    }
                )
            state.versions[version] = target.model_copy(
                update={"status": ModelStatus.LIVE, "status_reason": reason, "updated_at": now}
            )
            state.live = pointer
            self._append(dataset, action, version, actor, reason, previous_live=actual, at=now)
            return pointer

    def reject(self, dataset: str, version: int, *, actor: str, reason: str) -> ModelVersion:
        with self._lock:
            target = self._get(dataset, version)
            if target.status is ModelStatus.REJECTED:
                return target
            if target.status is not ModelStatus.CANDIDATE:
                raise InvalidTransitionError(
                    f"version {version} of '{dataset}' is {target.status.value}; "
                    "only a candidate can be rejected"
                )
            now = self._clock()
            rejected = target.model_copy(
                update={"status": ModelStatus.REJECTED, "status_reason": reason, "updated_at": now}
            )
            self._datasets[dataset].versions[version] = rejected
            self._append(dataset, "rejected", version, actor, reason, run=target.run_name, at=now)
            return rejected

    def record_failure(self, dataset: str, run_name: str, *, actor: str, reason: str) -> None:
        with self._lock:
            self._append(dataset, "run_failed", None, actor, reason, run=run_name)

    def audit(self, dataset: str) -> list[AuditEntry]:
        with self._lock:
            return list(self._audit.get(dataset, []))

    def retire_dataset(self, dataset: str, *, actor: str, reason: str) -> DatasetRetirement:
        with self._lock:
            if dataset in self._retired:
                return self._retired[dataset]
            state = self._datasets.get(dataset)
            live = None if state is None or state.live is None else state.live.version
            now = self._clock()
            retirement = DatasetRetirement(
                dataset=dataset, at=now, actor=actor, reason=reason, live_version=live
            )
            self._retired[dataset] = retirement
            self._append(
                dataset, "dataset_retired", None, actor, reason, previous_live=live, at=now
            )
            return retirement

    def unretire_dataset(self, dataset: str, *, actor: str, reason: str) -> DatasetRetirement:
        with self._lock:
            if dataset not in self._retired:
                raise InvalidTransitionError(f"dataset '{dataset}' is not retired")
            self._append(dataset, "dataset_unretired", None, actor, reason)
            return self._retired.pop(dataset)

    def retirement(self, dataset: str) -> DatasetRetirement | None:
        with self._lock:
            return self._retired.get(dataset)

    def active_datasets(self) -> list[str]:
        with self._lock:
            return sorted(set(self._datasets) - set(self._retired))

    def purge(self, dataset: str, *, actor: str, reason: str) -> int:
        with self._lock:
            if dataset not in self._retired:
                raise InvalidTransitionError(
                    f"dataset '{dataset}' is not retired; retire it before purging it"
                )
            state = self._datasets.pop(dataset, _DatasetState())
            counter = 1 if state.versions else 0
            live = 0 if state.live is None else 1
            deleted = (
                len(state.versions)
                + len(state.runs)
                + counter
                + live
                + 1  # + RETIRED
                + len(self._audit.pop(dataset, []))
            )
            del self._retired[dataset]
            reason = f"{reason} ({deleted} records deleted)"
            self._append(dataset, "dataset_purged", None, actor, reason)
            return deleted

    def _get(self, dataset: str, version: int) -> ModelVersion:
        state = self._datasets.get(dataset)
        if state is None or version not in state.versions:
            raise ModelVersionNotFoundError(f"no version {version} of dataset '{dataset}'")
        return state.versions[version]

    def _append(
        self,
        dataset: str,
        action: AuditAction,
        version: int | None,
        actor: str,
        reason: str,
        *,
        previous_live: int | None = None,
        run: str | None = None,
        at: datetime | None = None,
    ) -> None:
        entry = AuditEntry(
            dataset=dataset,
            at=at or self._clock(),
            action=action,
            version=version,
            actor=actor,
            reason=reason,
            previous_live=previous_live,
            run_name=run,
        )
        self._audit.setdefault(dataset, []).append(entry)


class RecordingNotifier(Notifier):
    """Keeps every published decision, in order."""

    def __init__(self) -> None:
        self.published: list[Decision] = []

    def publish(self, decision: Decision) -> None:
        self.published.append(decision)


class InMemoryGuardStore(GuardStore):
    """The same semantics in a dict, behind one lock (each method is atomic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, GuardState] = {}
        self._records: dict[str, dict[str, DecisionRecord]] = {}

    def load(self, dataset: str) -> GuardState:
        with self._lock:
            return self._states.get(dataset, GuardState())

    def commit(
        self,
        dataset: str,
        expected_revision: int,
        new_state: GuardState,
        decision_record: DecisionRecord,
    ) -> bool:
        check_commit(dataset, expected_revision, new_state, decision_record)
        with self._lock:
            if self._states.get(dataset, GuardState()).revision != expected_revision:
                return False
            self._states[dataset] = new_state
            self._put(dataset, decision_record)
            return True

    def record(self, dataset: str, decision_record: DecisionRecord) -> None:
        check_record(dataset, decision_record)
        with self._lock:
            self._put(dataset, decision_record)

    def decisions(self, dataset: str, limit: int = 50) -> list[DecisionRecord]:
        with self._lock:
            records = self._records.get(dataset, {})
            return [records[key] for key in sorted(records, reverse=True)[:limit]]

    def _put(self, dataset: str, decision_record: DecisionRecord) -> None:
        self._records.setdefault(dataset, {})[decision_record.sort_key()] = decision_record
