"""Class weighting for rare classes: tried where a class is rare, kept only where it helps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from functions.shared.model_card import ModelCard
from functions.training.candidates import balanced_weights, rarest_class
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.search import Searcher
from functions.training.splits import load_split
from functions.training.train import train
from tests import datasets

FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1)  # no search


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelCard]:
    root = tmp_path_factory.mktemp("imbalanced")
    datasets.imbalanced_binary(root / "version")
    return root, train(SageMakerPaths.for_version(root / "version", root), FAST, num_gpus=0)


def test_six_percent_positives_get_balanced_weights_where_they_help(
    imbalanced: tuple[Path, ModelCard],
) -> None:
    # Given 6 % positives scored on f1_macro, trained with every candidate
    _, card = imbalanced
    for candidate in card.families:
        weighting = candidate.class_weighting
        # Then each candidate records both figures and the rare class
        assert weighting is not None, candidate.name
        assert weighting.rarest_class == "yes"
        assert weighting.rarest_share == pytest.approx(0.06, abs=0.01)
        assert weighting.weighted is not None and weighting.unweighted is not None
        # And kept the weights exactly when they scored better on validation
        better = weighting.weighted > weighting.unweighted
        assert weighting.chosen == ("balanced" if better else "none")
        assert candidate.metric_value == max(weighting.weighted, weighting.unweighted)
        assert candidate.params["class_weight"] == ("balanced" if better else None)
    # And on this data the weights help the shipped model (a family, or the families a blend
    # holds), whose export passed parity
    shipped = [m.name for m in card.chosen_candidate.members] or [card.chosen]
    weighting = {c.name: c.class_weighting for c in card.families}
    assert any((w := weighting[name]) is not None and w.chosen == "balanced" for name in shipped)
    assert card.parity.passed


def test_weights_are_dropped_when_they_do_not_improve_the_metric(
    imbalanced: tuple[Path, ModelCard],
) -> None:
    # Given the same data judged on accuracy, which weighting the rare class costs
    root, _ = imbalanced
    schema = datasets.imbalanced_binary(root / "again").model_copy(update={"metric": "accuracy"})
    train_split = load_split(root / "again" / "train", schema, "train")
    validation = load_split(root / "again" / "validation", schema, "validation")
    hp = FAST.model_copy(update={"candidates": ("linear",)})
    # When fitted with and without weights
    fitted = Searcher(schema, hp, train_split, validation, num_gpus=0).search("linear", 1)
    # Then the unweighted model is kept, and both figures are recorded
    weighting = fitted.record.class_weighting
    assert weighting is not None and weighting.weighted is not None
    assert weighting.unweighted is not None and weighting.weighted <= weighting.unweighted
    assert weighting.chosen == "none"
    assert fitted.record.metric_value == weighting.unweighted
    assert fitted.record.params["class_weight"] is None


@pytest.mark.parametrize(
    ("counts", "rare"),
    [
        ((94, 6), (1, 0.06)),  # 6 % of two classes
        ((81, 19), (1, 0.19)),  # just under 20 %
        ((80, 20), None),  # 20 %: not rare
        ((50, 38, 12), (2, 0.12)),  # under 0.4 / 3 = 13.3 %
        ((50, 36, 14), None),
    ],
)
def test_a_class_is_rare_under_forty_percent_of_an_even_share(
    tmp_path: Path, counts: tuple[int, ...], rare: tuple[int, float] | None
) -> None:
    # Given a schema with as many classes as counts, and labels in those proportions
    schema = datasets.binary_numeric(tmp_path, rows=200).model_copy(
        update={"classes": [f"c{k}" for k in range(len(counts))]}
    )
    y = np.repeat(np.arange(len(counts)), counts)
    # Then the rarest class is named exactly when it is under 0.4 of an even share
    found = rarest_class(schema, y)
    if rare is None:
        assert found is None
    else:
        assert found is not None
        assert found[0] == rare[0] and found[1] == pytest.approx(rare[1])


def test_balanced_weights_give_every_class_the_same_total() -> None:
    y = np.array([0] * 94 + [1] * 6)
    weights = balanced_weights(y, 2)
    assert weights[y == 0].sum() == pytest.approx(weights[y == 1].sum())
    assert weights.sum() == pytest.approx(y.size)


def test_regression_is_never_weighted(tmp_path: Path) -> None:
    schema = datasets.regression_prices(tmp_path, rows=200)
    assert rarest_class(schema, np.zeros(10)) is None
