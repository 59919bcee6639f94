"""``sluice status`` over a state directory written as the local stack writes it: the per-dataset
summary, the filters, alarm changes only, and a run executing now shown as running."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from functions.shared.registry import DatasetRetirement, LivePointer, ModelStatus, ModelVersion
from functions.shared.registry_dynamodb import (
    LIVE,
    _encode,
    _version_item,
    item_key,
    retirement_item,
)
from infra.cli import main
from infra.local.stack import (
    ALARMS_FILE,
    DRIFT_FILE,
    PENDING_DIR,
    PROGRESS_FILE,
    RUNNING_FILE,
    RUNS_FILE,
    UPLOADS_FILE,
)
from infra.local.status import SinceError, alarm_changes, parse_since

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SHA = "a" * 64


def _at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


def _lines(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _run(name: str, dataset: str, hours_ago: float, kind: str, version: int) -> dict[str, Any]:
    failed = kind == "run_failed"
    return {
        "name": name,
        "dataset": dataset,
        "status": "FAILED" if failed else "SUCCEEDED",
        "path": ["Train", "Evaluate", "Gate", "Promote" if kind == "promoted" else "Reject"],
        "error": None,
        "cause": None,
        "states_seconds": {},
        "started_at": _at(hours_ago),
        "seconds": 12.5,
        "decision": {"kind": kind, "model_version": version, "live_version": 1,
                     "reasons": [f"{kind} because"]},
        "failure": {"state": "Train", "error": "States.TaskFailed", "cause": "x",
                    "message": "AlgorithmError: bad"} if failed else None,
    }  # fmt: skip


def _snapshot(state_dir: Path, live: dict[str, tuple[int, float]]) -> None:
    """The registry as the stack's snapshot holds it: DynamoDB items of live pointers and
    versions."""
    items = []
    for dataset, (version, value) in live.items():
        record = ModelVersion(
            dataset=dataset, run_name=f"{dataset}-r{version}", dataset_version="v-1",
            model_uri="s3://b/m.onnx", card_uri="s3://b/c.json", report_uri="s3://b/e.json",
            artifact_uri="s3://b/m.tar.gz", sha256=SHA, metric="f1_macro", metric_value=value,
            version=version, status=ModelStatus.LIVE, created_at=NOW, updated_at=NOW,
        )  # fmt: skip
        pointer = LivePointer(
            dataset=dataset, version=version, sha256=SHA, model_uri="s3://b/m.onnx",
            card_uri="s3://b/c.json", generation=1, updated_at=NOW,
        )  # fmt: skip
        items.append(_version_item(record))
        fields = pointer.model_dump(mode="json", exclude={"dataset"})
        items.append(item_key(dataset, LIVE) | _encode(fields))
    (state_dir / "state").mkdir()
    index = {"format": 1, "buckets": {}, "tables": {"sluice-registry-local": items}}
    (state_dir / "state" / "index.json").write_text(json.dumps(index))


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """Two datasets after a day: churn live at v2 (a later run rejected), houses with a failed
    run and no model; alarms re-recorded OK at each of three restarts, one real ALARM."""
    _lines(tmp_path / RUNS_FILE, [
        _run("churn-1", "churn", 20, "promoted", 1),
        _run("houses-1", "houses", 10, "run_failed", 1),
        _run("churn-2", "churn", 5, "promoted", 2),
        _run("churn-3", "churn", 1, "rejected", 3),
    ])  # fmt: skip
    _lines(tmp_path / UPLOADS_FILE, [
        {"at": _at(20.1), "key": "churn/data/a.csv", "kind": "preprocess", "dataset": "churn",
         "status": "started", "reason": "pipeline run started"},
        {"at": _at(3), "key": "houses/data/b.csv", "kind": "preprocess", "dataset": "houses",
         "status": "rejected", "reason": "column price missing", "report_key": "houses/r.json"},
    ])  # fmt: skip
    _lines(tmp_path / DRIFT_FILE, [
        {"at": _at(2), "dataset": "churn", "status": "measured", "reason": "no drift (psi 0.02)"},
    ])  # fmt: skip
    alarm = "sluice-local.retrain.churn.drift"
    quiet = "sluice-local.retrain.churn.errors"
    _lines(tmp_path / ALARMS_FILE, [
        {"at": _at(19), "alarm": alarm, "state": "OK", "reason": "r"},
        {"at": _at(19), "alarm": quiet, "state": "OK", "reason": "r"},
        {"at": _at(9), "alarm": alarm, "state": "OK", "reason": "restart"},
        {"at": _at(9), "alarm": quiet, "state": "OK", "reason": "restart"},
        {"at": _at(4), "alarm": alarm, "state": "ALARM", "reason": "psi 0.4 > 0.2"},
        {"at": _at(3.5), "alarm": alarm, "state": "OK", "reason": "back"},
        {"at": _at(0.5), "alarm": alarm, "state": "OK", "reason": "restart"},
        {"at": _at(0.5), "alarm": quiet, "state": "OK", "reason": "restart"},
    ])  # fmt: skip
    _snapshot(tmp_path, {"churn": (2, 0.8712)})
    return tmp_path


def _status(state_dir: Path, *flags: str, capsys: pytest.CaptureFixture[str]) -> Any:
    assert main(["status", "--state-dir", str(state_dir), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


# --- --since ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("1d", NOW - timedelta(days=1)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T10:30", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
        ("2026-12-01T10:30Z", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
        ("2026-12-01T11:30+01:00", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_since_takes_an_age_or_an_iso_8601_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2 hours", "-2h", "2y", "12/03/2026", "h", ""])
def test_since_refuses_anything_else_in_one_line_naming_both_forms(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SinceError):
        parse_since(text, NOW)
    assert main(["status", "--state-dir", str(tmp_path), f"--since={text}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("sluice status: --since") and "30m" in err and "ISO 8601" in err


# --- alarms -------------------------------------------------------------------------------


def test_alarms_are_listed_only_when_their_state_changes(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given eight alarm records, six of them an alarm found OK again at a restart
    records = [json.loads(line) for line in (state_dir / ALARMS_FILE).read_text().splitlines()]
    # Then two changes are left: into ALARM and out of it
    changes = alarm_changes(records)
    assert [(c["alarm"].rsplit(".", 1)[1], c["state"]) for c in changes] == [
        ("drift", "ALARM"),
        ("drift", "OK"),
    ]
    document = _status(state_dir, "--limit", "100", capsys=capsys)
    assert [e["record"]["state"] for e in document["history"] if e["kind"] == "alarm"] == [
        "ALARM",
        "OK",
    ]
    assert main(["status", "--state-dir", str(state_dir), "--limit", "100"]) == 0
    assert capsys.readouterr().out.count("alarm    ") == 2


# --- the summary --------------------------------------------------------------------------


def test_the_summary_has_one_entry_per_dataset_with_live_model_last_run_decision_and_drift(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = _status(state_dir, capsys=capsys)
    churn, houses = document["datasets"]
    assert churn["dataset"] == "churn" and churn["state"] == "serving"
    assert churn["live"] == {"version": 2, "metric": "f1_macro", "value": 0.8712}
    assert churn["last_run"]["name"] == "churn-3" and churn["last_run"]["outcome"] == "rejected"
    assert churn["last_decision"]["kind"] == "rejected"
    assert churn["last_decision"]["model_version"] == 3
    assert churn["drift"]["status"] == "measured" and churn["alarms_in_alarm"] == []
    assert houses["live"] is None and houses["state"] == "no live model"
    assert houses["last_run"]["status"] == "FAILED"
    assert houses["last_run"]["cause"] == "AlgorithmError: bad"
    # The text shows the same, the summary before the history
    assert main(["status", "--state-dir", str(state_dir)]) == 0
    text = capsys.readouterr().out
    assert "dataset  churn: live v2 (f1_macro 0.8712); serving" in text
    assert "dataset  houses: no live model" in text
    assert text.index("dataset  houses") < text.index("history:")


def _retire(state_dir: Path, retirement: DatasetRetirement) -> None:
    """A ``RETIRED`` item in the snapshot's registry table, as ``sluice retire`` writes it."""
    path = state_dir / "state" / "index.json"
    index = json.loads(path.read_text())
    index["tables"]["sluice-registry-local"].append(retirement_item(retirement))
    path.write_text(json.dumps(index))


