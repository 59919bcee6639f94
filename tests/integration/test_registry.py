"""Contract tests of the model registry: both adapters, the same rules.

Every test runs against ``InMemoryRegistry`` (tests/fakes.py) and ``DynamoDBRegistry`` on moto,
so the fake the unit tests lean on cannot drift from the real adapter.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.shared.registry import (
    InvalidTransitionError,
    ModelRegistry,
    ModelStatus,
    ModelVersion,
    ModelVersionNotFoundError,
    NewModelVersion,
    PromotionConflictError,
)
from functions.shared.registry_dynamodb import (
    TABLE_KEY_SCHEMA,
    DynamoDBRegistry,
    create_table,
)
from tests.fakes import InMemoryRegistry
from tests.integration.conftest import Aws

DATASET = "churn"
START = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
THREADS = 8


class SerializedClient:
    """A boto3 client whose calls run one at a time, as DynamoDB makes each request atomic.

    moto applies a TransactWriteItems item by item and, when one fails, restores a copy of the
    whole table taken before: two threads inside moto at once can interleave their checks and
    writes, or one can undo the other's committed write. Real DynamoDB isolates transactions, so
    the race tests serialize single requests (never the adapter's read-then-write sequence,
    which is what they exercise).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)

        def serialized(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return call(*args, **kwargs)

        return serialized


class SteppingClock:
    """A clock that only moves when told: equal timestamps test ordering within one tick."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """One moto DynamoDB for the module: starting moto and a client per test costs ~0.3 s."""
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def table(dynamodb: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh registry table for one test, named after it."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)
    create_table(dynamodb, name)
    yield name
    dynamodb.delete_table(TableName=name)


@pytest.fixture(params=["memory", "dynamodb"])
def registry(request: pytest.FixtureRequest, clock: SteppingClock) -> Iterator[ModelRegistry]:
    if request.param == "memory":
        yield InMemoryRegistry(clock=clock)
        return
    client = request.getfixturevalue("dynamodb")
    table = request.getfixturevalue("table")  # a fresh table per test
    yield DynamoDBRegistry(SerializedClient(client), table, clock=clock)


def new_version(run: str, dataset: str = DATASET, **changes: Any) -> NewModelVersion:
    fields: dict[str, Any] = {
        "dataset": dataset,
        "run_name": run,
        "dataset_version": f"dv-{run}",
        "model_uri": f"s3://artifacts/{dataset}/runs/{run}/model.onnx",
        "card_uri": f"s3://artifacts/{dataset}/runs/{run}/model_card.json",
        "report_uri": f"s3://artifacts/{dataset}/runs/{run}/evaluation.json",
        "artifact_uri": f"s3://artifacts/{dataset}/runs/{run}/output/model.tar.gz",
        "sha256": hashlib.sha256(run.encode()).hexdigest(),
        "metric": "f1_macro",
        "metric_value": 0.81,
        "summary": {"rows": 400},
    }
    return NewModelVersion(**(fields | changes))


def register(registry: ModelRegistry, *runs: str) -> list[int]:
    return [registry.register(new_version(run), actor=f"pipeline:{run}").version for run in runs]


def promote(registry: ModelRegistry, version: int, expected_live: int | None) -> int:
    pointer = registry.promote(
        DATASET, version, expected_live=expected_live, actor="pipeline:test", reason="gate passed"
    )
    return pointer.version


def statuses(registry: ModelRegistry) -> dict[int, ModelStatus]:
    return {v.version: v.status for v in registry.versions(DATASET)}


def race(attempts: list[Callable[[], object]]) -> list[object]:
    """Run the attempts on as many threads released together; return results or exceptions."""
    barrier = threading.Barrier(len(attempts))
    outcomes: list[object] = [None] * len(attempts)

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = attempts[index]()
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(attempts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


# -- registration -------------------------------------------------------------------------------


def test_register_allocates_consecutive_versions_as_candidates(registry: ModelRegistry) -> None:
    # Given a fresh dataset / When three runs register
    versions = register(registry, "run-a", "run-b", "run-c")
    # Then they get 1, 2, 3, all candidates
    assert versions == [1, 2, 3]
    assert statuses(registry) == dict.fromkeys([1, 2, 3], ModelStatus.CANDIDATE)


def test_register_is_idempotent_per_run(registry: ModelRegistry) -> None:
    # Given a run that registered version 1
    first = registry.register(new_version("run-a"), actor="pipeline:run-a")
    # When the same run registers again (a Step Functions retry)
    again = registry.register(new_version("run-a"), actor="pipeline:run-a")
    # Then it gets the same record back, and nothing new was allocated or audited
    assert again == first
    assert register(registry, "run-b") == [2]
    assert [e.action for e in registry.audit(DATASET)] == ["registered", "registered"]


def test_concurrent_duplicate_registrations_share_one_version(registry: ModelRegistry) -> None:
    # Given the same run registering from several threads at once
    outcomes = race(
        [lambda: registry.register(new_version("run-a"), actor="pipeline:run-a")] * THREADS
    )
    # Then every call returns the one version that was recorded
    recorded = registry.versions(DATASET)
    assert len(recorded) == 1
    assert outcomes == [recorded[0]] * THREADS
    assert [e.action for e in registry.audit(DATASET)] == ["registered"]


# -- promotion ----------------------------------------------------------------------------------


def test_first_promotion_expects_no_live_model(registry: ModelRegistry) -> None:
    # Given a candidate and no live model
    register(registry, "run-a")
    # When it is promoted with expected_live=None
    pointer = registry.promote(
        DATASET, 1, expected_live=None, actor="pipeline:run-a", reason="gate passed"
    )
    # Then the pointer names it with the version's own model, and the version is live
    record = registry.get(DATASET, 1)
    assert (pointer.version, pointer.generation) == (1, 1)
    assert (pointer.sha256, pointer.model_uri, pointer.card_uri) == (
        record.sha256,
        record.model_uri,
        record.card_uri,
    )
    assert registry.live(DATASET) == pointer
    assert record.status is ModelStatus.LIVE
    assert record.status_reason == "gate passed"


def test_promotion_retires_previous_live_version_and_bumps_generation(
    registry: ModelRegistry,
) -> None:
    # Given version 1 live and a candidate 2
    register(registry, "run-a", "run-b")
    promote(registry, 1, expected_live=None)
    # When 2 is promoted over 1
    pointer = registry.promote(DATASET, 2, expected_live=1, actor="pipeline:run-b", reason="better")
    # Then 2 is live, 1 retired, and the generation moved on
    assert (pointer.version, pointer.generation) == (2, 2)
    assert statuses(registry) == {1: ModelStatus.RETIRED, 2: ModelStatus.LIVE}
    assert registry.get(DATASET, 1).status_reason == "replaced by version 2"


@pytest.mark.parametrize("expected_live", [1, None])
def test_stale_promotion_is_refused_and_changes_nothing(
    registry: ModelRegistry, expected_live: int | None
) -> None:
    # Given version 2 live (it replaced 1) and a candidate 3 from a run that saw an older state
    register(registry, "run-a", "run-b", "run-c")
    promote(registry, 1, expected_live=None)
    promote(registry, 2, expected_live=1)
    before = (registry.live(DATASET), registry.versions(DATASET), registry.audit(DATASET))
    # When that run promotes 3 expecting an older live version
    with pytest.raises(PromotionConflictError, match=f"expected live version {expected_live}"):
        promote(registry, 3, expected_live=expected_live)
    # Then pointer, statuses and audit trail are exactly as they were
    after = (registry.live(DATASET), registry.versions(DATASET), registry.audit(DATASET))
    assert after == before


def test_racing_promotions_have_exactly_one_winner(registry: ModelRegistry) -> None:
    # Given version 1 live and one candidate per racer, all of which read live = 1
    register(registry, *[f"run-{i}" for i in range(THREADS + 1)])
    promote(registry, 1, expected_live=None)
    candidates = range(2, THREADS + 2)

    def attempt(version: int) -> Callable[[], object]:
        return lambda: promote(registry, version, expected_live=1)

    # When they all promote at once
    outcomes = race([attempt(version) for version in candidates])
    # Then one won, the others were told of the conflict, and the state is the winner's
    winners = [outcome for outcome in outcomes if isinstance(outcome, int)]
    conflicts = [o for o in outcomes if isinstance(o, PromotionConflictError)]
    assert len(winners) == 1, outcomes
    assert len(conflicts) == THREADS - 1, outcomes
    live = registry.live(DATASET)
    assert live is not None
    assert (live.version, live.generation) == (winners[0], 2)
    current = statuses(registry)
    assert [v for v, s in current.items() if s is ModelStatus.LIVE] == winners
    assert current[1] is ModelStatus.RETIRED
    promotions = [e for e in registry.audit(DATASET) if e.action == "promoted"]
    assert [(e.version, e.previous_live) for e in promotions] == [(1, None), (winners[0], 1)]


def test_promoting_the_live_version_again_is_refused(registry: ModelRegistry) -> None:
    # Given version 1 live
    register(registry, "run-a")
    promote(registry, 1, expected_live=None)
    # When it is promoted again over itself / Then it is refused and the generation stays 1
    with pytest.raises(InvalidTransitionError, match="already live"):
        promote(registry, 1, expected_live=1)
    live = registry.live(DATASET)
    assert live is not None
    assert live.generation == 1


def test_rejected_version_goes_live_only_when_forced(registry: ModelRegistry) -> None:
    # Given a rejected version
    register(registry, "run-a")
    registry.reject(DATASET, 1, actor="pipeline:run-a", reason="f1 below threshold")
    # When it is promoted without force / Then it is refused
    with pytest.raises(InvalidTransitionError, match="rejected"):
        promote(registry, 1, expected_live=None)
    assert registry.live(DATASET) is None
    # When an operator forces it / Then it is live, and the audit says who and why
    pointer = registry.promote(
        DATASET, 1, expected_live=None, actor="cli:alice", reason="known-good", force=True
    )
    assert pointer.version == 1
    assert registry.get(DATASET, 1).status is ModelStatus.LIVE
    last = registry.audit(DATASET)[-1]
    assert (last.action, last.actor, last.reason) == ("promoted", "cli:alice", "known-good")


# -- rejection ----------------------------------------------------------------------------------


def test_reject_is_idempotent(registry: ModelRegistry) -> None:
    # Given a candidate
    register(registry, "run-a")
    # When it is rejected twice (a retried reject step)
    first = registry.reject(DATASET, 1, actor="pipeline:run-a", reason="f1 0.41 < 0.6")
    second = registry.reject(DATASET, 1, actor="pipeline:run-a", reason="retry")
    # Then it is rejected once, with the first reason, and audited once
    assert first.status is ModelStatus.REJECTED
    assert second == first == registry.get(DATASET, 1)
    assert first.status_reason == "f1 0.41 < 0.6"
    rejections = [e for e in registry.audit(DATASET) if e.action == "rejected"]
    assert [(e.version, e.run_name) for e in rejections] == [(1, "run-a")]


@pytest.mark.parametrize("status", [ModelStatus.LIVE, ModelStatus.RETIRED])
def test_reject_refuses_a_version_that_served(registry: ModelRegistry, status: ModelStatus) -> None:
    # Given version 1 live, then (for retired) replaced by 2
    register(registry, "run-a", "run-b")
    promote(registry, 1, expected_live=None)
    if status is ModelStatus.RETIRED:
        promote(registry, 2, expected_live=1)
    # When version 1 is rejected / Then it is refused and keeps its status
    with pytest.raises(InvalidTransitionError, match=status.value):
        registry.reject(DATASET, 1, actor="pipeline:run-a", reason="late")
    assert registry.get(DATASET, 1).status is status


# -- rollback -----------------------------------------------------------------------------------


def test_rollback_without_target_restores_the_most_recent_retired_version(
    registry: ModelRegistry,
) -> None:
    # Given 1 then 2 then 3 promoted in turn
    register(registry, "run-a", "run-b", "run-c")
    promote(registry, 1, expected_live=None)
    promote(registry, 2, expected_live=1)
    promote(registry, 3, expected_live=2)
    # When an operator rolls back without naming a version
    pointer = registry.rollback(
        DATASET, None, actor="cli:alice", reason="latency regression"
    ).pointer
    # Then 2 serves again, 3 is retired, and the generation still grows
    assert (pointer.version, pointer.generation) == (2, 4)
    assert statuses(registry) == {
        1: ModelStatus.RETIRED,
        2: ModelStatus.LIVE,
        3: ModelStatus.RETIRED,
    }
    last = registry.audit(DATASET)[-1]
    assert (last.action, last.version, last.previous_live) == ("rolled_back", 2, 3)


def test_rollback_to_a_named_retired_version(registry: ModelRegistry) -> None:
    # Given 1 then 2 then 3 promoted in turn
    register(registry, "run-a", "run-b", "run-c")
    promote(registry, 1, expected_live=None)
    promote(registry, 2, expected_live=1)
    promote(registry, 3, expected_live=2)
    # When an operator rolls back to 1 / Then 1 serves again
    rollback = registry.rollback(DATASET, 1, actor="cli:alice", reason="back to the baseline")
    assert (rollback.from_version, rollback.pointer.version) == (3, 1)
    assert rollback.why == "version 1 was named"
    assert statuses(registry)[1] is ModelStatus.LIVE
    assert statuses(registry)[3] is ModelStatus.RETIRED


@pytest.mark.parametrize("status", [ModelStatus.CANDIDATE, ModelStatus.REJECTED])
def test_rollback_to_a_version_that_never_served_is_refused(
    registry: ModelRegistry, status: ModelStatus
) -> None:
    # Given 1 live and 2 a candidate (or rejected)
    register(registry, "run-a", "run-b")
    promote(registry, 1, expected_live=None)
    if status is ModelStatus.REJECTED:
        registry.reject(DATASET, 2, actor="pipeline:run-b", reason="worse")
    # When rolling back to 2 / Then it is refused and 1 still serves
    with pytest.raises(InvalidTransitionError, match=status.value):
        registry.rollback(DATASET, 2, actor="cli:alice", reason="try")
    live = registry.live(DATASET)
    assert live is not None
    assert live.version == 1


def test_rollback_with_nothing_live_is_refused(registry: ModelRegistry) -> None:
    # Given versions but no live one / When rolling back / Then it is refused
    register(registry, "run-a")
    with pytest.raises(InvalidTransitionError, match="no live model"):
        registry.rollback(DATASET, None, actor="cli:alice", reason="oops")


def test_rollback_with_nothing_live_before_is_refused(registry: ModelRegistry) -> None:
    # Given only version 1 ever served / When rolling back by default / Then it is refused,
    # saying nothing was live before it
    register(registry, "run-a")
    promote(registry, 1, expected_live=None)
    with pytest.raises(InvalidTransitionError, match="nothing was live before version 1"):
        registry.rollback(DATASET, None, actor="cli:alice", reason="oops")


def test_rollback_after_promoting_an_older_version_returns_to_the_one_it_replaced(
    registry: ModelRegistry, clock: SteppingClock
) -> None:
    # Given 1 then 2 promoted, then an operator promoting 1 again over 2
    register(registry, "run-a", "run-b")
    promote(registry, 1, expected_live=None)
    promote(registry, 2, expected_live=1)
    registry.promote(DATASET, 1, expected_live=2, actor="cli:bob", reason="try the old one")
    # When an operator rolls back without naming a version
    rollback = registry.rollback(DATASET, None, actor="cli:alice", reason="undo bob")
    # Then 2, which 1 replaced, serves again, and the record says from which to which and why
    assert (rollback.from_version, rollback.pointer.version) == (1, 2)
    assert statuses(registry) == {1: ModelStatus.RETIRED, 2: ModelStatus.LIVE}
    assert rollback.why == (
        "version 2 was live until cli:bob promoted version 1 at 2026-11-03 09:30:00 UTC "
        "(try the old one)"
    )
    last = registry.audit(DATASET)[-1]
    assert (last.action, last.version, last.previous_live, last.reason) == (
        "rolled_back",
        2,
        1,
        "undo bob",
    )


def test_a_second_rollback_undoes_the_first(registry: ModelRegistry) -> None:
    # Given 1, 2, 3 promoted in turn, then rolled back to 2
    register(registry, "run-a", "run-b", "run-c")
    promote(registry, 1, expected_live=None)
    promote(registry, 2, expected_live=1)
    promote(registry, 3, expected_live=2)
    registry.rollback(DATASET, None, actor="cli:alice", reason="latency regression")
    # When rolling back again without naming a version
    rollback = registry.rollback(DATASET, None, actor="cli:alice", reason="false alarm")
    # Then 3, live before the first rollback, serves again (undo of the undo; not a step to 1)
    assert (rollback.from_version, rollback.pointer.version) == (2, 3)
    assert "cli:alice rolled back to version 2" in rollback.why
    assert statuses(registry) == {
        1: ModelStatus.RETIRED,
        2: ModelStatus.RETIRED,
        3: ModelStatus.LIVE,
    }


def test_the_gates_refusal_survives_a_forced_promotion_and_a_rollback(
    registry: ModelRegistry,
) -> None:
    # Given 1 live, and 2 refused by the gate and rejected
    registry.register(new_version("run-a", gate="passed"), actor="pipeline:run-a")
    refusal = ["roc_auc 0.61 < threshold 0.75"]
    registry.register(
        new_version("run-b", gate="refused", gate_reasons=refusal), actor="pipeline:run-b"
    )
    promote(registry, 1, expected_live=None)
    registry.reject(DATASET, 2, actor="pipeline:run-b", reason="gate refused")
    # When an operator forces 2 live, then rolls back
    registry.promote(
        DATASET, 2, expected_live=1, actor="cli:alice", reason="known-good", force=True
    )
    forced = registry.get(DATASET, 2)
    registry.rollback(DATASET, None, actor="cli:alice", reason="it was bad after all")
    # Then 2's lifecycle moved (live, then retired) while its gate verdict stayed, in every read
    assert (forced.status, forced.gate) == (ModelStatus.LIVE, "refused")
    after = {v.version: (v.status, v.gate, v.gate_reasons) for v in registry.versions(DATASET)}
    assert after == {
        1: (ModelStatus.LIVE, "passed", []),
        2: (ModelStatus.RETIRED, "refused", refusal),
    }
    assert registry.get(DATASET, 2).gate == "refused"


def test_a_record_written_before_the_gate_field_reads_its_verdict_from_the_summary() -> None:
    # Given a version record as the registry stored it before `gate` existed
    record = new_version("run-a", summary={"gate_passed": False}).model_dump() | {
        "version": 1,
        "status": "retired",
        "created_at": START,
        "updated_at": START,
    }
    # When it is read / Then the gate's refusal it recorded is its verdict
    assert ModelVersion.model_validate(record).gate == "refused"


# -- unknown names ------------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset", "version"), [("no-such-dataset", 1), (DATASET, 9)])
def test_unknown_dataset_or_version_is_not_found(
    registry: ModelRegistry, dataset: str, version: int
) -> None:
    # Given a dataset with one version
    register(registry, "run-a")
    # When an unknown dataset or version is named / Then every operation says not found
    with pytest.raises(ModelVersionNotFoundError):
        registry.get(dataset, version)
    with pytest.raises(ModelVersionNotFoundError):
        registry.promote(dataset, version, expected_live=None, actor="cli:alice", reason="x")
    with pytest.raises(ModelVersionNotFoundError):
        registry.reject(dataset, version, actor="cli:alice", reason="x")
    assert registry.live(DATASET) is None


# -- reads and the audit trail ------------------------------------------------------------------


def test_audit_trail_says_who_did_what_and_why_in_order(
    registry: ModelRegistry, clock: SteppingClock
) -> None:
    # Given a register → promote → register → promote → rollback sequence, all in one clock tick
    # but the last
    register(registry, "run-a")
    registry.promote(DATASET, 1, expected_live=None, actor="pipeline:run-a", reason="first model")
    register(registry, "run-b")
    registry.promote(DATASET, 2, expected_live=1, actor="pipeline:run-b", reason="f1 +0.04")
    clock.now = START + timedelta(minutes=5)
    registry.rollback(DATASET, None, actor="cli:alice", reason="latency regression")
    # When the audit trail is read / Then it lists every step, oldest first
    trail = [
        (e.action, e.version, e.previous_live, e.actor, e.reason, e.run_name, e.at)
        for e in registry.audit(DATASET)
    ]
    registered_a = "run run-a registered a candidate"
    registered_b = "run run-b registered a candidate"
    assert trail == [
        ("registered", 1, None, "pipeline:run-a", registered_a, "run-a", START),
        ("promoted", 1, None, "pipeline:run-a", "first model", None, START),
        ("registered", 2, None, "pipeline:run-b", registered_b, "run-b", START),
        ("promoted", 2, 1, "pipeline:run-b", "f1 +0.04", None, START),
        ("rolled_back", 1, 2, "cli:alice", "latency regression", None, clock.now),
    ]


def test_record_failure_appears_in_the_audit(registry: ModelRegistry) -> None:
    # Given a run that failed before it registered anything
    registry.record_failure(
        DATASET, "run-x", actor="pipeline:run-x", reason="TrainingError: no rows"
    )
    # When the audit trail is read / Then the failure is there, with no version
    [entry] = registry.audit(DATASET)
    assert (entry.action, entry.version, entry.run_name, entry.reason) == (
        "run_failed",
        None,
        "run-x",
        "TrainingError: no rows",
    )
    # And the dataset still has no versions, so it is not listed
    assert registry.versions(DATASET) == []
    assert registry.datasets() == []


def test_fresh_dataset_has_no_live_model_versions_or_audit(registry: ModelRegistry) -> None:
    assert registry.live(DATASET) is None
    assert registry.versions(DATASET) == []
    assert registry.audit(DATASET) == []
    assert registry.datasets() == []


def test_datasets_and_versions_are_listed_in_order(registry: ModelRegistry) -> None:
    # Given eleven versions of one dataset (two-digit numbers) and one of two others
    register(registry, *[f"run-{i}" for i in range(11)])
    for dataset in ("titanic", "abalone"):
        registry.register(new_version("run-0", dataset=dataset), actor="pipeline:run-0")
    # When listed / Then datasets are sorted and versions oldest first, per dataset
    assert registry.datasets() == ["abalone", DATASET, "titanic"]
    assert [v.version for v in registry.versions(DATASET)] == list(range(1, 12))
    assert [v.run_name for v in registry.versions("titanic")] == ["run-0"]


def test_record_round_trips_with_missing_metric_and_nested_summary(
    registry: ModelRegistry,
) -> None:
    # Given a version whose metric could not be measured and a summary with nested values
    summary: dict[str, Any] = {
        "rows": {"train": 280, "test": 120},
        "per_class_f1": [0.125, 0.9999999999999999, None],
        "tiny": 1e-12,
        "negative": -3.5,
        "calibrated": True,
        "note": "naïve ≥ baseline",
    }
    sent = new_version("run-a", metric_value=None, summary=summary)
    # When registered and read back
    registered = registry.register(sent, actor="pipeline:run-a")
    read = registry.get(DATASET, registered.version)
    # Then every field survived exactly
    assert read == registered
    assert read.model_dump(exclude={"version", "status", "created_at", "updated_at"}) == (
        sent.model_dump() | {"status_reason": ""}
    )
    assert read.metric_value is None
    assert read.summary == summary
    # And a float metric keeps every digit through DynamoDB's decimal numbers
    awkward = registry.register(new_version("run-b", metric_value=0.1 + 0.2), actor="pipeline")
    assert registry.get(DATASET, awkward.version).metric_value == 0.1 + 0.2


def test_large_partitions_are_read_across_pages(registry: ModelRegistry) -> None:
    # Given versions whose items total more than one 1 MB Query/Scan page
    padding = "x" * 300_000
    for run in ("run-a", "run-b", "run-c", "run-d"):
        registry.register(new_version(run, summary={"padding": padding}), actor="pipeline")
    registry.register(new_version("run-a", dataset="zebra"), actor="pipeline")
    # When listed / Then nothing on a later page is missed
    assert [v.version for v in registry.versions(DATASET)] == [1, 2, 3, 4]
    assert registry.datasets() == [DATASET, "zebra"]
    assert len(registry.audit(DATASET)) == 4


# -- DynamoDB adapter: writes that land between its read and its write --------------------------


class InterferingClient:
    """A client that lets another writer act just before the adapter's first transaction.

    It makes deterministic the window the threaded race only hits by chance: the adapter has
    read the pointer, someone else changes it, then the adapter's conditional write arrives.
    """

    def __init__(self, client: Any, interfere: Callable[[], object]) -> None:
        self._client = client
        self._interfere: Callable[[], object] | None = interfere

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name != "transact_write_items" or self._interfere is None:
            return call
        interfere, self._interfere = self._interfere, None
        interfere()
        return call


def test_pointer_moved_after_the_read_is_a_conflict(dynamodb: Any, table: str) -> None:
    # Given 1 live, and an operator who promotes 2 just after a run read "live = 1"
    operator = DynamoDBRegistry(dynamodb, table)
    register(operator, "run-a", "run-b", "run-c")
    promote(operator, 1, expected_live=None)
    run = DynamoDBRegistry(
        InterferingClient(dynamodb, lambda: promote(operator, 2, expected_live=1)), table
    )
    # When the run's promotion of 3 arrives / Then it is refused, naming the new live version
    with pytest.raises(PromotionConflictError, match="expected live version 1, found 2"):
        promote(run, 3, expected_live=1)
    assert statuses(operator) == {
        1: ModelStatus.RETIRED,
        2: ModelStatus.LIVE,
        3: ModelStatus.CANDIDATE,
    }


def test_pointer_that_moved_and_came_back_is_promoted_over_with_the_right_generation(
    dynamodb: Any, table: str
) -> None:
    # Given 1 live, and an operator who promotes 2 then rolls back to 1 just after a run read
    operator = DynamoDBRegistry(dynamodb, table)
    register(operator, "run-a", "run-b", "run-c")
    promote(operator, 1, expected_live=None)

    def promote_and_roll_back() -> None:
        promote(operator, 2, expected_live=1)
        operator.rollback(DATASET, 1, actor="cli:alice", reason="undo")

    run = DynamoDBRegistry(InterferingClient(dynamodb, promote_and_roll_back), table)
    # When the run promotes 3 over 1, which is live again
    pointer = promote(run, 3, expected_live=1)
    # Then it succeeds (1 is what it expected) and the generation counts all four changes
    live = operator.live(DATASET)
    assert live is not None
    assert (live.version, live.generation) == (pointer, 4)
    assert statuses(operator) == {
        1: ModelStatus.RETIRED,
        2: ModelStatus.RETIRED,
        3: ModelStatus.LIVE,
    }


# -- the local stack ----------------------------------------------------------------------------


def test_provision_creates_the_registry_table_and_decisions_topic(aws: Aws) -> None:
    # Given the provisioned local resources
    topology = aws.topology
    dynamodb = boto3.client("dynamodb", region_name=topology.region)
    sns = boto3.client("sns", region_name=topology.region)
    # Then the registry table has the adapter's key schema and on-demand billing
    table = dynamodb.describe_table(TableName=topology.registry_table)["Table"]
    assert table["KeySchema"] == TABLE_KEY_SCHEMA
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    # And the decisions topic exists under the ARN the pipeline functions are given
    arns = [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    assert topology.decisions_topic_arn in arns
    # And the adapter works on it
    registry = DynamoDBRegistry(dynamodb, topology.registry_table)
    assert registry.register(new_version("run-a"), actor="pipeline:run-a").version == 1
