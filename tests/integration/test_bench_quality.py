"""bench.quality end to end on one tiny real table: preprocess → train → ONNX → batch scoring of
the held-out rows, and the three defaults fitted on the same received rows (seconds)."""

from __future__ import annotations

import pytest

from bench.quality import Spec, measure_dataset, ratio

pytestmark = pytest.mark.slow


def test_sluice_and_the_defaults_are_scored_on_rows_sluice_never_saw() -> None:
    # Given iris (150 rows, 3 classes) as a dataset
    spec = Spec("sklearn:iris", "target", "classification", "multiclass (3)")

    # When it is measured as python -m bench.quality measures every dataset (a 3 s search)
    row = measure_dataset(spec, budget_seconds=3)

    # Then sluice trained on the received rows only, the held-out ones scored through its graph
    assert (row.rows_received, row.rows_test) == (120, 30)
    assert row.metric == "accuracy" and row.task == "multiclass (3)"
    assert row.chosen in ("linear", "xgboost", "lightgbm", "ensemble") and row.train_seconds > 0
    # iris is easy: a model that scored the wrong rows or misread the labels would be far off
    assert row.sluice >= 0.85
    # And every default was fitted and scored, the best one compared in the metric's direction
    assert set(row.peers) == {"onehot-linear", "lightgbm", "histgb-native"}
    assert all(score >= 0.85 for score in row.peers.values())
    assert row.best_peer_score == max(row.peers.values())
    assert row.ratio == pytest.approx(ratio("accuracy", row.sluice, row.best_peer_score))
