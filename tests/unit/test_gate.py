"""Gate policy: threshold, champion comparison in the metric's direction, fail closed; schema
changes refused unless accepted; intervals and small-split warnings in the reasons."""

from __future__ import annotations

import math

import pytest

from functions.shared.gate import (
    GateEvidence,
    MetricInterval,
    decide,
    gate_inputs,
    small_classes,
)
from functions.shared.schema_change import (
    NamedFeature,
    RenamedFeature,
    RetypedFeature,
    SchemaChange,
)


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


# -- schema changes, intervals, small splits ------------------------------------------------------

REMOVED = SchemaChange(
    champion_version=1,
    removed=[NamedFeature(name="plan", kind="categorical")],
    renamed=[RenamedFeature(old="tenure", new="tenure_months", kind="numeric")],
    retyped=[RetypedFeature(name="age", old="numeric", new="categorical")],
    added=[NamedFeature(name="region", kind="categorical")],
)


def test_a_blocking_schema_change_refuses_and_names_the_change() -> None:
    # Given the upload: better than the threshold, but the champion cannot score it
    inputs = gate_inputs(
        "roc_auc",
        0.7055,
        None,
        threshold=0.7,
        tolerance=0.01,
        evidence=GateEvidence(schema_change=REMOVED),
    )
    decision = inputs.decide()
    # Then it is refused, the reasons name every change, and nothing says "no live champion"
    assert not inputs.comparable and not decision.passed
    refusal = decision.reasons[1]
    assert refusal.startswith("refused: the features changed since live version 1")
    for named in ("removed: plan", "tenure → tenure_months", "age (numeric → categorical)"):
        assert named in refusal
    assert "accept_schema_change" in refusal
    assert not any("no live champion" in r for r in decision.reasons)


def test_an_accepted_schema_change_lets_the_threshold_alone_decide_and_says_so() -> None:
    accepted = REMOVED.model_copy(update={"accepted": True})
    inputs = gate_inputs(
        "roc_auc",
        0.7055,
        0.7233,  # a champion figure from elsewhere cannot be compared: ignored
        threshold=0.7,
        tolerance=0.01,
        evidence=GateEvidence(schema_change=accepted),
    )
    decision = inputs.decide()
    assert inputs.comparable and inputs.champion is None and decision.passed
    assert "accepted by the contract (accept_schema_change)" in decision.reasons[1]
    assert "threshold alone decides" in decision.reasons[1]


def test_added_columns_keep_the_champion_comparison() -> None:
    added = SchemaChange(champion_version=2, added=[NamedFeature(name="x", kind="numeric")])
    decision = gate_inputs(
        "roc_auc",
        0.7055,
        0.7233,
        threshold=0.7,
        tolerance=0.01,
        evidence=GateEvidence(schema_change=added),
    ).decide()
    # Then the champion still decides: the challenger is worse than allowed
    assert not decision.passed
    assert decision.reasons[1].startswith("features added: x (numeric) since live version 2")
    assert "worse than allowed" in decision.reasons[2]


def test_a_live_champion_that_was_not_scored_is_not_called_absent() -> None:
    evidence = GateEvidence(champion_note="cannot load the champion: sha256 mismatch")
    decision = decide("roc_auc", 0.8, None, threshold=0.7, tolerance=0.0, evidence=evidence)
    assert decision.passed
    assert decision.reasons[-1] == (
        "live champion not scored (cannot load the champion: sha256 mismatch): "
        "threshold alone decides"
    )


def test_the_reasons_carry_both_intervals() -> None:
    evidence = GateEvidence(
        challenger_interval=MetricInterval(low=0.68, high=0.73, level=0.95, resamples=1000),
        champion_interval=MetricInterval(low=0.70, high=0.745, level=0.95, resamples=1000),
        test_rows=812,
    )
    decision = decide("roc_auc", 0.7055, 0.7233, threshold=0.7, tolerance=0.01, evidence=evidence)
    assert decision.reasons[-1] == (
        "95% bootstrap interval (1000 resamples of 812 test rows): "
        "challenger 0.68–0.73, champion 0.7–0.745"
    )


def test_a_small_test_split_is_flagged_without_refusing() -> None:
    # Given iris's 19 test rows, about six of each class, and a perfect score
    named, more = small_classes({"setosa": 6, "versicolor": 7, "virginica": 6})
    evidence = GateEvidence(test_rows=19, small_classes=named, more_small_classes=more)
    decision = gate_inputs(
        "f1_macro", 1.0, None, threshold=0.9, tolerance=0.0, evidence=evidence
    ).decide()
    # Then it passes (size alone does not refuse), with both warnings
    assert decision.passed
    warnings = [r for r in decision.reasons if r.startswith("warning:")]
    assert warnings == [
        "warning: the test split has only 19 rows (under 50): its figures are rough, read them "
        "with the interval",
        "warning: classes with under 10 test rows: 'setosa' 6, 'virginica' 6, 'versicolor' 7; "
        "their per-class figures are noise",
    ]


def test_a_split_of_fifty_rows_and_ten_per_class_has_no_warning() -> None:
    named, more = small_classes({"no": 40, "yes": 10})
    evidence = GateEvidence(test_rows=50, small_classes=named, more_small_classes=more)
    decision = decide("roc_auc", 0.9, None, threshold=0.7, tolerance=0.0, evidence=evidence)
    assert not any(r.startswith("warning:") for r in decision.reasons)


def test_many_small_classes_are_named_up_to_ten() -> None:
    named, more = small_classes({f"c{i:02d}": i % 5 for i in range(25)})
    assert len(named) == 10 and more == 15
    assert list(named.values()) == sorted(named.values())
