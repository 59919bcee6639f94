"""The retraining guards' durable state and decision log, and the load-decide-claim loop.

The port (``GuardStore``) has a DynamoDB adapter on the registry table (``DynamoDBGuardStore``),
which the local stack runs on moto too; it and the tests' in-memory one (``InMemoryGuardStore``,
tests/fakes.py) pass the same contract tests (tests/integration/test_retrain_guard_store.py).

Every state change is a conditional write on the state's ``revision`` together with the
decision record that explains it (``commit``): of any number of callers that decided on the
same state, exactly one claims the start, the others see ``False``, read again and decide
again, which then says "in flight". ``run_guarded`` is that loop, plus starting the execution
once the claim is held and releasing the claim when the execution could not be started.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from functions.retrain import guard
from functions.retrain.guard import GuardCode, GuardPolicy, GuardState, Trigger
from functions.shared.errors import SluiceError
from functions.shared.registry_dynamodb import cancellation_reasons, item_key

Outcome = Literal["started", "skipped", "start_failed", "finished"]

STATE_KEY = "RETRAIN"
RECORD_PREFIX = "RETRAIN#"
TTL_ATTRIBUTE = "expires_at"
RECORD_TTL = timedelta(days=30)
MAX_ATTEMPTS = 5
# Same meaning as in registry_dynamodb: another writer or another transaction got there first.
_RETRYABLE_REASONS = frozenset({"ConditionalCheckFailed", "TransactionConflict"})


class GuardContentionError(SluiceError):
    """The state kept changing under us: no decision could be made and recorded."""


class DecisionRecord(BaseModel):
    """One line of a dataset's retraining log: what was decided about which event, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    at: AwareDatetime  # when it was decided
    outcome: Outcome
    guard: GuardCode | None = None  # the guard that refused a skip
    reason: str
    run_name: str | None = None
    event_id: str = Field(min_length=1, pattern=r"^[^#]+$")
    source: str | None = None  # the alarm
    trigger_reason: str | None = None  # the alarm's own reason
    trigger_at: AwareDatetime | None = None
    current_rows: int | None = None
    execution: str | None = None  # what ``start`` returned (the execution ARN)

    def sort_key(self) -> str:
        """``RETRAIN#<UTC, µs>#<event id>#<step>``: time order, then a failure after its start.

        The fixed-width UTC time makes string order time order; the event id keeps two events
        decided in the same microsecond apart; the step (1 for ``start_failed``, else 0) puts a
        start's failure, which carries the start's time, after the start.
        """
        utc = self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        step = 1 if self.outcome == "start_failed" else 0
        return f"{RECORD_PREFIX}{utc}#{self.event_id}#{step}"


class GuardStore(ABC):
    @abstractmethod
    def load(self, dataset: str) -> GuardState:
        """The dataset's state (strongly consistent); ``GuardState()`` (revision 0) if none."""

    @abstractmethod
    def commit(
        self,
        dataset: str,
        expected_revision: int,
        new_state: GuardState,
        decision_record: DecisionRecord,
    ) -> bool:
        """Write ``new_state`` and ``decision_record`` together iff the stored revision is still
        ``expected_revision`` (0: nothing stored yet). ``False``, and nothing written, if not."""

    @abstractmethod
    def record(self, dataset: str, decision_record: DecisionRecord) -> None:
        """Append a record that changes no state (a skip), or rewrite one (same sort key)."""

    @abstractmethod
    def decisions(self, dataset: str, limit: int = 50) -> list[DecisionRecord]:
        """The ``limit`` most recent records, newest first."""

    def try_start(
        self,
        dataset: str,
        expected_revision: int,
        new_state: GuardState,
        decision_record: DecisionRecord,
    ) -> bool:
        """Claim a start: ``commit`` of the state ``guard.apply`` made and its ``started``
        record, so a start is never recorded without its state change, nor the reverse."""
        if new_state.in_flight is None or decision_record.outcome != "started":
            raise ValueError("try_start takes a state with a run in flight and a started record")
        return self.commit(dataset, expected_revision, new_state, decision_record)

    def release(self, dataset: str, run_name: str, decision_record: DecisionRecord) -> bool:
        """Undo the claim of ``run_name`` (``guard.release``) and record why, atomically.

        ``False`` when that run is no longer the one in flight (nothing to undo; the record is
        still written)."""
        return self._change(dataset, lambda s: (guard.release(s, run_name), decision_record))

    def finish(
        self,
        dataset: str,
        run_name: str,
        rows: int | None,
        now: datetime,
        *,
        event_id: str | None = None,
    ) -> DecisionRecord:
        """A run ended (``guard.finish``): record it, and clear it if it is the one in flight.

        ``rows``: the rows it trained on, the next new-data baseline (None: it failed, keep the
        old one). ``event_id``: the completion event's id (default ``finish-<run name>``).
        """
        written: list[DecisionRecord] = []

        def change(state: GuardState) -> tuple[GuardState, DecisionRecord]:
            finished = guard.finish(state, run_name, rows)
            baseline = "baseline unchanged" if rows is None else f"new-data baseline {rows} rows"
            if finished.revision == state.revision:
                current = "none" if state.in_flight is None else state.in_flight.run_name
                reason = f"run {run_name} finished but was not in flight (in flight: {current})"
            else:
                reason = f"run {run_name} finished; {baseline}"
            record = DecisionRecord(
                dataset=dataset,
                at=now,
                outcome="finished",
                reason=reason,
                run_name=run_name,
                event_id=event_id or f"finish-{run_name}",
                current_rows=rows,
            )
            written.append(record)
            return finished, record

        self._change(dataset, change)
        return written[-1]

    def _change(
        self, dataset: str, change: Callable[[GuardState], tuple[GuardState, DecisionRecord]]
    ) -> bool:
        """Read, change, commit with the record; again on a conflict. ``False``: the change
        left the state as it was, so only the record was written."""
        for _ in range(MAX_ATTEMPTS):
            state = self.load(dataset)
            changed, decision_record = change(state)
            if changed.revision == state.revision:
                self.record(dataset, decision_record)
                return False
            if self.commit(dataset, state.revision, changed, decision_record):
                return True
        raise GuardContentionError(
            f"'{dataset}': the retrain state kept changing; gave up after {MAX_ATTEMPTS} attempts"
        )


