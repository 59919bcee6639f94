"""Contract tests of dataset retirement and purge: both registry adapters, the same rules.

The fixtures are test_registry's: every test runs on ``InMemoryRegistry`` and on
``DynamoDBRegistry`` under moto.
"""

from __future__ import annotations

from typing import Any

import pytest

from functions.shared.registry import (
    InvalidTransitionError,
    ModelRegistry,
    ModelStatus,
    NewModelVersion,
)
from functions.shared.registry_dynamodb import DynamoDBRegistry, retirements_from_items
from tests.integration import test_registry as contract
from tests.integration.test_registry import DATASET, new_version, promote, register

# test_registry's fixtures: each test runs on both adapters
clock, dynamodb, table, registry = (
    contract.clock,
    contract.dynamodb,
    contract.table,
    contract.registry,
)


def test_retiring_keeps_versions_and_records_who_why_and_what_was_live(
    registry: ModelRegistry,
) -> None:
    # Given a dataset with version 1 live and another dataset in service
    register(registry, "run-a")
    promote(registry, 1, None)
    registry.register(new_other(), actor="pipeline:other")
    # When an operator retires it
    retirement = registry.retire_dataset(DATASET, actor="cli:ana", reason="product closed")
    # Then the retirement names the live version; versions, pointer and history are kept
    assert (retirement.actor, retirement.reason, retirement.live_version) == (
        "cli:ana",
        "product closed",
        1,
    )
    assert registry.retirement(DATASET) == retirement
    assert [v.status for v in registry.versions(DATASET)] == [ModelStatus.LIVE]
    assert registry.live(DATASET) is not None
    assert [e.action for e in registry.audit(DATASET)][-1] == "dataset_retired"
    assert registry.audit(DATASET)[-1].previous_live == 1
    # and it leaves the active datasets, not the list of every dataset
    assert registry.datasets() == [DATASET, "other"]
    assert registry.active_datasets() == ["other"]


def test_retiring_twice_keeps_the_first_retirement(registry: ModelRegistry) -> None:
    register(registry, "run-a")
    first = registry.retire_dataset(DATASET, actor="cli:ana", reason="first")
    again = registry.retire_dataset(DATASET, actor="cli:bo", reason="second")
    assert again == first
    assert [e.action for e in registry.audit(DATASET)].count("dataset_retired") == 1


def test_unretiring_returns_the_dataset_to_service(registry: ModelRegistry) -> None:
    register(registry, "run-a")
    registry.retire_dataset(DATASET, actor="cli:ana", reason="paused")
    lifted = registry.unretire_dataset(DATASET, actor="cli:ana", reason="back")
    assert lifted.reason == "paused"
    assert registry.retirement(DATASET) is None
    assert registry.active_datasets() == [DATASET]
    assert [e.action for e in registry.audit(DATASET)][-1] == "dataset_unretired"
    with pytest.raises(InvalidTransitionError, match="is not retired"):
        registry.unretire_dataset(DATASET, actor="cli:ana", reason="again")


def test_purge_refuses_a_dataset_in_service(registry: ModelRegistry) -> None:
    register(registry, "run-a")
    with pytest.raises(InvalidTransitionError, match="retire it before purging"):
        registry.purge(DATASET, actor="cli:ana", reason="gone")
    assert len(registry.versions(DATASET)) == 1


def test_purge_deletes_every_record_but_its_own_audit_entry(registry: ModelRegistry) -> None:
    # Given a retired dataset with two versions, one live, and a dataset beside it
    register(registry, "run-a", "run-b")
    promote(registry, 2, None)
    registry.register(new_other(), actor="pipeline:other")
    registry.retire_dataset(DATASET, actor="cli:ana", reason="closed")
    # When it is purged
    deleted = registry.purge(DATASET, actor="cli:ana", reason="GDPR request 42")
    # Then versions, pointer, counter, runs, retirement and history are gone
    assert deleted >= 7  # 2 versions, 2 runs, counter, live, retirement, + audit entries
    assert registry.versions(DATASET) == []
    assert registry.live(DATASET) is None
    assert registry.retirement(DATASET) is None
    assert registry.datasets() == ["other"]
    # and one entry says who purged it, why and how much
    [entry] = registry.audit(DATASET)
    assert (entry.action, entry.actor) == ("dataset_purged", "cli:ana")
    assert entry.reason == f"GDPR request 42 ({deleted} records deleted)"
    # and the other dataset is untouched
    assert len(registry.versions("other")) == 1


def new_other() -> NewModelVersion:
    return new_version("run-o", dataset="other")


def test_a_snapshot_of_the_table_reads_back_the_retirement(
    dynamodb: Any, table: str, clock: Any
) -> None:
    # `sluice status` reads the registry from the local stack's snapshot (raw table items), not
    # through the adapter: what retire_dataset writes must read back the same from those items
    registry = DynamoDBRegistry(dynamodb, table, clock=clock)
    register(registry, "run-a")
    retirement = registry.retire_dataset(DATASET, actor="cli:ana", reason="product closed")
    items = dynamodb.scan(TableName=table)["Items"]
    assert retirements_from_items(items) == {DATASET: retirement}
