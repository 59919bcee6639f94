"""Refit the chosen configuration on train + validation before it is exported (issue 17).

Selection needs held-out rows, the shipped model does not: once a configuration is chosen on
validation, the same family with the same hyperparameters is fitted again on train and
validation together, so the model that ships has learnt from 85 % of the rows instead of 70 %.
The test split is never among them (train() does not read it); the gate scores it.

Without a validation split to stop on, a boosted model gets a fixed number of rounds: those
early stopping kept on validation (as AutoGluon's ``refit_full`` reuses them), scaled by the
rows it now sees over the rows it saw (docs/decisions.md, 2026-12-03). Balanced class weights
carry over when the train-only fit chose them, recomputed on the joined rows.

``refit_candidate`` takes one FittedCandidate and returns its refit, so that an ensemble can
refit each member the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits
from xgboost import XGBClassifier, XGBRegressor

from functions.shared.errors import TrainingError
from functions.shared.features import DatasetSchema
from functions.shared.model_card import RefitRecord
from functions.training.candidates import FittedCandidate, balanced_weights
from functions.training.splits import Split, join_splits

log = logging.getLogger(__name__)


def selected_iterations(model: Any) -> int | None:
    """The boosting rounds the fitted model predicts with: the best round early stopping found
    on validation (XGBoost counts from 0, LightGBM from 1, 0 meaning no early stopping ran);
    None for a model that does not boost."""
    if isinstance(model, XGBClassifier | XGBRegressor):
        try:
            return int(model.best_iteration) + 1
        except AttributeError:  # fitted without early stopping: every round counts
            return int(model.get_booster().num_boosted_rounds())
    if isinstance(model, LGBMClassifier | LGBMRegressor):
        return int(model.best_iteration_) or int(model.n_estimators_)
    return None


def scaled_iterations(selected: int, rows_train: int, rows_refit: int) -> int:
    """``selected`` rounds scaled to the larger data, rounded half up: 120 rounds chosen on
    700 train rows become 146 on 850 train + validation rows."""
    return max(1, int(selected * rows_refit / rows_train + 0.5))


def refit_candidate(
    candidate: FittedCandidate, schema: DatasetSchema, train: Split, validation: Split
) -> FittedCandidate:
    """Fit ``candidate``'s configuration again on ``train`` + ``validation``.

    The returned candidate has the same name and the train-only record (the figures selection
    saw) with ``refit`` added; its pipeline is a fresh clone, so ``candidate`` is unchanged.

    Raises
    ------
    TrainingError
        When ``candidate``'s pipeline has no ``model`` step to refit.
    """
    started = time.perf_counter()
    pipeline = clone(candidate.pipeline)
    if "model" not in pipeline.named_steps:
        raise TrainingError(
            f"candidate '{candidate.name}' has no 'model' step to refit "
            f"(steps: {list(pipeline.named_steps)})"
        )
    model = pipeline.named_steps["model"]
    joined = join_splits(train, validation)
    selected = selected_iterations(candidate.pipeline.named_steps["model"])
    iterations = None
    if selected is not None:
        iterations = scaled_iterations(selected, train.rows, joined.rows)
        model.set_params(n_estimators=iterations, **_no_early_stopping(model))
    weighting = candidate.record.class_weighting
    balanced = weighting is not None and weighting.chosen == "balanced"
    weights = balanced_weights(joined.y, len(schema.classes or [])) if balanced else None
    _fit(pipeline, joined, weights)
    seconds = time.perf_counter() - started
    record = RefitRecord(
        rows=joined.rows,
        iterations=iterations,
        selected_iterations=selected,
        class_weight="balanced" if balanced else None,
        seconds=round(seconds, 3),
    )
    log.info(
        "refit %s on %d train + validation rows in %.1f s (%s)",
        candidate.name,
        joined.rows,
        seconds,
        "no boosting" if iterations is None else f"{selected} -> {iterations} rounds",
    )
    return replace(
        candidate,
        pipeline=pipeline,
        record=candidate.record.model_copy(update={"refit": record}),
    )


def _no_early_stopping(model: Any) -> dict[str, Any]:
    """The parameter that turns a family's early stopping off: there is no split to stop on."""
    if isinstance(model, XGBClassifier | XGBRegressor):
        return {"early_stopping_rounds": None, "callbacks": None}
    return {"early_stopping_round": None}


def _fit(pipeline: Pipeline, rows: Split, weights: NDArray[np.float64] | None) -> None:
    # One BLAS thread, as candidates.fit_candidate fits the linear family (more only spin); the
    # boosted families thread with OpenMP, which this leaves alone.
    with threadpool_limits(limits=1, user_api="blas"):
        pipeline.fit(rows.frame, rows.y, model__sample_weight=weights)
