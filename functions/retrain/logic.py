"""The retrain function's two jobs, each from one EventBridge event.

- **An alarm entered ALARM** (``CloudWatch Alarm State Change``, infra/alarms.py names the
  alarms): the dataset comes from the alarm's metric dimension ``dataset``; its current data must
  make a complete dataset version (preprocess built it when the data was uploaded; otherwise the
  decision is a ``no_data`` skip); then the guards decide (guard.py) and, for a start, a run named
  by the guard is started over that version (``run_guarded``).
- **A run ended** (``Step Functions Execution Status Change``): a run the guard started is no
  longer in flight, and, if it succeeded, the rows it trained on become the new-data baseline.

Every alarm gets a decision record (started, skipped and why, start failed), every end of a
guarded run a ``finished`` record: ``sluice status`` lists them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from functions.retrain.guard import RUN_NAME_PREFIX, GuardCode, GuardPolicy, Trigger
from functions.retrain.guard_store import DecisionRecord, GuardStore, run_guarded
from functions.shared.errors import ContractError, SluiceError
from functions.shared.layout import DATASET_NAME
from functions.shared.orchestration import Orchestrator
from functions.shared.registry import ModelRegistry
from functions.shared.runs import current_data, run_input
from functions.shared.storage import ObjectStore

ALARM_EVENT = "CloudWatch Alarm State Change"
RUN_EVENT = "Step Functions Execution Status Change"
DATASET_DIMENSION = "dataset"


class RetrainEventError(SluiceError):
    """An event the retrain function cannot act on; the message says what is wrong and where."""


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _AlarmState(_Event):
    value: str
    reason: str = ""
    timestamp: AwareDatetime


class _AlarmDetail(_Event):
    alarm_name: str = Field(alias="alarmName", min_length=1)
    state: _AlarmState
    configuration: dict[str, Any] = Field(default_factory=dict)


class _RunDetail(_Event):
    execution_arn: str = Field(alias="executionArn")
    name: str = Field(min_length=1)
    status: Literal["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE"]
    input: str | None = None
    stop_date: int | None = Field(default=None, alias="stopDate")  # epoch milliseconds


def parse_alarm(event: dict[str, Any]) -> Trigger | None:
    """The trigger an ``ALARM`` state change asks for; ``None`` for OK or INSUFFICIENT_DATA
    (the rule matches ALARM only; the local stack's evaluator sends the same)."""
    try:
        detail = _AlarmDetail.model_validate(event.get("detail"))
    except ValidationError as error:
        raise RetrainEventError(f"alarm event {event.get('id')}: {_first(error)}") from None
    if detail.state.value != "ALARM":
        return None
    dataset = _alarm_dataset(detail)
    if dataset is None or not DATASET_NAME.match(dataset):
        raise RetrainEventError(
            f"alarm {detail.alarm_name}: no metric with a valid '{DATASET_DIMENSION}' dimension "
            f"in detail.configuration.metrics (found {dataset!r})"
        )
    event_id = str(event.get("id") or "")
    if not event_id or "#" in event_id:
        raise RetrainEventError(f"alarm {detail.alarm_name}: the event has no usable id")
    return Trigger(
        dataset=dataset,
        source=detail.alarm_name,
        reason=detail.state.reason,
        at=detail.state.timestamp,
        event_id=event_id,
    )


def on_alarm(
    trigger: Trigger,
    *,
    store: ObjectStore,
    guards: GuardStore,
    orchestrator: Orchestrator,
    registry: ModelRegistry,
    policy: GuardPolicy,
    raw_bucket: str,
    artifacts_bucket: str,
    now: datetime,
) -> DecisionRecord:
    """Decide on one alarm, start the run if the guards allow, and return the record written.
    A retired dataset never retrains: the alarm is recorded as a ``retired`` skip."""
    dataset = trigger.dataset
    retirement = registry.retirement(dataset)
    if retirement is not None:
        return _skip(
            guards,
            trigger,
            now,
            "retired",
            f"dataset retired on {retirement.at.isoformat()} by {retirement.actor}: "
            f"{retirement.reason}",
        )
    try:
        data = current_data(store, raw_bucket, artifacts_bucket, dataset)
    except ContractError as error:
        return _no_data(guards, trigger, now, f"the contract does not parse: {error}")
    if data is None:
        return _no_data(guards, trigger, now, f"no contract or no data files under {dataset}/")
    manifest = data.manifest
    if manifest is None:
        return _no_data(
            guards,
            trigger,
            now,
            f"the current data ({data.sources} files) has no complete dataset version "
            f"{data.dataset_version}: its upload is being preprocessed, or was rejected",
        )

    def start(name: str) -> str:
        return orchestrator.start_run(
            run_input(name, manifest, data.contract, artifacts_bucket)
        ).run_id

    return run_guarded(
        guards,
        policy,
        trigger,
        manifest.rows.accepted,
        now,
        start,
        running=orchestrator.running(dataset),
    )


def on_run_end(event: dict[str, Any], *, guards: GuardStore) -> DecisionRecord | None:
    """Record the end of a run the guard started; ``None`` for any other run (an upload's)."""
    try:
        detail = _RunDetail.model_validate(event.get("detail"))
    except ValidationError as error:
        raise RetrainEventError(f"run event {event.get('id')}: {_first(error)}") from None
    if detail.status in ("RUNNING", "PENDING_REDRIVE") or not detail.name.startswith(
        RUN_NAME_PREFIX
    ):
        return None
    try:
        run = json.loads(detail.input or "{}")
        dataset = run["dataset"]
    except (ValueError, KeyError, TypeError):
        raise RetrainEventError(
            f"run {detail.name}: its input names no dataset (detail.input)"
        ) from None
    rows = run.get("rows") if detail.status == "SUCCEEDED" else None
    ended = (
        datetime.fromtimestamp(detail.stop_date / 1000, UTC)
        if detail.stop_date is not None
        else datetime.now(UTC)
    )
    return guards.finish(
        dataset,
        detail.name,
        rows if isinstance(rows, int) else None,
        ended,
        event_id=f"finish-{detail.name}-{detail.status}",
    )


def _no_data(guards: GuardStore, trigger: Trigger, now: datetime, reason: str) -> DecisionRecord:
    return _skip(guards, trigger, now, "no_data", f"no data: {reason}")


def _skip(
    guards: GuardStore, trigger: Trigger, now: datetime, guard: GuardCode, reason: str
) -> DecisionRecord:
    record = DecisionRecord(
        dataset=trigger.dataset,
        at=now,
        outcome="skipped",
        guard=guard,
        reason=reason,
        event_id=trigger.event_id,
        source=trigger.source,
        trigger_reason=trigger.reason,
        trigger_at=trigger.at,
    )
    guards.record(trigger.dataset, record)
    return record


def _alarm_dataset(detail: _AlarmDetail) -> str | None:
    for metric in detail.configuration.get("metrics") or []:
        stat = metric.get("metricStat") if isinstance(metric, dict) else None
        dimensions = ((stat or {}).get("metric") or {}).get("dimensions") or {}
        value = dimensions.get(DATASET_DIMENSION)
        if isinstance(value, str):
            return value
    return None


def _first(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(p) for p in problem["loc"]) or "detail"
    return f"detail.{where}: {problem['msg']}"
