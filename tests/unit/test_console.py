"""The console's routes and pages on in-memory fakes (no network: ``Console.render`` is called
directly, as the HTTP handler calls it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from functions.retrain.guard_store import DecisionRecord
from functions.shared import layout
from functions.shared.registry import NewModelVersion
from infra.console.read_model import ConsoleData
from infra.console.server import Console
from tests.fakes import InMemoryGuardStore, InMemoryObjectStore, InMemoryRegistry

BUCKET = "artifacts"
HOSTILE = '<script>alert("x")</script>'


def _data(runs: list[dict[str, Any]] | None = None) -> tuple[ConsoleData, InMemoryObjectStore]:
    registry, store, guard = InMemoryRegistry(), InMemoryObjectStore(), InMemoryGuardStore()
    for n in (1, 2):
        registry.register(
            NewModelVersion(
                dataset="churn",
                run_name=f"run-{n}",
                dataset_version="dv1",
                model_uri=f"s3://{BUCKET}/churn/models/job-{n}/model.onnx",
                card_uri=f"s3://{BUCKET}/churn/models/job-{n}/model_card.json",
                report_uri=f"s3://{BUCKET}/churn/models/job-{n}/evaluation.json",
                artifact_uri=f"s3://{BUCKET}/churn/models/job-{n}/model.tar.gz",
                sha256="0" * 64,
                metric="f1_macro",
                metric_value=0.8 + n / 100,
                gate="passed",
                gate_reasons=[f"reason {HOSTILE}"],
            ),
            actor="test",
        )
    registry.promote("churn", 1, expected_live=None, actor="test", reason="first")
    registry.promote("churn", 2, expected_live=1, actor="cli:ops", reason=HOSTILE)
    store.put_bytes(BUCKET, "churn/models/job-2/report/index.html", b"<html>the report</html>")
    for minute, psi in (("2026-12-03T1000Z", 0.05), ("2026-12-03T1100Z", 0.31)):
        report = {"live_rows": 200, "level": "moderate", "max_psi": psi, "drifted": 1}
        store.put_bytes(BUCKET, f"churn/drift/{minute}/report.json", json.dumps(report).encode())
        store.put_bytes(BUCKET, f"churn/drift/{minute}/report.html", b"<html>drift</html>")
    guard.record(
        "churn",
        DecisionRecord(
            dataset="churn",
            at=datetime(2026, 12, 3, 11, tzinfo=UTC),
            outcome="skipped",
            guard="debounce",
            reason="last start 10 min ago",
            event_id="e1",
        ),
    )
    data = ConsoleData(
        registry=registry,
        guard=guard,
        store=store,
        artifacts_bucket=BUCKET,
        runs=lambda: runs or [],
        where="a test",
    )
    return data, store


def _page(path: str, runs: list[dict[str, Any]] | None = None) -> tuple[int, str]:
    status, body = Console(_data(runs)[0]).render(path)
    return status, body.decode()


def test_the_index_names_the_live_version_and_its_metric() -> None:
    status, body = _page("/")
    assert status == 200
    assert '<a href="/datasets/churn">churn</a></th><td class="num">2</td>' in body
    assert "f1_macro 0.8200" in body


HOSTILE_RUN = {
    "name": "run-2",
    "dataset": "churn",
    "status": HOSTILE,
    "path": ["Train", HOSTILE],
    "states_seconds": {HOSTILE: 1.0},
    "started_at": "2026-12-03T10:00:00+00:00",
    "seconds": 14.0,
    "decision": {"kind": HOSTILE, "reasons": [HOSTILE]},
    "failure": {"state": HOSTILE, "message": HOSTILE},
}


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/datasets/churn",
        "/datasets/churn/versions/1",
        "/datasets/churn/versions/2",
        "/runs",
        "/datasets/churn/runs",
        "/runs/run-2",
        "/datasets/churn/drift",
        "/datasets/churn/retraining",
    ],
)
def test_user_text_is_escaped_on_every_page(path: str) -> None:
    # Given markup in a gate reason, an audit reason, a run's status, states and failure, a
    # drift report's level and a retraining decision's reason
    data, store = _data([HOSTILE_RUN])
    report = {"live_rows": 1, "level": HOSTILE, "max_psi": 0.2, "drifted": 1}
    store.put_bytes(BUCKET, "churn/drift/2026-12-03T1200Z/report.json", json.dumps(report).encode())
    data.guard.record(
        "churn",
        DecisionRecord(
            dataset="churn",
            at=datetime(2026, 12, 3, 12, tzinfo=UTC),
            outcome="skipped",
            guard="debounce",
            reason=HOSTILE,
            event_id="e2",
        ),
    )
    # When the page is drawn
    status, body = Console(data).render(path)
    # Then every such text is shown as text, never as markup
    assert status == 200, body
    assert HOSTILE.encode() not in body


def test_a_drift_or_quality_report_that_is_not_its_jobs_is_left_out_not_a_500() -> None:
    # Given, beside the two good drift reports, one that is not JSON, one whose values are
    # markup, and a quality report of the wrong shape
    data, store = _data()
    bad = {"live_rows": HOSTILE, "level": "x", "max_psi": "high", "drifted": HOSTILE}
    store.put_bytes(BUCKET, "churn/drift/2026-12-03T1200Z/report.json", json.dumps(bad).encode())
    store.put_bytes(BUCKET, "churn/drift/2026-12-03T1300Z/report.json", b"{not json")
    store.put_bytes(BUCKET, "churn/drift/2026-12-03T1400Z/report.json", b"[1, 2]")
    quality = layout.quality_prefix("churn") + "2026-12-03T1200Z/report.json"
    store.put_bytes(BUCKET, quality, json.dumps({"at": "yesterday", "matched": HOSTILE}).encode())
    # When the drift page is drawn
    status, body = Console(data).render("/datasets/churn/drift")
    # Then it is drawn from the good reports only, and nothing of the bad ones is markup
    assert status == 200, body
    text = body.decode()
    assert HOSTILE not in text and "2026-12-03T1200Z" not in text
    assert 'href="/datasets/churn/drift/2026-12-03T1100Z"' in text


def test_the_stored_report_is_served_as_it_is_and_a_missing_one_is_a_404() -> None:
    assert _page("/datasets/churn/versions/2/report") == (200, "<html>the report</html>")
    status, body = _page("/datasets/churn/versions/1/report")
    assert status == 404 and "model version 1 of &#x27;churn&#x27; has no report" in body


def test_the_drift_page_draws_the_series_and_links_each_report() -> None:
    status, body = _page("/datasets/churn/drift")
    assert status == 200 and "<polyline" in body
    assert 'href="/datasets/churn/drift/2026-12-03T1100Z"' in body
    assert _page("/datasets/churn/drift/2026-12-03T1100Z") == (200, "<html>drift</html>")


def test_retraining_decisions_are_listed_with_their_guard() -> None:
    status, body = _page("/datasets/churn/retraining")
    assert status == 200 and "debounce" in body and "last start 10 min ago" in body


def test_a_run_shows_its_path_timings_and_the_versions_gate_reasons() -> None:
    run = {
        "name": "run-2",
        "dataset": "churn",
        "status": "SUCCEEDED",
        "path": ["Train", "Evaluate", "Gate", "Promote"],
        "states_seconds": {"Train": 12.5, "Evaluate": 1.25},
        "started_at": "2026-12-03T10:00:00+00:00",
        "seconds": 14.0,
        "decision": None,
    }
    status, body = _page("/runs/run-2", [run])
    assert status == 200
    assert "Train → Evaluate → Gate → Promote" in body
    assert '<th scope="row">Train</th><td class="num">12.500</td>' in body
    assert "reason &lt;script&gt;" in body and 'href="/datasets/churn/versions/2"' in body


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/datasets/other", "no dataset named &#x27;other&#x27;"),
        ("/datasets/churn/versions/3", "no model version 3"),
        ("/datasets/churn/versions/0", "no model version of &#x27;churn&#x27; named &#x27;0&#x27;"),
        ("/datasets/a%2Fb", "no dataset named &#x27;a/b&#x27;"),
        ("/datasets/churn/drift/latest", "no drift report of &#x27;churn&#x27; named"),
        ("/runs/x%20y", "no run named &#x27;x y&#x27;"),
        ("/datasets/churn/nothing", "no page at /datasets/churn/nothing"),
    ],
)
def test_an_unknown_or_malformed_name_is_a_404_naming_it(path: str, named: str) -> None:
    status, body = _page(path)
    assert status == 404 and named in body, body
