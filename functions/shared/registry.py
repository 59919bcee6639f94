"""The model registry: numbered model versions per dataset, which one is live, and why.

Records are pydantic models; the port (``ModelRegistry``) has a DynamoDB adapter
(``DynamoDBRegistry``, functions/shared/registry_dynamodb.py) and an in-memory one for unit
tests (tests/fakes.py). Both pass the same contract tests (tests/integration/test_registry.py).

Rules every adapter enforces atomically:

- a version number is allocated once per run (registering the same run twice returns the
  version it already has);
- exactly one version per dataset is ``live``; promoting moves the live pointer and retires
  the previous live version in one conditional write;
- a promotion names the live version it expects to replace (``expected_live``; ``None`` = no
  live model yet). If the pointer moved since (another run or an operator promoted), the
  promotion fails with ``PromotionConflictError`` and nothing changes: a stale run can never
  overwrite a newer live model, and of two racing runs only one wins;
- a ``rejected`` version never goes live unless an operator forces it;
- every status change appends an audit entry (who, what, when, why).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from functions.shared.errors import SluiceError

SHA256 = r"^[0-9a-f]{64}$"


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    LIVE = "live"
    REJECTED = "rejected"
    RETIRED = "retired"


GateVerdict = Literal["passed", "refused"]

AuditAction = Literal[
    "registered",
    "promoted",
    "rolled_back",
    "retired",
    "rejected",
    "run_failed",
    "dataset_retired",
    "dataset_unretired",
    "dataset_purged",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewModelVersion(_Record):
    """What a run registers: the trained, evaluated model, before the gate decides."""

    dataset: str
    run_name: str
    dataset_version: str
    model_uri: str  # s3://.../model.onnx
    card_uri: str  # s3://.../model_card.json
    report_uri: str  # s3://.../evaluation.json
    artifact_uri: str  # s3://.../model.tar.gz as SageMaker wrote it
    sha256: str = Field(pattern=SHA256)  # of model.onnx; checked before every load
    metric: str
    metric_value: float | None  # the contract metric on the test split (None: not measurable)
    summary: dict[str, JsonValue] = Field(default_factory=dict)  # a few headline figures
    # The gate's verdict on this version at evaluation, and its reasons. Kept apart from
    # ``status`` (the lifecycle) and never changed: a version the gate refused and an operator
    # forced live, then retired, is still listed as refused. ``None``: registered without one.
    gate: GateVerdict | None = None
    gate_reasons: list[str] = Field(default_factory=list)


class ModelVersion(NewModelVersion):
    version: int = Field(ge=1)
    status: ModelStatus
    created_at: AwareDatetime
    updated_at: AwareDatetime
    status_reason: str = ""

    @model_validator(mode="before")
    @classmethod
    def _gate_from_old_summary(cls, data: Any) -> Any:
        """Records written before ``gate`` existed kept the verdict as ``summary.gate_passed``."""
        if isinstance(data, dict) and data.get("gate") is None:
            summary = data.get("summary")
            passed = summary.get("gate_passed") if isinstance(summary, dict) else None
            if isinstance(passed, bool):
                return data | {"gate": "passed" if passed else "refused"}
        return data


class LivePointer(_Record):
    """Which version serves a dataset. ``generation`` grows by one on every change, so a reader
    can tell a promotion happened even when a rollback restores an earlier version number."""

    dataset: str
    version: int = Field(ge=1)
    sha256: str = Field(pattern=SHA256)
    model_uri: str
    card_uri: str
    generation: int = Field(ge=1)
    updated_at: AwareDatetime


class AuditEntry(_Record):
    dataset: str
    at: AwareDatetime
    action: AuditAction
    version: int | None  # None for a run that failed before registering a model
    actor: str  # "pipeline:<run name>" or "cli:<user>"
    reason: str
    previous_live: int | None = None
    run_name: str | None = None


class DatasetRetirement(_Record):
    """A dataset an operator retired: it no longer serves, drifts, retrains or takes uploads.

    Its versions, artifacts and audit trail are kept; ``live_version`` is the version that was
    live when it was retired (still recorded as live, no longer served)."""

    dataset: str
    at: AwareDatetime
    actor: str
    reason: str
    live_version: int | None = None


class RegistryError(SluiceError):
    """Base of the registry's refusals."""


class ModelVersionNotFoundError(RegistryError):
    """No such dataset or version."""


class PromotionConflictError(RegistryError):
    """The live pointer is not what the caller expected (a race, or a stale run): nothing was
    changed."""


class InvalidTransitionError(RegistryError):
    """The version's status does not allow that operation (promote a rejected model without
    force, reject a live one, roll back to a version that never served...)."""


