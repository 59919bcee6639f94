"""What the console shows, read through the ports the CLI reads: the registry (``sluice models``),
the retrain guard's log (``sluice retraining``), the artifacts bucket (model and drift reports,
the quality reports) and the run history (``sluice status``: the local stack's ``runs.jsonl``; on
AWS, the pipeline's Step Functions executions).

Nothing here writes. A name that does not exist raises :class:`NotFoundError` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress as _ignored
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from functions.retrain.guard_store import DecisionRecord, GuardStore
from functions.shared import layout
from functions.shared.registry import AuditEntry, LivePointer, ModelRegistry, ModelVersion
from functions.shared.storage import ObjectNotFoundError, ObjectStore, parse_s3_uri, s3_uri

SERIES_POINTS = 50  # drift and quality reports read per dataset, the newest
DRIFT_STAMP = r"\d{4}-\d{2}-\d{2}T\d{4}Z"  # a drift report's folder: its UTC minute


class NotFoundError(LookupError):
    """What the console was asked for does not exist; the message names it."""


@dataclass(frozen=True)
class DatasetRow:
    dataset: str
    live: ModelVersion | None
    versions: int
    retired: bool


class DriftPoint(BaseModel):
    """One drift report: its folder's UTC minute and its figures, typed: a report whose values
    are not what the drift job writes is left out of the series, not drawn."""

    model_config = ConfigDict(frozen=True)

    stamp: str
    at: datetime
    live_rows: int | None
    level: str | None
    max_psi: float | None
    drifted: int | None


class QualityPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime | None
    model_version: int | None
    metric: str | None
    value: float | None
    offline_value: float | None
    drop: float | None
    matched: int


# What a stored report that is not what its job writes raises on the way to a point: the
# document is not JSON (or not an object), a value has the wrong type, the folder is no minute.
UNREADABLE = (ValueError, AttributeError, TypeError, ObjectNotFoundError)

RunsSource = Callable[[], list[dict[str, Any]]]


class ConsoleData:
    """The console's one read model over a deployment (local stack or AWS stage)."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        guard: GuardStore,
        store: ObjectStore,
        artifacts_bucket: str,
        runs: RunsSource,
        where: str,
    ) -> None:
        self.registry = registry
        self.guard = guard
        self.store = store
        self.artifacts_bucket = artifacts_bucket
        self._runs = runs
        self.where = where  # the deployment, in words, for the page footers

    def datasets(self) -> list[DatasetRow]:
        rows = []
        for dataset in self.registry.datasets():
            versions = self.registry.versions(dataset)
            live = self.registry.live(dataset)
            record = next((v for v in versions if live and v.version == live.version), None)
            retired = self.registry.retirement(dataset) is not None
            rows.append(DatasetRow(dataset, record, len(versions), retired))
        return rows

    def dataset(self, dataset: str) -> tuple[list[ModelVersion], LivePointer | None]:
        self._known(dataset)
        return self.registry.versions(dataset), self.registry.live(dataset)

    def audit(self, dataset: str) -> list[AuditEntry]:
        self._known(dataset)
        return self.registry.audit(dataset)

    def version(self, dataset: str, version: int) -> ModelVersion:
        self._known(dataset)
        found = next((v for v in self.registry.versions(dataset) if v.version == version), None)
        if found is None:
            raise NotFoundError(f"dataset '{dataset}' has no model version {version}")
        return found

    def report_page(self, dataset: str, version: int) -> bytes:
        """The model report page evaluate stored beside the version's model, as it is."""
        record = self.version(dataset, version)
        bucket, model_key = parse_s3_uri(record.model_uri)
        key = layout.model_report_page_of(model_key)
        try:
            return self.store.get_bytes(bucket, key)
        except ObjectNotFoundError:
            raise NotFoundError(
                f"model version {version} of '{dataset}' has no report at {s3_uri(bucket, key)}"
            ) from None

    def runs(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Run records, newest first: name, dataset, status, path, states_seconds, started_at,
        seconds and, where the run got that far, its decision."""
        if dataset is not None:
            self._known(dataset)
        runs = [r for r in self._runs() if dataset is None or r.get("dataset") == dataset]
        return sorted(runs, key=lambda r: str(r.get("started_at", "")), reverse=True)

    def run(self, name: str) -> dict[str, Any]:
        found = next((r for r in self._runs() if r.get("name") == name), None)
        if found is None:
            raise NotFoundError(f"no run named '{name}'")
        return found

    def drift(self, dataset: str) -> list[DriftPoint]:
        """The dataset's drift reports, oldest first (the newest ``SERIES_POINTS``)."""
        self._known(dataset)
        prefix = f"{dataset}/drift/"
        keys = sorted(
            info.key
            for info in self.store.list(self.artifacts_bucket, prefix)
            if info.key.endswith("/report.json")
        )[-SERIES_POINTS:]
        points = []
        for key in keys:
            stamp = key[len(prefix) :].split("/", 1)[0]
            with _ignored(*UNREADABLE):  # not a drift job's report: not a point of the series
                report = json.loads(self.store.get_bytes(self.artifacts_bucket, key))
                points.append(
                    DriftPoint(
                        stamp=stamp,
                        at=datetime.strptime(stamp, "%Y-%m-%dT%H%MZ").replace(tzinfo=UTC),
                        live_rows=report.get("live_rows"),
                        level=report.get("level"),
                        max_psi=report.get("max_psi"),
                        drifted=report.get("drifted"),
                    )
                )
        return points

    def drift_page(self, dataset: str, stamp: str) -> bytes:
        self._known(dataset)
        key = f"{dataset}/drift/{stamp}/report.html"
        try:
            return self.store.get_bytes(self.artifacts_bucket, key)
        except ObjectNotFoundError:
            raise NotFoundError(f"dataset '{dataset}' has no drift report {stamp}") from None

    def quality(self, dataset: str) -> list[QualityPoint]:
        """The live-quality reports (feedback against predictions), oldest first."""
        self._known(dataset)
        keys = sorted(
            info.key
            for info in self.store.list(self.artifacts_bucket, layout.quality_prefix(dataset))
            if info.key.endswith("/report.json")
        )[-SERIES_POINTS:]
        points = []
        for key in keys:
            with _ignored(*UNREADABLE):  # not a quality job's report: not a point of the series
                report = json.loads(self.store.get_bytes(self.artifacts_bucket, key))
                points.append(
                    QualityPoint(
                        at=report.get("at"),
                        model_version=report.get("model_version"),
                        metric=report.get("metric"),
                        value=report.get("value"),
                        offline_value=report.get("offline_value"),
                        drop=report.get("drop"),
                        matched=report.get("matched") or 0,
                    )
                )
        return points

    def retraining(self, dataset: str) -> list[DecisionRecord]:
        self._known(dataset)
        return self.guard.decisions(dataset, limit=50)

    def _known(self, dataset: str) -> None:
        if not layout.DATASET_NAME.match(dataset) or dataset not in self.registry.datasets():
            raise NotFoundError(f"no dataset named '{dataset}'")


def step_functions_runs(
    client: Any,
    state_machine_arn: str,
    limit: int = 50,
    *,
    finished: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The pipeline's latest executions on AWS as run records (the local stack's shape): each
    one's state path and seconds per state from its event history (every page of it). The
    gate's decision and reasons are the registered version's (the console pairs a run with it
    by name). ``finished`` keeps the records of ended executions, whose history cannot change,
    across calls: a page reload reads the histories of running executions only."""
    finished = {} if finished is None else finished
    listed = client.list_executions(stateMachineArn=state_machine_arn, maxResults=limit)
    runs = []
    for execution in listed.get("executions", []):
        arn = execution["executionArn"]
        if arn not in finished:
            record = _run_record(client, execution)
            if execution.get("stopDate") is None:
                runs.append(record)
                continue
            finished[arn] = record
        runs.append(finished[arn])
    return runs


def _run_record(client: Any, execution: dict[str, Any]) -> dict[str, Any]:
    events = [
        event
        for page in client.get_paginator("get_execution_history").paginate(
            executionArn=execution["executionArn"], PaginationConfig={"PageSize": 1000}
        )
        for event in page.get("events", [])
    ]
    path: list[str] = []
    entered: dict[str, datetime] = {}
    seconds: dict[str, float] = {}
    dataset = None
    for event in events:
        kind = event["type"]
        if kind == "ExecutionStarted":
            started = event.get("executionStartedEventDetails", {}).get("input") or "{}"
            with _ignored(ValueError):
                dataset = json.loads(started).get("dataset")
        elif kind.endswith("StateEntered"):
            name = event["stateEnteredEventDetails"]["name"]
            path.append(name)
            entered[name] = event["timestamp"]
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            if name in entered:
                spent = (event["timestamp"] - entered[name]).total_seconds()
                seconds[name] = round(seconds.get(name, 0.0) + spent, 3)
    start, stop = execution["startDate"], execution.get("stopDate")
    return {
        "name": execution["name"],
        "dataset": dataset if isinstance(dataset, str) else None,
        "status": execution["status"],
        "path": path,
        "states_seconds": seconds,
        "started_at": start.isoformat(),
        "seconds": None if stop is None else (stop - start).total_seconds(),
        "decision": None,
    }
