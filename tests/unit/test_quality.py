"""Live quality: feedback joined with the capture sample, on in-memory fakes.

Capture and feedback objects are written by their real writers (``CaptureBuffer`` and
``encode_feedback``), so the job reads exactly what the inference function writes.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.drift.handler import publish
from functions.drift.quality import (
    CAPTURE_LEAD_HOURS,
    MIN_MATCHED,
    WINDOW_HOURS,
    QualityOutcome,
    quality_drop,
    run_quality,
)
from functions.inference.capture import CaptureBuffer, CaptureSettings
from functions.inference.feedback import FeedbackRequest, encode_feedback, feedback_key
from functions.shared.storage import parse_s3_uri
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, publish_live

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


class World:
    """A live model of one kind (version 1), and writers for its capture and feedback."""

    def __init__(self, model: TrainedModel, *, metric_value: float = 0.9) -> None:
        self.store = InMemoryObjectStore()
        self.registry = InMemoryRegistry()
        self.dataset = model.card.dataset
        publish_live(self.store, self.registry, model, metric_value=metric_value)
        self.writes = 0

    def capture(
        self, at: datetime, requests: list[tuple[str, list[Any]]], version: str = "1"
    ) -> None:
        """Each request id with its predictions (one instance each), captured at ``at``."""
        clock = lambda: at.timestamp()  # noqa: E731
        settings = CaptureSettings(bucket=ARTIFACTS, sample_rate=1.0)
        buffer = CaptureBuffer(settings, self.store, clock, random.Random(0), background=False)
        for request_id, predictions in requests:
            instances = [{"x": i} for i in range(len(predictions))]
            buffer.offer(self.dataset, version, request_id, instances, predictions)
        buffer.flush()

    def feedback(self, at: datetime, items: list[tuple[str, int, Any]]) -> None:
        """One accepted feedback request, received at ``at``."""
        request = FeedbackRequest.model_validate(
            {"feedback": [{"request_id": r, "index": i, "actual": a} for r, i, a in items]}
        )
        self.writes += 1
        key = feedback_key(self.dataset, at, f"{self.writes:032x}")
        actuals = [a for _, _, a in items]
        self.store.put(ARTIFACTS, key, encode_feedback(request, actuals, at))

    def evaluation(self, report: dict[str, Any]) -> None:
        """The challenger's test-split report in the version's evaluation.json."""
        record = self.registry.get(self.dataset, 1)
        body = json.dumps({"challenger": {"report": report}}).encode()
        self.store.put(*parse_s3_uri(record.report_uri), body)

    def run(self, **overrides: Any) -> QualityOutcome:
        return run_quality(
            self.store,
            self.registry,
            artifacts_bucket=ARTIFACTS,
            dataset=self.dataset,
            now=overrides.pop("now", NOW),
            **overrides,
        )


def _label(label: str) -> dict[str, Any]:
    """A classifier's captured prediction."""
    return {"label": label, "probabilities": {"no": 0.5, "yes": 0.5}}


def _requests(prefix: str, count: int, *predictions: Any) -> list[tuple[str, list[Any]]]:
    """``count`` requests, each answered with ``predictions`` (one per instance)."""
    return [(f"{prefix}{n}", list(predictions)) for n in range(count)]


