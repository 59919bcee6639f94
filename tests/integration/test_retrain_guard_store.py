"""Contract tests of the retraining guards' store, and of ``run_guarded`` on it.

Every contract test runs against ``InMemoryGuardStore`` and ``DynamoDBGuardStore`` on moto (the
registry table from ``create_table``), so the fake cannot drift from the real adapter. The
threaded burst goes through ``SerializedClient`` (tests/integration/test_registry.py says why:
moto does not isolate concurrent transactions, DynamoDB does); the deterministic race below it
interleaves two callers' reads and writes by hand, with nothing left to the scheduler.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from functions.retrain.guard import GuardPolicy, GuardState, Trigger, apply, decide
from functions.retrain.guard_store import (
    RECORD_TTL,
    DecisionRecord,
    DynamoDBGuardStore,
    GuardContentionError,
    GuardStore,
    run_guarded,
)
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from tests.fakes import InMemoryGuardStore
from tests.integration.test_registry import SerializedClient, new_version

DATASET = "churn"
T0 = datetime(2026, 11, 22, 9, 17, 30, tzinfo=UTC)
POLICY = GuardPolicy()
RUN = "retrain-churn-202611220900"
BURST = 100
THREADS = 8


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def table(dynamodb: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)
    create_table(dynamodb, name)
    yield name
    dynamodb.delete_table(TableName=name)


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> GuardStore:
    if request.param == "memory":
        return InMemoryGuardStore()
    client = request.getfixturevalue("dynamodb")
    return DynamoDBGuardStore(SerializedClient(client), request.getfixturevalue("table"))


def alarm(i: int, at: datetime = T0) -> Trigger:
    return Trigger(
        dataset=DATASET, source="churn-drift", reason="PSI 0.31 > 0.2", at=at, event_id=f"evt-{i}"
    )


class Starter:
    """The injected ``start``: records the names it was asked to start; can be made to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.names: list[str] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        with self._lock:
            self.names.append(name)
        if self.fail:
            raise RuntimeError("ThrottlingException: rate exceeded")
        return f"arn:aws:states:us-east-1:123456789012:execution:pipeline:{name}"


def burst(store: GuardStore, starter: Starter, count: int = BURST) -> list[DecisionRecord]:
    """``count`` alarms within one minute, one after the other."""
    return [
        run_guarded(store, POLICY, alarm(i), 5000, T0 + i * timedelta(seconds=0.6), starter)
        for i in range(count)
    ]


# -- the burst ----------------------------------------------------------------------------------


def test_a_burst_of_alarms_starts_exactly_one_run(store: GuardStore) -> None:
    starter = Starter()
    records = burst(store, starter)
    assert starter.names == [RUN]
    assert [r.outcome for r in records] == ["started"] + ["skipped"] * (BURST - 1)
    assert {r.guard for r in records[1:]} == {"in_flight"}
    assert records[1].reason == f"in flight: run {RUN} started 0 s ago (presumed lost after 6 h)"
    assert records[-1].reason == f"in flight: run {RUN} started 59 s ago (presumed lost after 6 h)"
    # every decision is on record, newest first, the start with its execution
    logged = store.decisions(DATASET, limit=200)
    assert logged == records[::-1]
    assert logged[-1].execution == f"arn:aws:states:us-east-1:123456789012:execution:pipeline:{RUN}"
    assert [r.event_id for r in logged[:3]] == ["evt-99", "evt-98", "evt-97"]
    state = store.load(DATASET)
    assert state.in_flight is not None
    assert (state.in_flight.run_name, state.revision, state.starts) == (RUN, 1, (T0,))


def test_a_burst_from_eight_threads_starts_exactly_one_run(store: GuardStore) -> None:
    starter = Starter()
    barrier = threading.Barrier(THREADS)
    outcomes: list[DecisionRecord] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller(offset: int) -> None:
        barrier.wait()
        for i in range(offset, BURST, THREADS):
            try:
                record = run_guarded(store, POLICY, alarm(i), 5000, T0, starter)
            except BaseException as error:
                errors.append(error)
                return
            with lock:
                outcomes.append(record)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert starter.names == [RUN]
    assert sorted(r.outcome for r in outcomes) == ["skipped"] * (BURST - 1) + ["started"]
    assert {r.guard for r in outcomes if r.outcome == "skipped"} == {"in_flight"}
    assert len(store.decisions(DATASET, limit=200)) == BURST
    assert store.load(DATASET).revision == 1