def test_a_retired_dataset_shows_as_retired_with_when_who_and_why(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given churn (live v2) retired, and a dataset with no history left but its retirement
    _retire(state_dir, DatasetRetirement(
        dataset="churn", at=NOW, actor="alice", reason="replaced by churn2", live_version=2,
    ))  # fmt: skip
    _retire(state_dir, DatasetRetirement(dataset="old", at=NOW, actor="bob", reason="unused"))

    document = _status(state_dir, capsys=capsys)

    churn, houses, old = document["datasets"]
    assert churn["state"] == "retired" and churn["live"]["version"] == 2
    assert churn["retired"] == {
        "at": "2026-12-03T12:00:00Z", "actor": "alice", "reason": "replaced by churn2",
        "live_version": 2,
    }  # fmt: skip
    assert houses["state"] == "no live model" and houses["retired"] is None
    assert old["dataset"] == "old" and old["state"] == "retired" and old["live"] is None
    assert old["retired"]["reason"] == "unused"
    # --dataset keeps it, and the text says the same
    assert _status(state_dir, "--dataset", "old", capsys=capsys)["datasets"] == [old]
    assert main(["status", "--state-dir", str(state_dir)]) == 0
    text = capsys.readouterr().out
    assert "dataset  churn: live v2 (f1_macro 0.8712), not served; retired\n" in text
    assert "  retired  2026-12-03T12:00:00Z by alice: replaced by churn2\n" in text
    assert "dataset  old: no live model; retired\n" in text


# --- filters ------------------------------------------------------------------------------


def test_the_history_is_the_newest_limit_entries_oldest_first(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = _status(state_dir, "--limit", "3", capsys=capsys)
    assert document["history_shown"] == 3 and document["history_matching"] == 9
    kinds = [(e["kind"], e["dataset"]) for e in document["history"]]
    assert kinds == [("upload", "houses"), ("drift", "churn"), ("run", "churn")]
    assert main(["status", "--state-dir", str(state_dir), "--limit", "3"]) == 0
    assert "history: 3 of 9 entries, oldest first; --limit N shows more" in capsys.readouterr().out


def test_dataset_and_since_filter_the_history_and_the_summary(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --dataset: one summary, only its entries
    document = _status(state_dir, "--dataset", "houses", capsys=capsys)
    assert [s["dataset"] for s in document["datasets"]] == ["houses"]
    assert {e["dataset"] for e in document["history"]} == {"houses"}
    assert [e["kind"] for e in document["history"]] == ["run", "upload"]
    assert [r["name"] for r in document["runs"]] == ["houses-1"]
    # --since: entries at or after that time, whichever form it is given in
    recent = datetime.now(UTC) - NOW + timedelta(hours=4, minutes=30)
    age = f"{int(recent.total_seconds() // 60)}m"
    for since in (age, (NOW - timedelta(hours=4, minutes=30)).isoformat()):
        document = _status(state_dir, "--since", since, capsys=capsys)
        assert [e["kind"] for e in document["history"]] == [
            "alarm", "alarm", "upload", "drift", "run",
        ]  # fmt: skip
    # Summaries always reflect the whole history (the last run is the last run)
    assert document["datasets"][1]["last_run"]["name"] == "houses-1"


def test_a_filter_that_matches_nothing_says_so(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--state-dir", str(state_dir), "--dataset", "nosuch"]) == 0
    assert "nothing in" in capsys.readouterr().out
    assert main(["status", "--state-dir", str(state_dir), "--dataset", "Bad/Name"]) == 2


# --- a run executing now ------------------------------------------------------------------


def test_a_run_executing_now_shows_as_running_with_its_latest_progress(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run journaled and marked running by this (a live) process, with progress records
    started = datetime.now(UTC) - timedelta(seconds=30)
    (state_dir / PENDING_DIR).mkdir()
    (state_dir / PENDING_DIR / "1-houses-2.json").write_text("{}")
    marker = {"name": "houses-2", "dataset": "houses", "started_at": started.isoformat()}
    (state_dir / RUNNING_FILE).write_text(json.dumps({**marker, "pid": os.getpid()}))
    progress = [
        {"step": "train", "dataset": "houses", "run": "houses-2", "done": d, "total": 3,
         "unit": "candidates", "detail": f"candidate {d + 1} of 3", "elapsed_seconds": 5.0 * d,
         "at": (started + timedelta(seconds=5 * d)).isoformat()}
        for d in range(2)
    ]  # fmt: skip
    _lines(state_dir / PROGRESS_FILE, progress)
    # When the status is read
    document = _status(state_dir, capsys=capsys)
    # Then the run is running, not pending, with its latest progress record
    assert document["running"]["name"] == "houses-2" and document["pending"] == []
    houses = document["datasets"][1]
    assert houses["last_run"]["status"] == "running"
    assert houses["last_run"]["progress"]["detail"] == "candidate 2 of 3"
    assert main(["status", "--state-dir", str(state_dir)]) == 0
    text = capsys.readouterr().out
    assert "houses-2 running since" in text and "train: candidate 2 of 3" in text
    assert "pending  houses-2" not in text


def test_a_marker_whose_process_is_gone_is_a_run_waiting_to_resume(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the marker a stack killed mid-run leaves (its process is gone)
    child = subprocess.Popen(["true"])
    child.wait()
    (state_dir / PENDING_DIR).mkdir()
    (state_dir / PENDING_DIR / "1-houses-2.json").write_text("{}")
    marker = {"name": "houses-2", "dataset": "houses", "started_at": _at(0), "pid": child.pid}
    (state_dir / RUNNING_FILE).write_text(json.dumps(marker))
    # Then it is pending, resumed by the next start
    document = _status(state_dir, capsys=capsys)
    assert document["running"] is None and document["pending"] == ["houses-2"]
    assert main(["status", "--state-dir", str(state_dir)]) == 0
    assert "pending  houses-2  (resumes when the stack runs)" in capsys.readouterr().out


def test_an_upload_that_left_a_file_out_names_it_and_its_report(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an upload whose run started over the other files, one bad older file left out
    excluded = {"key": "churn/data/feb.csv", "etag": "e", "version_id": "v1", "size": 9,
                "rule": "unreadable_file", "message": "churn/data/feb.csv: not CSV text",
                "report_key": "churn/rejected/churn-1.json"}  # fmt: skip
    with (state_dir / UPLOADS_FILE).open("a") as uploads:
        uploads.write(json.dumps({"at": _at(0.2), "key": "churn/data/mar.csv", "kind":
            "preprocess", "dataset": "churn", "status": "started", "reason": "pipeline run "
            "started", "excluded": [excluded]}) + "\n")  # fmt: skip
    # When the status is shown, Then the history names the file left out, why, and its report
    assert main(["status", "--state-dir", str(state_dir), "--limit", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("           left out churn/data/feb.csv (unreadable_file)")
    assert lines[at - 1].startswith("upload   ") and lines[at - 1].endswith("churn: started")
    assert lines[at + 1] == "           report: churn/rejected/churn-1.json"
