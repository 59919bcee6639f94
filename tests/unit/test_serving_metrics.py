"""Serving metrics: aggregated per window, published as CloudWatch EMF documents."""

from __future__ import annotations

import json
from typing import Any

from functions.inference.serving_metrics import MAX_VALUES, ServingMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _metrics(clock: Clock, printed: list[dict[str, Any]]) -> ServingMetrics:
    return ServingMetrics(
        window_seconds=60,
        clock=clock,
        wall=lambda: 1_700_000_000.0,
        emit=lambda line: printed.append(json.loads(line)),
        enabled=True,
        namespace="SluiceTest",
    )


def test_a_window_becomes_one_document_per_version_and_one_per_class() -> None:
    clock, printed = Clock(), []
    metrics = _metrics(clock, printed)
    metrics.record("churn", "3", 0.002, 2, [{"label": "yes"}, {"label": "no"}])
    metrics.record("churn", "3", 0.004, 1, [{"label": "yes"}])

    assert metrics.maybe_flush() == 0 and printed == []  # the window is still open
    clock.now = 61
    assert metrics.maybe_flush() == 4

    main, *classes, errors = printed
    directive = main["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "SluiceTest"
    assert directive["Dimensions"] == [["dataset", "model_version"]]
    assert {m["Name"] for m in directive["Metrics"]} == {
        "Requests",
        "PredictLatency",
        "InstancesPerRequest",
    }
    assert (main["dataset"], main["model_version"], main["Requests"]) == ("churn", "3", 2)
    assert main["PredictLatency"] == [2.0, 4.0] and main["InstancesPerRequest"] == [2.0, 1.0]
    assert main["_aws"]["Timestamp"] == 1_700_000_000_000
    assert {(c["class"], c["Predictions"]) for c in classes} == {("yes", 2), ("no", 1)}
    assert classes[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["dataset", "model_version", "class"]
    ]
    assert (errors["dataset"], errors["Errors"], errors["ErrorRate"]) == ("churn", 0, 0.0)
    # and the next window starts empty
    clock.now = 200
    assert metrics.maybe_flush() == 0


def test_a_regressor_reports_prediction_quantiles() -> None:
    clock, printed = Clock(), []
    metrics = _metrics(clock, printed)
    metrics.record("prices", "1", 0.001, 100, [float(v) for v in range(100)])
    metrics.flush()
    document, _ = printed
    assert abs(document["PredictionP50"] - 49.5) < 1e-9
    assert document["PredictionP10"] < document["PredictionP50"] < document["PredictionP90"]


def test_values_are_capped_at_emfs_limit_but_every_request_is_counted() -> None:
    clock, printed = Clock(), []
    metrics = _metrics(clock, printed)
    for _ in range(MAX_VALUES + 50):
        metrics.record("churn", "1", 0.001, 1, [{"label": "yes"}])
    metrics.flush()
    assert printed[0]["Requests"] == MAX_VALUES + 50
    assert len(printed[0]["PredictLatency"]) == MAX_VALUES


def test_disabled_metrics_record_and_print_nothing(monkeypatch: Any) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    printed: list[str] = []
    metrics = ServingMetrics(emit=printed.append, clock=lambda: 1e9)
    metrics.record("churn", "1", 0.001, 1, [{"label": "yes"}])
    assert metrics.flush() == 0 and printed == []


def test_errors_per_dataset_become_an_error_rate_with_the_dataset_as_only_dimension() -> None:
    clock, printed = Clock(), []
    metrics = _metrics(clock, printed)
    for _ in range(3):
        metrics.record("churn", "3", 0.001, 1, [{"label": "yes"}])
    metrics.record("churn", "4", 0.001, 1, [{"label": "no"}])  # a canary's version: same dataset
    metrics.record_error("churn")
    metrics.record_error("prices")  # a model that answers nothing still has a rate: 1.0
    metrics.flush()
    rates = {d["dataset"]: (d["Errors"], d["ErrorRate"]) for d in printed if "ErrorRate" in d}
    assert rates == {"churn": (1, 0.2), "prices": (1, 1.0)}
    [directive] = next(d for d in printed if "ErrorRate" in d)["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["dataset"]]  # what infra/alarms.py's errors alarm watches