def test_two_callers_deciding_on_the_same_state_only_one_claims(store: GuardStore) -> None:
    # Given two callers that both read the empty state and both decided to start
    seen_a, seen_b = store.load(DATASET), store.load(DATASET)
    decision_a = decide(POLICY, seen_a, alarm(1), 5000, T0)
    decision_b = decide(POLICY, seen_b, alarm(2), 5000, T0 + timedelta(seconds=1))
    assert decision_a.action == decision_b.action == "start"
    assert decision_a.run_name == decision_b.run_name == RUN  # the same window, the same run
    # When A claims first, then B
    assert store.try_start(DATASET, 0, apply(seen_a, decision_a, T0), started(1, T0))
    late = T0 + timedelta(seconds=1)
    assert not store.try_start(DATASET, 0, apply(seen_b, decision_b, late), started(2, late))
    # Then B's claim wrote nothing (neither state nor record), and B deciding again is refused
    assert store.load(DATASET).revision == 1
    assert [r.event_id for r in store.decisions(DATASET)] == ["evt-1"]
    again = decide(POLICY, store.load(DATASET), alarm(2), 5000, late)
    assert (again.action, again.guard) == ("skip", "in_flight")


def test_run_guarded_that_loses_the_race_decides_again(store: GuardStore) -> None:
    # Given a store where another caller claims the start between our read and our write
    starter = Starter()
    racing = RacingStore(store, lambda: run_guarded(store, POLICY, alarm(1), 5000, T0, starter))
    # When we try to start
    record = run_guarded(racing, POLICY, alarm(2), 5000, T0 + timedelta(seconds=1), starter)
    # Then the other caller started the run, we read again and skipped
    assert starter.names == [RUN]
    assert (record.outcome, record.guard) == ("skipped", "in_flight")
    assert racing.loads == 2
    assert [r.outcome for r in store.decisions(DATASET)] == ["skipped", "started"]


def test_a_store_that_always_conflicts_gives_up(store: GuardStore) -> None:
    class Conflicting(RacingStore):
        def commit(self, *args: Any, **kwargs: Any) -> bool:
            return False

    with pytest.raises(GuardContentionError, match="after 5 attempts"):
        run_guarded(Conflicting(store, lambda: None), POLICY, alarm(1), 5000, T0, Starter())


# -- a start that fails, a run that finishes ----------------------------------------------------


def test_a_failed_start_releases_the_claim_for_the_next_alarm(store: GuardStore) -> None:
    # Given a run started earlier today
    run_guarded(store, POLICY, alarm(0), 5000, T0 - 3 * timedelta(hours=1), Starter())
    store.finish(DATASET, "retrain-churn-202611220600", 5000, T0 - timedelta(hours=2))
    before = store.load(DATASET)
    # When an alarm's start fails
    failing = Starter(fail=True)
    failed = run_guarded(store, POLICY, alarm(1), 7000, T0, failing)
    # Then the failure is recorded and the state is as if the start never was
    assert failing.names == [RUN]
    assert failed.outcome == "start_failed"
    assert failed.reason == (
        f"starting run {RUN} failed (RuntimeError: ThrottlingException: rate exceeded); "
        "claim released"
    )
    after = store.load(DATASET)
    assert after.model_dump(exclude={"revision"}) == before.model_dump(exclude={"revision"})
    # and the next alarm starts, the same run name in the same window
    starter = Starter()
    retry = run_guarded(store, POLICY, alarm(2), 7000, T0 + timedelta(seconds=5), starter)
    assert (retry.outcome, starter.names) == ("started", [RUN])
    assert retry.reason.endswith("run 2 of 3 in the last 24 h")  # the failure did not count
    outcomes = [(r.event_id, r.outcome) for r in store.decisions(DATASET)]
    assert outcomes == [
        ("evt-2", "started"),
        ("evt-1", "start_failed"),  # the failure, after its own claim
        ("evt-1", "started"),
        ("finish-retrain-churn-202611220600", "finished"),
        ("evt-0", "started"),
    ]


def test_finish_clears_the_run_and_the_next_alarm_needs_new_data(store: GuardStore) -> None:
    run_guarded(store, POLICY, alarm(0), 5000, T0, Starter())
    done = store.finish(DATASET, RUN, 5000, T0 + timedelta(minutes=40), event_id="sfn-done-1")
    assert (done.outcome, done.reason) == (
        "finished",
        f"run {RUN} finished; new-data baseline 5000 rows",
    )
    state = store.load(DATASET)
    assert (state.in_flight, state.rows_at_last_run, state.revision) == (None, 5000, 2)
    later = T0 + timedelta(hours=2)
    skipped = run_guarded(store, POLICY, alarm(1, later), 5300, later, Starter())
    assert (skipped.outcome, skipped.guard) == ("skipped", "no_new_data")
    assert run_guarded(store, POLICY, alarm(2, later), 5500, later, Starter()).outcome == "started"


def test_finish_of_a_run_not_in_flight_is_recorded_and_changes_nothing(store: GuardStore) -> None:
    run_guarded(store, POLICY, alarm(0), 5000, T0, Starter())
    before = store.load(DATASET)
    record = store.finish(DATASET, "retrain-churn-202611210900", 4000, T0 + timedelta(hours=1))
    assert record.reason == (
        f"run retrain-churn-202611210900 finished but was not in flight (in flight: {RUN})"
    )
    assert store.load(DATASET) == before
    assert store.decisions(DATASET, limit=1) == [record]


# -- records ------------------------------------------------------------------------------------


