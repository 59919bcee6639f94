"""The retrain function's logic on in-memory fakes: alarm and run events in, guarded runs and
decision records out (the guards themselves: test_retrain_guard.py)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from functions.preprocess.logic import process_upload
from functions.retrain.guard import GuardPolicy, Trigger
from functions.retrain.logic import RetrainEventError, on_alarm, on_run_end, parse_alarm
from functions.shared import layout, runs
from functions.shared.contract import Contract, parse_contract
from functions.shared.manifest import Manifest
from functions.shared.orchestration import RunInput
from tests.builders import ARTIFACTS, RAW, churn_frame, contract_bytes, csv_bytes, upload_of
from tests.fakes import (
    InMemoryGuardStore,
    InMemoryObjectStore,
    InMemoryRegistry,
    RecordingOrchestrator,
)

EVENTS = Path(__file__).parents[2] / "events"
NOW = datetime(2026, 11, 22, 9, 5, tzinfo=UTC)


def alarm_event(**detail: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "alarm_state_change.eventbridge.json").read_text())
    event["detail"].update(detail)
    return event


def run_event(name: str, status: str, run: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "run_status_change.eventbridge.json").read_text())
    event["detail"].update(name=name, status=status, input=json.dumps(run))
    return event


class World:
    def __init__(self) -> None:
        self.store = InMemoryObjectStore()
        self.pipeline = RecordingOrchestrator()
        self.guards = InMemoryGuardStore()
        self.registry = InMemoryRegistry()
        self.policy = GuardPolicy()

    def upload(self, rows: int = 400, name: str = "part-1.csv") -> RunInput:
        self.store.put(RAW, layout.contract_key("churn"), contract_bytes())
        info = self.store.put(RAW, f"churn/data/{name}", csv_bytes(churn_frame(rows)))
        outcome = process_upload(
            upload_of(info),
            store=self.store,
            orchestrator=self.pipeline,
            artifacts_bucket=ARTIFACTS,
        )
        assert outcome.status == "started", outcome.reason
        assert outcome.run_name is not None
        self.pipeline.finished.add(outcome.run_name)  # the upload's run is over
        return self.pipeline.runs[outcome.run_name]

    def alarm(self, event: dict[str, Any] | None = None, now: datetime = NOW) -> Any:
        trigger = parse_alarm(event or alarm_event())
        assert trigger is not None
        return on_alarm(
            trigger,
            store=self.store,
            guards=self.guards,
            orchestrator=self.pipeline,
            registry=self.registry,
            policy=self.policy,
            raw_bucket=RAW,
            artifacts_bucket=ARTIFACTS,
            now=now,
        )


@pytest.fixture
def world() -> World:
    return World()


def test_the_sample_alarm_event_names_its_dataset_alarm_reason_and_time() -> None:
    trigger = parse_alarm(alarm_event())
    assert trigger == Trigger(
        dataset="churn",
        source="sluice-dev.retrain.churn.drift",
        reason=trigger.reason if trigger else "",
        at=datetime(2026, 11, 22, 9, 4, 40, 985000, tzinfo=UTC),
        event_id="c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
    )
    assert trigger.reason.startswith("Threshold Crossed: 2 out of the last 3 datapoints")


def test_an_alarm_returning_to_ok_decides_nothing() -> None:
    ok = alarm_event(state={"value": "OK", "reason": "", "timestamp": "2026-11-22T09:04:40Z"})
    assert parse_alarm(ok) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["detail"].pop("state"), "detail.state"),
        (
            lambda e: e["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"].update(
                dimensions={"InstanceId": "i-1"}
            ),
            "no metric with a valid 'dataset' dimension",
        ),
        (
            lambda e: e["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"].update(
                dimensions={"dataset": "../etc"}
            ),
            "'../etc'",
        ),
        (lambda e: e.update(id=""), "no usable id"),
    ],
)
def test_a_malformed_alarm_event_is_refused_naming_what_is_wrong(change: Any, message: str) -> None:
    event = copy.deepcopy(alarm_event())
    change(event)
    with pytest.raises(RetrainEventError, match=message):
        parse_alarm(event)


def test_an_alarm_starts_one_run_over_the_current_version_named_by_the_guard(world: World) -> None:
    upload = world.upload()
    record = world.alarm()
    assert record.outcome == "started", record.reason
    assert record.run_name == "retrain-churn-202611220900"
    run = world.pipeline.runs[record.run_name]
    # the same dataset version the upload's run trained on, not a rebuilt one
    assert run.dataset_version == upload.dataset_version
    assert run.rows == upload.rows and run.train_uri == upload.train_uri
    assert run.training_job_name == "retrain-churn-202611220900"
    assert record.execution == f"run:{record.run_name}"
    assert world.guards.decisions("churn")[0] == record


def test_a_format_1_version_trains_on_split_folders_and_a_format_2_one_on_channel_manifests(
    world: World,
) -> None:
    # Given a version preprocess wrote as one Parquet file per split (format 1)
    upload = world.upload()
    prefix = layout.version_prefix("churn", upload.dataset_version)
    assert (upload.data_type, upload.train_uri) == ("S3Prefix", f"s3://{ARTIFACTS}/{prefix}train/")
    assert upload.test_uri == f"s3://{ARTIFACTS}/{prefix}test/"
    # ... whose execution input always names the channel type the Train state reads
    assert json.loads(upload.execution_input())["data_type"] == "S3Prefix"

    # When the same version is stored as parts listed by channel manifests (format 2)
    key = runs.manifest_key("churn", upload.dataset_version)
    manifest = Manifest.model_validate_json(world.store.get_bytes(ARTIFACTS, key))
    channels = {
        s: layout.channel_key("churn", upload.dataset_version, s)
        for s in ("train", "validation", "test")
    }
    stored = manifest.model_copy(update={"format": 2, "split_keys": {}, "channels": channels})
    world.store.put(ARTIFACTS, key, stored.model_dump_json().encode())
    record = world.alarm()

    # Then the run reads each split through its channel manifest
    assert record.outcome == "started", record.reason
    assert record.run_name is not None
    run = world.pipeline.runs[record.run_name]
    assert run.data_type == "ManifestFile"
    assert (run.train_uri, run.validation_uri, run.test_uri) == tuple(
        f"s3://{ARTIFACTS}/{prefix}channels/{s}.manifest" for s in ("train", "validation", "test")
    )
    assert json.loads(run.execution_input())["data_type"] == "ManifestFile"


def test_a_manifest_of_an_unknown_format_is_not_trained_on(world: World) -> None:
    upload = world.upload()
    key = runs.manifest_key("churn", upload.dataset_version)
    manifest = Manifest.model_validate_json(world.store.get_bytes(ARTIFACTS, key))
    with pytest.raises(ValueError, match="manifest format 3, which this code cannot read"):
        runs.run_input("r", manifest.model_copy(update={"format": 3}), _contract(), ARTIFACTS)


def test_a_burst_of_alarms_starts_one_run_and_records_why_each_other_was_skipped(
    world: World,
) -> None:
    world.upload()
    records = [
        world.alarm(alarm_event() | {"id": f"event-{i}"}, now=NOW + timedelta(seconds=i / 2))
        for i in range(100)
    ]
    started = [r for r in records if r.outcome == "started"]
    assert len(started) == 1 and len([*world.pipeline.runs]) == 2  # the upload's and this one
    assert {r.guard for r in records if r.outcome == "skipped"} == {"in_flight"}
    assert len(world.guards.decisions("churn", limit=200)) == 100


def test_a_run_executing_for_the_dataset_blocks_a_start(world: World) -> None:
    upload = world.upload()
    world.pipeline.finished.discard(upload.run_name)  # the upload's run is still executing
    record = world.alarm()
    assert (record.outcome, record.guard) == ("skipped", "in_flight")
    assert upload.run_name in record.reason


def test_no_contract_no_data_or_an_incomplete_version_is_a_no_data_skip(world: World) -> None:
    record = world.alarm()
    assert (record.outcome, record.guard) == ("skipped", "no_data")
    assert "no contract or no data files under churn/" in record.reason
    world.upload()
    # new data whose upload is not preprocessed yet: no complete version of the current data
    world.store.put(RAW, "churn/data/part-2.csv", csv_bytes(churn_frame(50, seed=3)))
    record = world.alarm(alarm_event() | {"id": "second"})
    assert (record.outcome, record.guard) == ("skipped", "no_data")
    assert "2 files" in record.reason and "being preprocessed, or was rejected" in record.reason
    assert not any(name.startswith("retrain-") for name in world.pipeline.runs)


def test_an_alarm_for_a_retired_dataset_is_a_retired_skip_and_starts_nothing(
    world: World,
) -> None:
    # Given a dataset with complete data, then retired by an operator
    world.upload()
    world.registry.retire_dataset("churn", actor="cli:ana", reason="product closed")
    # When its drift alarm fires
    record = world.alarm()
    # Then nothing starts and the decision says why
    assert (record.outcome, record.guard) == ("skipped", "retired")
    assert "product closed" in record.reason and "cli:ana" in record.reason
    assert world.pipeline.running("churn") == []


def test_a_broken_contract_is_a_no_data_skip_naming_the_problem(world: World) -> None:
    world.upload()
    world.store.put(RAW, layout.contract_key("churn"), b'{"target": "churned", "bogus": 1}')
    record = world.alarm()
    assert (record.outcome, record.guard) == ("skipped", "no_data")
    assert "the contract does not parse" in record.reason


def test_a_guarded_run_ending_releases_the_guard_and_sets_the_new_data_baseline(
    world: World,
) -> None:
    world.upload()
    started = world.alarm()
    assert started.run_name is not None
    run = world.pipeline.runs[started.run_name]
    finished = on_run_end(
        run_event(started.run_name, "SUCCEEDED", json.loads(run.execution_input())),
        guards=world.guards,
    )
    world.pipeline.finished.add(started.run_name)
    assert finished is not None and finished.outcome == "finished"
    assert f"new-data baseline {run.rows} rows" in finished.reason
    state = world.guards.load("churn")
    assert state.in_flight is None and state.rows_at_last_run == run.rows
    # two hours later the debounce has passed, but there is no new data
    later = world.alarm(alarm_event() | {"id": "later"}, now=NOW + timedelta(hours=2))
    assert (later.outcome, later.guard) == ("skipped", "no_new_data")


def test_a_failed_guarded_run_keeps_the_old_baseline(world: World) -> None:
    world.upload()
    started = world.alarm()
    assert started.run_name is not None
    run = world.pipeline.runs[started.run_name]
    event = run_event(started.run_name, "FAILED", json.loads(run.execution_input()))
    finished = on_run_end(event, guards=world.guards)
    assert finished is not None and "baseline unchanged" in finished.reason
    assert world.guards.load("churn").rows_at_last_run is None


def test_an_uploads_run_ending_is_not_the_guards_business(world: World) -> None:
    upload = world.upload()
    event = run_event(upload.run_name, "SUCCEEDED", json.loads(upload.execution_input()))
    assert on_run_end(event, guards=world.guards) is None
    assert world.guards.decisions("churn") == []


def test_a_run_event_without_its_input_is_refused() -> None:
    event = run_event("retrain-churn-202611220900", "SUCCEEDED", {})
    event["detail"]["input"] = "not json"
    with pytest.raises(RetrainEventError, match="its input names no dataset"):
        on_run_end(event, guards=InMemoryGuardStore())


def _contract() -> Contract:
    return parse_contract(contract_bytes(), source="contract.json")