def run_guarded(
    store: GuardStore,
    policy: GuardPolicy,
    trigger: Trigger,
    current_rows: int,
    now: datetime,
    start: Callable[[str], str],
    running: Sequence[str] = (),
) -> DecisionRecord:
    """Decide on one alarm and act on it; returns the record written.

    load → ``decide`` (``running``: the dataset's executing runs) → skip: record it. Start:
    ``try_start`` (on a conflict, read again and decide again, at most ``MAX_ATTEMPTS``
    times), and only with the claim held call
    ``start(run_name)`` (which starts the execution and returns its id). If ``start`` raises,
    the claim is released and a ``start_failed`` record says why, so the next alarm can try
    again; that record is returned, the error is not raised.
    """
    dataset = trigger.dataset
    for _ in range(MAX_ATTEMPTS):
        state = store.load(dataset)
        decision = guard.decide(policy, state, trigger, current_rows, now, running)
        record = DecisionRecord(
            dataset=dataset,
            at=now,
            outcome="started" if decision.action == "start" else "skipped",
            guard=decision.guard,
            reason=decision.reason,
            run_name=decision.run_name,
            event_id=trigger.event_id,
            source=trigger.source,
            trigger_reason=trigger.reason,
            trigger_at=trigger.at,
            current_rows=current_rows,
        )
        if decision.run_name is None:
            store.record(dataset, record)
            return record
        if store.try_start(dataset, state.revision, guard.apply(state, decision, now), record):
            break
    else:
        raise GuardContentionError(
            f"'{dataset}': could not claim a retraining start after {MAX_ATTEMPTS} attempts"
        )
    name = decision.run_name
    try:
        execution = start(name)
    except Exception as error:
        failed = record.model_copy(
            update={
                "outcome": "start_failed",
                "reason": f"starting run {name} failed ({type(error).__name__}: {error}); "
                "claim released",
            }
        )
        store.release(dataset, name, failed)
        return failed
    started = record.model_copy(update={"execution": execution})
    store.record(dataset, started)  # the same item as the claim's record, now with the execution
    return started