class ModelRegistry(ABC):
    @abstractmethod
    def register(self, new: NewModelVersion, *, actor: str) -> ModelVersion:
        """Allocate the next version number as ``candidate``; idempotent per ``run_name``."""

    @abstractmethod
    def get(self, dataset: str, version: int) -> ModelVersion:
        """Raises ``ModelVersionNotFoundError``."""

    @abstractmethod
    def versions(self, dataset: str) -> list[ModelVersion]:
        """Every version of a dataset, oldest first."""

    @abstractmethod
    def datasets(self) -> list[str]:
        """Every dataset with at least one version, sorted."""

    @abstractmethod
    def live(self, dataset: str) -> LivePointer | None: ...

    @abstractmethod
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
        """Make ``version`` live iff the live version is still ``expected_live``.

        Allowed from ``candidate`` and ``retired`` (a rollback); from ``rejected`` only with
        ``force``. Raises ``PromotionConflictError`` or ``InvalidTransitionError``.
        """

    @abstractmethod
    def reject(self, dataset: str, version: int, *, actor: str, reason: str) -> ModelVersion:
        """``candidate`` → ``rejected``; rejecting an already rejected version is a no-op."""

    @abstractmethod
    def record_failure(self, dataset: str, run_name: str, *, actor: str, reason: str) -> None:
        """Audit a run that failed before it could register (or decide on) a model."""

    @abstractmethod
    def audit(self, dataset: str) -> list[AuditEntry]:
        """The dataset's audit trail, oldest first."""

    @abstractmethod
    def retire_dataset(self, dataset: str, *, actor: str, reason: str) -> DatasetRetirement:
        """Mark the dataset retired, with a ``dataset_retired`` audit entry; retiring a retired
        dataset returns the first retirement unchanged and writes nothing."""

    @abstractmethod
    def unretire_dataset(self, dataset: str, *, actor: str, reason: str) -> DatasetRetirement:
        """Lift the retirement (``dataset_unretired`` audit entry) and return what it was.
        Raises ``InvalidTransitionError`` when the dataset is not retired."""

    @abstractmethod
    def retirement(self, dataset: str) -> DatasetRetirement | None:
        """The dataset's retirement, or None while it is in service."""

    @abstractmethod
    def active_datasets(self) -> list[str]:
        """``datasets()`` less the retired ones: what drift, alarms and listings go over."""

    @abstractmethod
    def purge(self, dataset: str, *, actor: str, reason: str) -> int:
        """Delete every record of a retired dataset (versions, live pointer, counter, runs, audit
        trail, retirement, retraining guard state) and leave one ``dataset_purged`` audit entry
        saying who purged how many records; returns that number. Raises
        ``InvalidTransitionError`` unless the dataset is retired."""

    def rollback(
        self, dataset: str, to_version: int | None, *, actor: str, reason: str
    ) -> Rollback:
        """Undo the last change of the live pointer, or put a named earlier version back.

        Without ``to_version``, the target is the version that was live immediately before the
        current one, as the audit trail's last ``promoted``/``rolled_back`` entry records it,
        whatever made the current one live (the gate, an operator's promotion of an older
        version, a rollback: a second rollback undoes the first). Only a version that served
        before (``retired``) can be rolled back to.
        """
        current = self.live(dataset)
        if current is None:
            raise InvalidTransitionError(f"dataset '{dataset}' has no live model to roll back")
        if to_version is None:
            to_version, why = _live_before(dataset, current.version, self.audit(dataset))
        else:
            why = f"version {to_version} was named"
        target = self.get(dataset, to_version)
        if target.status is not ModelStatus.RETIRED:
            raise InvalidTransitionError(
                f"version {to_version} of '{dataset}' is {target.status.value}; only a retired "
                "version (one that served before) can be rolled back to"
            )
        pointer = self.promote(
            dataset,
            to_version,
            expected_live=current.version,
            actor=actor,
            reason=reason,
            action="rolled_back",
        )
        return Rollback(pointer=pointer, from_version=current.version, why=why)


class Rollback(_Record):
    """What a rollback did: the pointer it wrote, the version it replaced, and why that target."""

    pointer: LivePointer
    from_version: int
    why: str  # e.g. "version 2 was live until pipeline:run-c promoted version 3 at ... (...)"


def _live_before(dataset: str, live: int, trail: list[AuditEntry]) -> tuple[int, str]:
    """The version live immediately before ``live``, from the audit entry that made it live.

    Every pointer change writes its audit entry in the same transaction, so the last
    ``promoted``/``rolled_back`` entry names the live version and, in ``previous_live``, the one
    it replaced.
    """
    changes = [e for e in trail if e.action in ("promoted", "rolled_back")]
    if not changes or changes[-1].version != live:
        found = "none" if not changes else f"version {changes[-1].version}"
        raise PromotionConflictError(
            f"'{dataset}': live version {live} is not the one the audit trail's last change made "
            f"live ({found}); the pointer moved while reading, try again"
        )
    last = changes[-1]
    verb = "promoted" if last.action == "promoted" else "rolled back to"
    when = f"{last.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    if last.previous_live is None:
        raise InvalidTransitionError(
            f"dataset '{dataset}': nothing was live before version {live} ({last.actor} "
            f"{verb} it first, at {when}); nothing to roll back to"
        )
    return last.previous_live, (
        f"version {last.previous_live} was live until {last.actor} {verb} version {live} "
        f"at {when} ({last.reason})"
    )