def test_decisions_are_newest_first_and_limited(store: GuardStore) -> None:
    records = burst(store, Starter(), count=12)
    assert store.decisions(DATASET, limit=5) == records[::-1][:5]
    assert store.decisions(DATASET, limit=0) == []
    assert store.decisions("other", limit=5) == []


def test_a_commit_is_refused_for_an_unexpected_revision(store: GuardStore) -> None:
    decision = decide(POLICY, GuardState(), alarm(1), 5000, T0)
    claimed = apply(GuardState(), decision, T0)
    assert store.try_start(DATASET, 0, claimed, started(1, T0))
    stale = apply(GuardState(revision=4), decision, T0)
    assert not store.try_start(DATASET, 4, stale, started(2, T0))
    with pytest.raises(ValueError, match="revision by one"):
        store.try_start(DATASET, 1, claimed, started(3, T0))
    with pytest.raises(ValueError, match="filed under"):
        store.record("other", started(4, T0))
    assert [r.event_id for r in store.decisions(DATASET)] == ["evt-1"]


# -- DynamoDB only ------------------------------------------------------------------------------


def test_state_and_records_survive_a_new_store(dynamodb: Any, table: str) -> None:
    first = DynamoDBGuardStore(dynamodb, table)
    records = burst(first, Starter(), count=3)
    again = DynamoDBGuardStore(boto3.client("dynamodb", region_name="us-east-1"), table)
    assert again.load(DATASET) == first.load(DATASET)
    assert again.decisions(DATASET) == records[::-1]
    assert run_guarded(again, POLICY, alarm(9), 5000, T0, Starter()).guard == "in_flight"


def test_items_live_beside_the_registry_with_a_ttl_on_records(dynamodb: Any, table: str) -> None:
    registry = DynamoDBRegistry(dynamodb, table, clock=lambda: T0)
    registry.register(new_version("run-a"), actor="pipeline:run-a")
    store = DynamoDBGuardStore(dynamodb, table)
    record = run_guarded(store, POLICY, alarm(1), 5000, T0, Starter())
    items = {
        i["sk"]["S"]: i
        for i in dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": DATASET}},
        )["Items"]
    }
    state, log = items["RETRAIN"], items[record.sort_key()]
    assert record.sort_key() == "RETRAIN#2026-11-22T09:17:30.000000Z#evt-1#0"
    assert state["revision"] == {"N": "1"}
    assert "expires_at" not in state  # the state never expires
    assert log["expires_at"] == {"N": str(int((T0 + RECORD_TTL).timestamp()))}
    # neither side sees the other's items
    assert [e.action for e in registry.audit(DATASET)] == ["registered"]
    assert [v.version for v in registry.versions(DATASET)] == [1]
    assert store.decisions(DATASET) == [record]


def test_decisions_follow_pages(dynamodb: Any, table: str) -> None:
    store = DynamoDBGuardStore(PagingClient(dynamodb, page=4), table)
    records = burst(store, Starter(), count=11)
    assert store.decisions(DATASET, limit=10) == records[::-1][:10]
    assert store.decisions(DATASET, limit=50) == records[::-1]


def test_errors_other_than_a_conflict_are_raised(dynamodb: Any) -> None:
    store = DynamoDBGuardStore(dynamodb, "no-such-table")
    decision = decide(POLICY, GuardState(), alarm(1), 5000, T0)
    with pytest.raises(ClientError, match="ResourceNotFound"):
        store.try_start(DATASET, 0, apply(GuardState(), decision, T0), started(1, T0))


# -- helpers ------------------------------------------------------------------------------------


def started(i: int, at: datetime) -> DecisionRecord:
    return DecisionRecord(
        dataset=DATASET, at=at, outcome="started", reason="test", run_name=RUN, event_id=f"evt-{i}"
    )


class RacingStore(GuardStore):
    """Delegates to ``store``; runs ``meanwhile`` once, between the first load and the first
    commit, as another caller would in the gap."""

    def __init__(self, store: GuardStore, meanwhile: Callable[[], object]) -> None:
        self._store = store
        self._meanwhile: Callable[[], object] | None = meanwhile
        self.loads = 0

    def load(self, dataset: str) -> GuardState:
        self.loads += 1
        return self._store.load(dataset)

    def commit(
        self,
        dataset: str,
        expected_revision: int,
        new_state: GuardState,
        decision_record: DecisionRecord,
    ) -> bool:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return self._store.commit(dataset, expected_revision, new_state, decision_record)

    def record(self, dataset: str, decision_record: DecisionRecord) -> None:
        self._store.record(dataset, decision_record)

    def decisions(self, dataset: str, limit: int = 50) -> list[DecisionRecord]:
        return self._store.decisions(dataset, limit)


class PagingClient:
    """Cuts every Query at ``page`` items, as DynamoDB does at 1 MB."""

    def __init__(self, client: Any, page: int) -> None:
        self._client = client
        self._page = page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, **request: Any) -> Any:
        return self._client.query(**request | {"Limit": min(request["Limit"], self._page)})
