"""What ``sluice status`` shows: the local stack's state directory, read, filtered and summarised.

First one summary per dataset (live version and its metric, state — serving, no live model or
retired, with who retired it, when and why —, last run and its outcome, last decision, drift,
alarms in ALARM, a run executing now with its latest progress), then the history:
uploads, runs, drift measurements, alarm changes, retrain decisions and dead letters merged in
time order, filtered by dataset and age, the newest ``limit`` entries, oldest first (the newest
end beside the prompt, as a log's tail). The text and the JSON carry the same document.

Reads files only (docs/local-stack.md lists them), so it works whether or not the stack runs:
the live versions come from the snapshot of the registry (at most a few seconds old), the run
executing now from ``running.json``, which the stack writes with its process id when a run
starts and removes when it ends; a file whose process is gone means the run is waiting to
resume, not running.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local.stack import (
    ALARMS_FILE,
    DEAD_LETTER_FILE,
    DRIFT_FILE,
    PROGRESS_FILE,
    RETRAIN_FILE,
    RUNNING_FILE,
    RUNS_FILE,
    UPLOADS_FILE,
    pending_runs,
    read_history,
)

if TYPE_CHECKING:
    from functions.shared.registry import DatasetRetirement

DEFAULT_LIMIT = 20
_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
QUIET_ALARM_STATES = frozenset({"OK", "INSUFFICIENT_DATA"})


class SinceError(ValueError):
    """A ``--since`` that is neither ISO 8601 nor an age; the message is the one line shown."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2h``, ``30m``, ``1d``, ``90s``, ``2w`` (that long before ``now``) or an ISO 8601 date or
    time (``2026-12-03``, ``2026-12-03T10:00``, ``…Z``, ``…+01:00``; a time without an offset is
    UTC). Anything else raises SinceError."""
    now = now or datetime.now(UTC)
    stripped = text.strip()
    age = _AGE.match(stripped.lower())
    if age:
        return now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise SinceError(
            f"--since {text!r} is neither an age (30m, 2h, 1d, 2w) nor an ISO 8601 date or time "
            "(2026-12-03, 2026-12-03T10:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def alarm_changes(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records where an alarm's state changed. A restart evaluates every alarm afresh, so
    the file repeats "OK" for each at every start: a record in the state the alarm already had
    is dropped, and an alarm's first record only when it is ALARM (starting out quiet is not
    news)."""
    last: dict[str, str] = {}
    changes = []
    for record in records:
        previous = last.get(record["alarm"])
        last[record["alarm"]] = record["state"]
        if record["state"] == previous:
            continue
        if previous is None and record["state"] in QUIET_ALARM_STATES:
            continue
        changes.append(record)
    return changes


@dataclass(frozen=True)
class Filters:
    dataset: str | None = None
    since: datetime | None = None
    limit: int = DEFAULT_LIMIT

    def keep(self, dataset: str | None, at: datetime | None) -> bool:
        if self.dataset is not None and dataset != self.dataset:
            return False
        return self.since is None or (at is not None and at >= self.since)


def build_status(
    state_dir: Path, filters: Filters, *, registry_table: str | None = None
) -> dict[str, Any]:
    """The whole document ``sluice status`` prints (``--json`` as it is)."""
    sources = {
        "upload": read_history(state_dir, UPLOADS_FILE),
        "run": read_history(state_dir, RUNS_FILE),
        "drift": read_history(state_dir, DRIFT_FILE),
        "alarm": alarm_changes(read_history(state_dir, ALARMS_FILE)),
        "retrain": read_history(state_dir, RETRAIN_FILE),
        "dead_letter": read_history(state_dir, DEAD_LETTER_FILE),
    }
    entries: list[dict[str, Any]] = []
    for kind, records in sources.items():
        for record in records:
            at = _time(record.get("started_at" if kind == "run" else "at"))
            dataset = _dataset(kind, record)
            entries.append({"at": at, "kind": kind, "dataset": dataset, "record": record})
    entries.sort(key=lambda entry: entry["at"] or datetime.min.replace(tzinfo=UTC))
    kept = [e for e in entries if filters.keep(e["dataset"], e["at"])]
    running = running_run(state_dir)
    pending = [name for name in pending_runs(state_dir) if not running or name != running["name"]]
    summaries = _summaries(state_dir, entries, running, registry_table)
    if filters.dataset is not None:
        summaries = [s for s in summaries if s["dataset"] == filters.dataset]
    history = kept[-filters.limit :] if filters.limit > 0 else []
    by_kind = {
        key: [e["record"] for e in kept if e["kind"] == kind]
        for key, kind in (
            ("uploads", "upload"),
            ("runs", "run"),
            ("drift", "drift"),
            ("alarms", "alarm"),
            ("retrain", "retrain"),
            ("dead_letters", "dead_letter"),
        )
    }
    document: dict[str, Any] = _jsonable(
        {
            "datasets": summaries,
            "running": running,
            "pending": pending,
            "history": history,
            "history_shown": len(history),
            "history_matching": len(kept),
            "filters": {
                "dataset": filters.dataset,
                "since": filters.since,
                "limit": filters.limit,
            },
            **by_kind,  # every matching record of each kind, whole (no --limit)
        }
    )
    return document


