"""The model card model: what it accepts, and the inconsistencies it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from functions.shared.model_card import ModelCard

SHA = "ab" * 32


def _card(**changes: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "dataset": "churn",
        "dataset_version": "v1",
        "task": "classification",
        "target": "churned",
        "metric": "f1_macro",
        "features": [{"name": "age", "kind": "numeric"}, {"name": "plan", "kind": "categorical"}],
        "classes": ["no", "yes"],
        "chosen": "xgboost",
        "candidates": [
            {
                "name": "xgboost",
                "params": {"max_depth": 6},
                "fit_seconds": 1.5,
                "metric_value": 0.8,
                "validation": {"f1_macro": 0.8},
            }
        ],
        "validation": {"f1_macro": 0.8},
        "parity": {
            "rows": 10,
            "tolerance": 1e-4,
            "max_abs_diff": 1e-7,
            "max_scaled_diff": 1e-7,
            "label_agreement": 1.0,
            "ties": 0,
            "passed": True,
        },
        "onnx": {
            "sha256": SHA,
            "bytes": 1000,
            "opset": {"": 17, "ai.onnx.ml": 3},
            "inputs": [
                {"name": "age", "type": "tensor(float)", "shape": [None, 1]},
                {"name": "plan", "type": "tensor(string)", "shape": [None, 1]},
            ],
            "outputs": [{"name": "label", "type": "tensor(int64)", "shape": [None]}],
        },
        "training": {
            "seconds": 3.0,
            "load_seconds": 0.1,
            "export_seconds": 0.2,
            "parity_seconds": 0.1,
            "rows_train": 70,
            "rows_validation": 10,
            "gpus": 0,
            "device": "cpu",
            "hyperparameters": {"seed": 0},
            "libraries": {"xgboost": "3.2.0"},
        },
        "created_at": "2026-11-22T00:00:00Z",
    }
    card.update(changes)
    return card


def test_a_complete_card_validates() -> None:
    card = ModelCard.model_validate(_card())
    assert card.schema_version == 1
    assert card.chosen_candidate.metric_value == 0.8
    assert card.output_names == ["label", "probabilities"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unexpected": 1}, "Extra inputs are not permitted"),
        ({"classes": None}, "classes must be given for classification"),
        ({"task": "regression", "metric": "rmse"}, "classes must be given for classification"),
        ({"chosen": "linear"}, "chosen candidate 'linear' is not among"),
        ({"created_at": "2026-11-22T00:00:00"}, "timezone"),
    ],
)
def test_inconsistent_cards_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(_card(**changes))


def test_a_card_for_a_model_that_failed_parity_is_refused() -> None:
    parity = {**_card()["parity"], "passed": False}
    with pytest.raises(ValidationError, match="only written for a model that passed parity"):
        ModelCard.model_validate(_card(parity=parity))


def test_onnx_inputs_must_be_the_features_in_order() -> None:
    onnx = _card()["onnx"]
    swapped = {**onnx, "inputs": list(reversed(onnx["inputs"]))}
    with pytest.raises(ValidationError, match="ONNX inputs must be the features' graph columns"):
        ModelCard.model_validate(_card(onnx=swapped))


def _awkward_card(**changes: Any) -> dict[str, Any]:
    """A card whose features are named "a b" and "label": its graph inputs are mapped."""
    onnx = _card()["onnx"]
    inputs = [
        {**onnx["inputs"][0], "name": "a_b_c8687a08"},
        {**onnx["inputs"][1], "name": "label_1aca80e8"},
    ]
    awkward: dict[str, Any] = {
        "features": [{"name": "a b", "kind": "numeric"}, {"name": "label", "kind": "categorical"}],
        "onnx": {**onnx, "inputs": inputs},
        "onnx_input_names": {"a b": "a_b_c8687a08", "label": "label_1aca80e8"},
    }
    return _card(**{**awkward, **changes})


def test_a_card_maps_the_users_feature_names_to_graph_inputs() -> None:
    card = ModelCard.model_validate(_awkward_card())
    assert [f.name for f in card.features] == ["a b", "label"]
    assert card.input_names == {"a b": "a_b_c8687a08", "label": "label_1aca80e8"}


def test_a_card_without_the_mapping_feeds_inputs_named_as_the_features() -> None:
    card = ModelCard.model_validate(_card())
    assert card.onnx_input_names is None
    assert card.input_names == {"age": "age", "plan": "plan"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"onnx_input_names": {"a b": "a_b_c8687a08"}}, "each feature to an input of its own"),
        (
            {"onnx_input_names": {"a b": "x", "label": "x"}},
            "each feature to an input of its own",
        ),
        (
            {"onnx_input_names": {"a b": "a_b_c8687a08", "label": "label"}},
            "ONNX inputs must be the features' graph columns",
        ),
    ],
)
def test_a_mapping_that_does_not_fit_the_graph_is_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(_awkward_card(**changes))


_LINEAR = {**_card()["candidates"][0], "name": "linear", "metric_value": 0.7}
_XGBOOST_FAILED = {
    "candidate": "xgboost",
    "reason": "the ONNX export of 'xgboost' disagrees with the native model on 10 validation "
    "rows: max diff 0.000181 (tolerance 0.0001)",
    "report": {**_card()["parity"], "max_scaled_diff": 1.81e-4, "passed": False},
}


def test_a_card_without_parity_failures_shipped_its_best_candidate() -> None:
    # Given a card written before parity fallbacks existed (no such field)
    card = ModelCard.model_validate(_card())
    assert card.parity_failures == []
    assert card.parity_fallback is None


def test_a_fallback_card_names_the_candidate_that_failed() -> None:
    # Given linear shipped because xgboost's export failed parity
    card = ModelCard.model_validate(
        _card(chosen="linear", candidates=[*_card()["candidates"], _LINEAR],
              parity_failures=[_XGBOOST_FAILED])
    )  # fmt: skip
    # Then the card keeps the figures and says so in one line
    assert card.parity_failures[0].report is not None
    assert card.parity_failures[0].report.max_scaled_diff == 1.81e-4
    assert card.parity_fallback is not None
    assert card.parity_fallback.startswith("'linear' shipped because a better candidate failed")
    assert "max diff 0.000181" in card.parity_fallback


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ({**_XGBOOST_FAILED, "candidate": "linear"}, "other than the chosen one"),
        ({**_XGBOOST_FAILED, "candidate": "forest"}, "other than the chosen one"),
        (
            {**_XGBOOST_FAILED, "report": {**_XGBOOST_FAILED["report"], "passed": True}},
            "passed parity: not a failure",
        ),
    ],
)
def test_inconsistent_parity_failures_are_refused(failure: dict[str, Any], message: str) -> None:
    changes = {
        "chosen": "linear",
        "candidates": [*_card()["candidates"], _LINEAR],
        "parity_failures": [failure],
    }
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(_card(**changes))


_CALIBRATION = {
    "applied": True,
    "temperature": 1.6,
    "probability_floor": 1e-3,
    "folds": 5,
    "before": {"log_loss": 0.52, "brier": 0.18, "ece": 0.09},
    "after": {"log_loss": 0.47, "brier": 0.16, "ece": 0.02},
    "reason": "cross-fitted log loss 0.4700 vs 0.5200 raw (T = 1.600)",
}


def test_a_card_records_the_calibration_and_older_cards_have_none() -> None:
    card = ModelCard.model_validate(_card(calibration=_CALIBRATION))
    assert card.calibration is not None and card.calibration.method == "temperature"
    assert card.calibration.after is not None and card.calibration.after.ece == 0.02
    assert ModelCard.model_validate(_card()).calibration is None


def test_a_regression_card_cannot_carry_a_calibration() -> None:
    regression = _card(task="regression", metric="rmse", classes=None, calibration=_CALIBRATION)
    with pytest.raises(ValidationError, match="only a classification model"):
        ModelCard.model_validate(regression)


_REFIT = {"rows": 80, "iterations": 91, "selected_iterations": 80, "seconds": 0.4}


def _refit_card(**refit: Any) -> dict[str, Any]:
    """The xgboost card, its candidate refit on its 70 train + 10 validation rows."""
    candidate = {**_card()["candidates"][0], "refit": {**_REFIT, **refit}}
    return _card(candidates=[candidate])


def test_a_card_records_the_refit_beside_the_train_only_figures() -> None:
    card = ModelCard.model_validate(_refit_card(class_weight="balanced"))
    refit = card.chosen_candidate.refit
    assert refit is not None and (refit.iterations, refit.class_weight) == (91, "balanced")
    assert card.chosen_candidate.metric_value == 0.8  # the train-only fit's, as selected
    assert card.fitted_rows == 80
    # And a card written before the refit existed has none: its model saw the train rows
    older = ModelCard.model_validate(_card())
    assert older.chosen_candidate.refit is None and older.fitted_rows == 70


@pytest.mark.parametrize(
    ("refit", "message"),
    [
        ({"rows": 70}, r"a refit is fitted on the train \+ validation rows \(80\)"),
        ({"iterations": None}, "both iteration counts"),
        ({"class_weight": "custom"}, "class_weight"),
    ],
)
def test_inconsistent_refits_are_refused(refit: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(_refit_card(**refit))


def _ensemble_card(members: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """A card whose chosen model blends xgboost and linear."""
    families = [
        _card()["candidates"][0],
        {**_card()["candidates"][0], "name": "linear", "metric_value": 0.7},
    ]
    ensemble = {
        **_card()["candidates"][0],
        "name": "ensemble",
        "params": {"rounds": 25},
        "metric_value": 0.85,
        "members": members,
    }
    return _card(chosen="ensemble", candidates=[*families, ensemble], **changes)


BLEND = [
    {"name": "xgboost", "weight": 0.6, "count": 15},
    {"name": "linear", "weight": 0.4, "count": 10},
]


def test_an_ensemble_card_lists_members_and_weights() -> None:
    card = ModelCard.model_validate(_ensemble_card(BLEND))
    assert card.chosen_candidate.name == "ensemble"
    assert [(m.name, m.weight) for m in card.chosen_candidate.members] == [
        ("xgboost", 0.6),
        ("linear", 0.4),
    ]
    assert [c.name for c in card.families] == ["xgboost", "linear"]
    # And a card written before ensembles existed (no members anywhere) still loads
    assert ModelCard.model_validate(_card()).chosen_candidate.members == []


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([{**BLEND[0], "name": "lightgbm"}, BLEND[1]], r"must be the card's other candidates"),
        ([BLEND[0], {**BLEND[1], "weight": 0.3}], "ensemble weights must sum to 1"),
        ([BLEND[0], {**BLEND[0]}], "must be distinct families"),
        ([], "only the 'ensemble' candidate has members, and it needs them"),
    ],
)
def test_inconsistent_ensembles_are_refused(members: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(_ensemble_card(members))


def test_only_the_ensemble_has_members() -> None:
    family = {**_card()["candidates"][0], "members": BLEND}
    with pytest.raises(ValidationError, match="only the 'ensemble' candidate has members"):
        ModelCard.model_validate(_card(candidates=[family]))