def test_accuracy_over_the_captured_share_and_the_drop_from_the_test_split(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given 40 captured requests predicted "yes", and the test split's accuracy of 0.9
    world = World(trained_models["binary"])
    world.evaluation({"accuracy": 0.9, "roc_auc": 0.95})
    world.capture(NOW - timedelta(hours=5), _requests("r", 40, _label("yes")))

    # When feedback says 30 were "yes" and 10 "no", and 20 more requests were not captured
    items = [(f"r{n}", 0, "yes" if n < 30 else "no") for n in range(40)]
    items += [(f"uncaptured{n}", 0, "yes") for n in range(20)]
    world.feedback(NOW - timedelta(hours=1), items)
    outcome = world.run()

    # Then accuracy is measured on the 40 matched, against the test split's 0.9
    assert outcome.status == "measured", outcome.reason
    assert (outcome.metric, outcome.value) == ("accuracy", 0.75)
    assert (outcome.feedback, outcome.matched, outcome.unmatched) == (60, 40, 20)
    assert outcome.offline_value == 0.9
    assert outcome.drop == pytest.approx((0.9 - 0.75) / 0.9)
    figures = {name: (dims, value) for name, dims, value in outcome.metrics()}
    assert figures == {
        "LiveAccuracy": ({"dataset": world.dataset}, 0.75),
        "FeedbackMatched": ({"dataset": world.dataset}, 40.0),
        "FeedbackUnmatched": ({"dataset": world.dataset}, 20.0),
        "LiveQualityDrop": ({"dataset": world.dataset}, pytest.approx(0.1666, abs=1e-3)),
    }
    # and the reports are written, latest.json pointing at this one
    latest = json.loads(world.store.get_bytes(ARTIFACTS, f"{world.dataset}/quality/latest.json"))
    assert latest["report_uri"] == outcome.report_uri and latest["value"] == 0.75
    assert world.store.head(*parse_s3_uri(outcome.report_uri or "")) is not None


def test_rmse_of_a_regressor_and_its_drop_from_the_registry_record(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a regressor whose contract metric (rmse) was 2.0 on the test split
    world = World(trained_models["regression"], metric_value=2.0)
    world.capture(NOW - timedelta(hours=3), _requests("r", 36, 100.0))

    # When the true values are 3 off, either way
    world.feedback(NOW, [(f"r{n}", 0, 103.0 if n % 2 else 97.0) for n in range(36)])
    outcome = world.run()

    # Then the RMSE is 3, half again worse than offline
    assert (outcome.status, outcome.metric) == ("measured", "rmse")
    assert outcome.value == pytest.approx(3.0)
    assert outcome.drop == pytest.approx(0.5)
    assert {name for name, _, _ in outcome.metrics()} == {
        "LiveRMSE",
        "FeedbackMatched",
        "FeedbackUnmatched",
        "LiveQualityDrop",
    }


def test_the_latest_feedback_for_an_instance_wins(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given 30 captured requests of two instances each, all predicted "yes"
    world = World(trained_models["binary"])
    world.capture(NOW - timedelta(hours=2), _requests("r", 30, _label("yes"), _label("yes")))

    # When instance 0 of each is first reported "no", then corrected to "yes" in a later request,
    # and instance 1 is reported "no" then "yes" within one request
    world.feedback(NOW - timedelta(hours=2), [(f"r{n}", 0, "no") for n in range(30)])
    world.feedback(NOW - timedelta(minutes=5), [(f"r{n}", 0, "yes") for n in range(30)])
    world.feedback(
        NOW - timedelta(hours=1),
        [(f"r{n}", 1, a) for n in range(30) for a in ("no", "yes")],
    )
    outcome = world.run()

    # Then each instance counts once, with its latest report: every prediction was right
    assert (outcome.feedback, outcome.matched) == (60, 60)
    assert outcome.value == 1.0


def test_only_feedback_in_the_window_and_captures_a_day_before_it_count(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given predictions captured at the earliest moment that still counts, one second before it,
    # and recent ones
    world = World(trained_models["binary"])
    earliest_capture = NOW - timedelta(hours=WINDOW_HOURS + CAPTURE_LEAD_HOURS)
    world.capture(earliest_capture, _requests("kept", 30, _label("yes")))
    world.capture(earliest_capture - timedelta(seconds=1), _requests("stale", 5, _label("yes")))
    world.capture(NOW - timedelta(hours=1), _requests("early", 10, _label("yes")))
    world.capture(NOW - timedelta(hours=1), _requests("late", 10, _label("yes")))

    # When feedback arrives at the window's start, one second before it, and after "now"
    window_start = NOW - timedelta(hours=WINDOW_HOURS)
    world.feedback(window_start, [(f"kept{n}", 0, "yes") for n in range(30)])
    world.feedback(window_start, [(f"stale{n}", 0, "yes") for n in range(5)])
    world.feedback(window_start - timedelta(seconds=1), [(f"early{n}", 0, "no") for n in range(10)])
    world.feedback(NOW + timedelta(seconds=1), [(f"late{n}", 0, "no") for n in range(10)])
    outcome = world.run()

    # Then the window's edges are inclusive, feedback outside it is ignored, and a prediction
    # captured too early to be read is unmatched
    assert outcome.status == "measured", outcome.reason
    assert (outcome.feedback, outcome.matched, outcome.unmatched) == (35, 30, 5)
    assert outcome.value == 1.0


def test_predictions_of_another_version_are_neither_matched_nor_unmatched(
    trained_models: dict[str, TrainedModel],
) -> None:
    world = World(trained_models["binary"])
    world.capture(NOW - timedelta(hours=1), _requests("live", 30, _label("yes")))
    world.capture(NOW - timedelta(hours=1), _requests("old", 10, _label("no")), version="7")
    world.feedback(NOW, [(f"live{n}", 0, "yes") for n in range(30)])
    world.feedback(NOW, [(f"old{n}", 0, "yes") for n in range(10)])

    outcome = world.run()

    assert (outcome.matched, outcome.unmatched, outcome.other_version) == (30, 0, 10)
    assert outcome.value == 1.0


def test_under_min_matched_nothing_is_measured_published_or_written(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given one matched item fewer than needed, and plenty that capture did not sample
    world = World(trained_models["binary"])
    world.capture(NOW - timedelta(hours=1), _requests("r", MIN_MATCHED - 1, _label("yes")))
    world.feedback(NOW, [(f"r{n}", 0, "yes") for n in range(MIN_MATCHED - 1)])
    world.feedback(NOW, [(f"u{n}", 0, "yes") for n in range(100)])

    outcome = world.run()

    # Then it is skipped, saying why, with the counts, and publishes nothing (no data, no alarm)
    assert outcome.status == "skipped"
    assert f"{MIN_MATCHED - 1} of {MIN_MATCHED + 99}" in outcome.reason
    assert (outcome.matched, outcome.unmatched, outcome.value) == (MIN_MATCHED - 1, 100, None)
    assert outcome.metrics() == []
    assert world.store.keys(ARTIFACTS, f"{world.dataset}/quality/") == []


def test_no_feedback_and_no_live_model_are_skipped(
    trained_models: dict[str, TrainedModel],
) -> None:
    world = World(trained_models["binary"])
    world.capture(NOW - timedelta(hours=1), _requests("r", 40, _label("yes")))
    no_feedback = world.run()
    no_model = run_quality(
        InMemoryObjectStore(), InMemoryRegistry(), artifacts_bucket=ARTIFACTS, dataset="x", now=NOW
    )
    assert (no_feedback.status, no_feedback.reason) == ("skipped", "no feedback in the last 24 h")
    assert (no_model.status, no_model.reason) == ("skipped", "no live model")


def test_an_offline_score_that_is_not_recorded_leaves_the_drop_out(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a classifier whose contract metric is not accuracy and no evaluation.json
    world = World(trained_models["binary"])
    world.capture(NOW - timedelta(hours=1), _requests("r", 30, _label("yes")))
    world.feedback(NOW, [(f"r{n}", 0, "yes") for n in range(30)])

    outcome = world.run()

    assert (outcome.status, outcome.offline_value, outcome.drop) == ("measured", None, None)
    assert "LiveQualityDrop" not in {name for name, _, _ in outcome.metrics()}


@pytest.mark.parametrize(
    ("metric", "live", "offline", "drop"),
    [
        ("accuracy", 0.8, 0.9, 0.1 / 0.9),
        ("accuracy", 0.95, 0.9, -0.05 / 0.9),
        ("rmse", 3.0, 2.0, 0.5),
        ("rmse", 1.0, 2.0, -0.5),
        ("rmse", 1.0, 0.0, None),
        ("accuracy", 0.8, None, None),
    ],
)
def test_the_drop_is_positive_when_live_is_worse(
    metric: Any, live: float, offline: float | None, drop: float | None
) -> None:
    got = quality_drop(metric, live, offline)
    assert got == drop if drop is None else math.isclose(got or 0.0, drop)


def test_quality_figures_are_emf_documents_with_the_dataset_as_only_dimension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    outcome = QualityOutcome(
        dataset="churn",
        status="measured",
        reason="",
        metric="accuracy",
        value=0.8,
        matched=40,
        unmatched=360,
        drop=0.1,
    )
    printed: list[str] = []

    assert publish(outcome, emit=printed.append) == 4

    documents = [json.loads(line) for line in printed]
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["dataset"]] for d in documents)
    assert all(d["dataset"] == "churn" for d in documents)
    units = {
        m["Name"]: m["Unit"]
        for d in documents
        for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert units == {
        "LiveAccuracy": "None",
        "FeedbackMatched": "Count",
        "FeedbackUnmatched": "Count",
        "LiveQualityDrop": "None",
    }
    assert publish(outcome.model_copy(update={"status": "skipped"}), emit=printed.append) == 0