def running_run(state_dir: Path) -> dict[str, Any] | None:
    """The run executing now: ``running.json`` while the process that wrote it lives, with the
    latest progress record of its dataset since it started."""
    try:
        marker = json.loads((state_dir / RUNNING_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not _alive(marker.get("pid")):
        return None
    started = _time(marker.get("started_at"))
    latest = None
    for record in read_history(state_dir, PROGRESS_FILE):
        at = _time(record.get("at"))
        if record.get("dataset") == marker.get("dataset") and at and started and at >= started:
            latest = record
    return {**marker, "progress": latest}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _summaries(
    state_dir: Path,
    entries: list[dict[str, Any]],
    running: dict[str, Any] | None,
    registry_table: str | None,
) -> list[dict[str, Any]]:
    live, metrics, retired = _registry(state_dir, registry_table)
    names = {e["dataset"] for e in entries if e["dataset"]} | set(live) | set(retired)
    if running:
        names.add(running["dataset"])
    summaries = []
    for name in sorted(names):
        mine = [e for e in entries if e["dataset"] == name]
        runs = [e["record"] for e in mine if e["kind"] == "run"]
        decided = [e for e in mine if e["kind"] == "run" and e["record"].get("decision")]
        drift = [e["record"] for e in mine if e["kind"] == "drift"]
        alarms: dict[str, str] = {}
        for change in (e["record"] for e in mine if e["kind"] == "alarm"):
            alarms[change["alarm"]] = change["state"]
        version = live.get(name)
        last_run = _last_run(runs[-1]) if runs else None
        if running and running["dataset"] == name:
            last_run = {
                "name": running["name"],
                "status": "running",
                "at": running["started_at"],
                "progress": running["progress"],
            }
        decision = decided[-1]["record"]["decision"] if decided else None
        retirement = retired.get(name)
        if retirement is not None:
            state = "retired"  # its live pointer is kept but no longer served
        else:
            state = "serving" if version is not None else "no live model"
        summaries.append(
            {
                "dataset": name,
                "state": state,
                "retired": None
                if retirement is None
                else retirement.model_dump(mode="json", exclude={"dataset"}),
                "live": None if version is None else {"version": version, **metrics[name]},
                "last_run": last_run,
                "last_decision": None
                if decision is None
                else {
                    "at": decided[-1]["at"],
                    "run": decided[-1]["record"]["name"],
                    "kind": decision.get("kind"),
                    "model_version": decision.get("model_version"),
                    "live_version": decision.get("live_version"),
                    "reason": (decision.get("reasons") or [None])[0],
                },
                "drift": None
                if not drift
                else {k: drift[-1].get(k) for k in ("at", "status", "reason")},
                "alarms_in_alarm": sorted(a for a, state in alarms.items() if state == "ALARM"),
            }
        )
    return summaries


def _last_run(run: dict[str, Any]) -> dict[str, Any]:
    decision = run.get("decision") or {}
    failure = run.get("failure") or {}
    return {
        "name": run["name"],
        "status": run["status"],
        "at": run["started_at"],
        "seconds": run.get("seconds"),
        "outcome": decision.get("kind") or run["status"].lower(),
        "cause": failure.get("message") or run.get("cause"),
    }


def _registry(
    state_dir: Path, table: str | None
) -> tuple[dict[str, int], dict[str, dict[str, Any]], dict[str, DatasetRetirement]]:
    """Live version and its metric per dataset, and the retired datasets, from the snapshot's
    registry table; empty when there is no snapshot yet."""
    from functions.shared.registry_dynamodb import records_from_items, retirements_from_items
    from infra.local.snapshot import INDEX_FILE, STATE_DIR

    try:
        tables = json.loads((state_dir / STATE_DIR / INDEX_FILE).read_bytes()).get("tables", {})
    except (OSError, ValueError):
        return {}, {}, {}
    items = tables.get(table, []) if table else [i for t in tables.values() for i in t]
    pointers, versions = records_from_items(items)
    by_key = {(v.dataset, v.version): v for v in versions}
    metrics = {}
    for dataset, pointer in pointers.items():
        record = by_key.get((dataset, pointer.version))
        metrics[dataset] = {
            "metric": record.metric if record else None,
            "value": record.metric_value if record else None,
        }
    live = {d: p.version for d, p in pointers.items()}
    return live, metrics, retirements_from_items(items)


def _dataset(kind: str, record: dict[str, Any]) -> str | None:
    if kind == "alarm":  # sluice-<stage>.retrain.<dataset>.<kind>
        parts = str(record.get("alarm", "")).split(".")
        return parts[2] if len(parts) >= 4 else None
    if kind == "dead_letter":
        key = record.get("event", {}).get("detail", {}).get("object", {}).get("key")
        return key.split("/", 1)[0] if isinstance(key, str) and "/" in key else None
    dataset = record.get("dataset")
    return dataset if isinstance(dataset, str) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _jsonable(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _jsonable(v) for k, v in document.items()}
    if isinstance(document, list):
        return [_jsonable(v) for v in document]
    if isinstance(document, datetime):
        return document.isoformat()
    return document