class DynamoDBGuardStore(GuardStore):
    """``GuardStore`` on the registry table (``registry_dynamodb.create_table``).

    Items, in the dataset's partition (``pk`` = dataset): ``sk = RETRAIN``, the state (with its
    ``revision``); ``sk = RETRAIN#<UTC>#<event id>#<step>``, one per decision record, with
    ``expires_at`` (epoch seconds, ``record_ttl`` after the decision) for the table's TTL.
    Calls GetItem, PutItem, Query and TransactWriteItems of two Puts: nothing beyond the
    registry's READ_ACTIONS/WRITE_ACTIONS (infra/aws/registry.py).
    """

    def __init__(self, client: Any, table_name: str, *, record_ttl: timedelta = RECORD_TTL):
        self._db = client
        self._table = table_name
        self._ttl = record_ttl

    def load(self, dataset: str) -> GuardState:
        response = self._db.get_item(
            TableName=self._table, Key=item_key(dataset, STATE_KEY), ConsistentRead=True
        )
        item: dict[str, Any] | None = response.get("Item")
        if item is None:
            return GuardState()
        return GuardState.model_validate(_decode(item))

    def commit(
        self,
        dataset: str,
        expected_revision: int,
        new_state: GuardState,
        decision_record: DecisionRecord,
    ) -> bool:
        """One TransactWriteItems: Put the state iff the revision is as expected, Put the
        record. A cancellation for a failed condition or a concurrent transaction is
        ``False``; any other error is raised."""
        check_commit(dataset, expected_revision, new_state, decision_record)
        state_put: dict[str, Any] = {
            "TableName": self._table,
            "Item": item_key(dataset, STATE_KEY) | _encode(new_state.model_dump(mode="json")),
        }
        if expected_revision == 0:
            state_put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            state_put["ConditionExpression"] = "#revision = :expected"
            state_put["ExpressionAttributeNames"] = {"#revision": "revision"}
            state_put["ExpressionAttributeValues"] = {":expected": {"N": str(expected_revision)}}
        items = [{"Put": state_put}, {"Put": self._record_put(dataset, decision_record)}]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            if not _RETRYABLE_REASONS.intersection(cancellation_reasons(error)):
                raise
            return False
        return True

    def record(self, dataset: str, decision_record: DecisionRecord) -> None:
        check_record(dataset, decision_record)
        self._db.put_item(**self._record_put(dataset, decision_record))

    def decisions(self, dataset: str, limit: int = 50) -> list[DecisionRecord]:
        if limit < 1:
            return []
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": dataset}, ":prefix": {"S": RECORD_PREFIX}},
            "ScanIndexForward": False,
            "ConsistentRead": True,
            "Limit": limit,
        }
        found: list[DecisionRecord] = []
        while len(found) < limit:
            response = self._db.query(**request)
            found.extend(
                DecisionRecord.model_validate(_decode(item) | {"dataset": dataset})
                for item in response["Items"]
            )
            if "LastEvaluatedKey" not in response:
                break
            request = request | {
                "ExclusiveStartKey": response["LastEvaluatedKey"],
                "Limit": limit - len(found),
            }
        return found[:limit]

    def _record_put(self, dataset: str, decision_record: DecisionRecord) -> dict[str, Any]:
        expires = int((decision_record.at + self._ttl).timestamp())
        fields = decision_record.model_dump(mode="json", exclude={"dataset"})
        item = (
            item_key(dataset, decision_record.sort_key())
            | _encode(fields)
            | {TTL_ATTRIBUTE: {"N": str(expires)}}
        )
        return {"TableName": self._table, "Item": item}


def check_commit(
    dataset: str, expected_revision: int, new_state: GuardState, decision_record: DecisionRecord
) -> None:
    """What every ``GuardStore.commit`` refuses, before it writes: a change that does not move
    the revision by one, a record filed under another dataset."""
    if new_state.revision != expected_revision + 1:
        raise ValueError(
            f"a change moves the revision by one: {expected_revision} → {new_state.revision}"
        )
    check_record(dataset, decision_record)


def check_record(dataset: str, decision_record: DecisionRecord) -> None:
    """What every ``GuardStore.record`` refuses: a record filed under another dataset."""
    if decision_record.dataset != dataset:
        raise ValueError(f"a record of '{decision_record.dataset}' filed under '{dataset}'")


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: _attribute(value) for name, value in fields.items()}


def _attribute(value: Any) -> dict[str, Any]:
    """A JSON value as a DynamoDB attribute value (numbers as strings: no ``Decimal``)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list | tuple):
        return {"L": [_attribute(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {k: _attribute(v) for k, v in value.items()}}
    raise TypeError(f"no attribute encoding for {value!r}")


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    """An item's attributes as model fields, less the keys and the TTL."""
    return {
        name: _value(value)
        for name, value in item.items()
        if name not in ("pk", "sk", TTL_ATTRIBUTE)
    }


def _value(attribute: dict[str, Any]) -> Any:
    (kind, value), *_ = attribute.items()
    if kind == "NULL":
        return None
    if kind == "N":
        text = str(value)
        return int(text) if text.lstrip("-").isdigit() else float(text)
    if kind == "L":
        return [_value(v) for v in value]
    if kind == "M":
        return {k: _value(v) for k, v in value.items()}
    return value  # S, BOOL
