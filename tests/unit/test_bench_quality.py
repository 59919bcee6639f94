"""bench.quality's judging rules: the metric a contract would name, the ratio's direction, the
best peer, the issue's two targets and the held-out split. They decide what README's model
quality table claims."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.quality import (
    Row,
    Spec,
    best_peer,
    contract_metric,
    holdout,
    ratio,
    table,
    verdict,
)


def test_the_contract_metric_follows_the_task_and_the_number_of_classes() -> None:
    assert contract_metric("classification", 2) == "roc_auc"
    assert contract_metric("classification", 10) == "accuracy"
    assert contract_metric("regression", 0) == "rmse"


def test_the_ratio_is_above_one_when_sluice_wins_whichever_way_the_metric_points() -> None:
    # Given sluice better than the peer by a score metric and by an error metric
    # Then both ratios exceed 1: sluice/peer for roc_auc, peer/sluice for rmse
    assert ratio("roc_auc", 0.99, 0.90) == pytest.approx(1.1)
    assert ratio("rmse", 10.0, 11.0) == pytest.approx(1.1)
    # And a loss reads below 1 in both directions
    assert ratio("accuracy", 0.80, 0.88) < 1.0
    assert ratio("rmse", 12.0, 10.0) < 1.0


@pytest.mark.parametrize(("sluice", "peer"), [(0.0, 1.0), (1.0, float("nan")), (-2.0, 1.0)])
def test_a_ratio_of_a_zero_negative_or_undefined_score_is_refused(
    sluice: float, peer: float
) -> None:
    with pytest.raises(ValueError, match="two positive finite scores"):
        ratio("rmse", sluice, peer)


def test_the_best_peer_is_the_highest_score_or_the_lowest_error() -> None:
    peers = {"onehot-linear": 0.91, "lightgbm": 0.95, "histgb-native": 0.93}
    assert best_peer("roc_auc", peers) == ("lightgbm", 0.95)
    assert best_peer("rmse", peers) == ("onehot-linear", 0.91)


def test_every_dataset_must_reach_one_and_the_mean_one_point_zero_one() -> None:
    # Given one dataset just under 1.00 and a mean above 1.01
    mixed = verdict({"a": 1.05, "b": 0.999, "c": 1.03})

    # Then the per-dataset target is missed, naming the dataset; the mean target is met
    assert (mixed.every_dataset, mixed.below) == (False, ["b"])
    assert mixed.mean and mixed.mean_ratio == pytest.approx(1.0263, abs=1e-4)

    # And all at exactly 1.00 meets the first target and misses the mean
    even = verdict({"a": 1.0, "b": 1.0})
    assert (even.every_dataset, even.mean) == (True, False)


def test_the_held_out_split_is_seeded_disjoint_and_keeps_a_rare_class() -> None:
    # Given 200 rows with 10 positives
    frame = pd.DataFrame({"x": range(200), "y": ["yes"] * 10 + ["no"] * 190})
    spec = Spec("test:rare", "y", "classification", "binary")

    # When it is split twice
    received, test = holdout(frame, spec)
    again, _ = holdout(frame, spec)

    # Then the split is the same each time, disjoint, complete, and the test has positives
    assert received.index.equals(again.index)
    assert set(received.index).isdisjoint(test.index)
    assert len(received) + len(test) == 200
    assert (test["y"] == "yes").sum() == 2


def test_the_table_closes_with_a_note_naming_each_dataset_under_target() -> None:
    # Given one dataset at par and one where sluice is 0.9x the best default
    def row(name: str, sluice: float, best: float) -> Row:
        return Row(
            dataset=name,
            covers="",
            rows=100,
            columns=3,
            task="regression",
            metric="rmse",
            sluice=sluice,
            chosen="xgboost",
            peers={"lightgbm": best, "onehot-linear": best * 2},
            best_peer="lightgbm",
            best_peer_score=best,
            ratio=ratio("rmse", sluice, best),
            train_seconds=1.0,
            rows_train=56,
            rows_received=80,
            rows_test=20,
        )

    printed = table([row("test:par", 10.0, 10.0), row("test:behind", 10.0, 9.0)])

    # Then the targets are judged and the miss is named with its figure and what shipped
    assert "MISSED on test:behind" in printed
    notes = [line for line in printed.splitlines() if line.startswith("missed:")]
    assert notes == [
        "missed: test:behind rmse 10.0000 = 0.900× the best default; sluice shipped xgboost "
        "fitted on 56 of the 80 rows it received (defaults: lightgbm 9.0000, onehot-linear "
        "18.0000)"
    ]
