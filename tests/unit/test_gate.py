"""Gate policy: threshold, champion comparison in the metric's direction, fail closed."""

from __future__ import annotations

import math

import pytest

from functions.shared.gate import decide


def test_a_good_first_model_passes_on_threshold_alone() -> None:
    decision = decide("roc_auc", 0.82, None, threshold=0.75, tolerance=0.01)
    assert decision.passed
    assert "no live champion" in decision.reasons[-1]


def test_missing_the_threshold_fails() -> None:
    decision = decide("roc_auc", 0.70, None, threshold=0.75, tolerance=0.01)
    assert not decision.passed
    assert "misses threshold" in decision.reasons[0]


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "passed"),
    [
        ("roc_auc", 0.805, 0.81, True),  # within tolerance below the champion
        ("roc_auc", 0.79, 0.81, False),  # worse than champion - tolerance
        ("rmse", 10.5, 10.0, True),  # lower is better: within tolerance above
        ("rmse", 12.0, 10.0, False),  # lower is better: too much worse
        ("rmse", 8.0, 10.0, True),
    ],
)
def test_the_champion_comparison_follows_the_metric_direction(
    metric: str, challenger: float, champion: float, passed: bool
) -> None:
    threshold = 0.75 if metric == "roc_auc" else 15.0
    tolerance = 0.01 if metric == "roc_auc" else 1.0
    decision = decide(metric, challenger, champion, threshold=threshold, tolerance=tolerance)
    assert decision.passed is passed


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf])
def test_unmeasurable_challengers_fail_closed(bad: float | None) -> None:
    decision = decide("accuracy", bad, 0.5, threshold=0.0, tolerance=1.0)
    assert not decision.passed
    assert "failing closed" in decision.reasons[0]


def test_an_unmeasurable_champion_does_not_block_a_good_challenger() -> None:
    decision = decide("accuracy", 0.9, math.nan, threshold=0.8, tolerance=0.0)
    assert decision.passed
    assert "ignored" in decision.reasons[-1]
