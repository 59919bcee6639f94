"""The model families training tries, each as ONE sklearn Pipeline that skl2onnx can export.

Every candidate is ``ColumnTransformer -> estimator``: numerics are median-imputed (and scaled
for the linear model). Categories are one-hot encoded for the linear model and for multiclass
trees; the boosted trees of a regression or binary task get one column per categorical feature,
its categories numbered by mean target (encoding.py). Categories are not encoded natively by the
estimators on purpose: skl2onnx converts native categorical splits without error and wrongly
(HistGradientBoosting: labels agreed on 41-60% of rows), while both encodings convert exactly.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from numpy.typing import NDArray
from pydantic import JsonValue
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits
from xgboost import XGBClassifier, XGBRegressor

from functions.shared.errors import TrainingError
from functions.shared.features import DatasetSchema
from functions.shared.metrics import METRICS, classification_report, regression_report
from functions.shared.model_card import CandidateRecord, Device
from functions.training.encoding import TargetOrderedEncoder, orders_categories
from functions.training.script_mode import CandidateName, Hyperparameters
from functions.training.splits import Split
from functions.training.target import IDENTITY, LOG_TARGET, uses_log_target

log = logging.getLogger(__name__)

# One-hot width per categorical feature: the most frequent categories each get a column, the
# rest of those seen in training share one "infrequent" column, unseen ones are all zeros.
# skl2onnx converts this for two or more categorical features; for one, it refuses infrequent
# categories and export.convert_one_hot_encoder builds the graph (tests/unit/
# test_training_rare_categories.py, and test_training.py's 150-level column for the rest).
MAX_CATEGORIES = 50
MIN_CATEGORY_ROWS = 5
LINEAR_MAX_ITER = 500
# A class is rare when its share of the training rows is under this fraction of an even share:
# 20 % of two classes, 13 % of three, 8 % of five (docs/decisions.md, 2026-12-03).
RARE_CLASS_FRACTION = 0.4
XGBOOST_REPORTED = (
    "n_estimators",
    "max_depth",
    "learning_rate",
    "early_stopping_rounds",
    "min_child_weight",
    "subsample",
    "colsample_bytree",
    "reg_lambda",
    "tree_method",
    "device",
    "n_jobs",
    "random_state",
)
LIGHTGBM_MAX_DEPTH = 12
LIGHTGBM_REPORTED = (
    "n_estimators",
    "num_leaves",
    "max_depth",
    "learning_rate",
    "min_child_samples",
    "subsample",
    "subsample_freq",
    "colsample_bytree",
    "reg_lambda",
    "early_stopping_round",
    "n_jobs",
    "random_state",
)


@dataclass(frozen=True)
class HeldOutPredictions:
    """What a candidate predicted on rows it was not fitted on, as its selection figure saw
    them: the validation split (one fold), or the out-of-fold predictions of the k-fold search
    over train + validation. ``values`` are probabilities ``(n, K)`` or predictions ``(n,)``."""

    values: NDArray[np.float64]
    y: NDArray[Any]
    fold: NDArray[np.intp]  # each row's fold: the figure is the mean of the metric per fold


@dataclass(frozen=True)
class FittedCandidate:
    name: CandidateName
    pipeline: Pipeline
    record: CandidateRecord
    # set by the search; the ensemble selection blends them (training/ensemble.py)
    held_out: HeldOutPredictions | None = None


def build_features(
    schema: DatasetSchema, *, scale: bool, ordered: bool = False
) -> ColumnTransformer:
    """Select columns by their graph input names, as ``splits.Split.frame`` holds them
    (``schema.numeric`` / ``schema.categorical`` name the graph's float and string inputs).
    ``ordered``: categories become one column each, numbered by target (encoding.py), instead
    of one-hot columns; fitting then needs ``y``."""
    numeric, categorical = schema.numeric, schema.categorical
    numeric_steps: list[tuple[str, Any]] = [
        # keep_empty_features: a numeric column that is all missing in training still gets a
        # column (imputed 0), so the graph's width never depends on the data.
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
    ]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical and ordered:
        transformers.append(("categorical", TargetOrderedEncoder(), categorical))
    elif categorical:
        encoder = OneHotEncoder(
            handle_unknown="ignore",
            max_categories=MAX_CATEGORIES,
            min_frequency=MIN_CATEGORY_ROWS,
            sparse_output=False,
            dtype=np.float32,
        )
        transformers.append(("categorical", encoder, categorical))
    return ColumnTransformer(transformers, remainder="drop")


def build_linear(schema: DatasetSchema, hp: Hyperparameters) -> Pipeline:
    model: LogisticRegression | Ridge
    if schema.task == "classification":
        model = LogisticRegression(max_iter=LINEAR_MAX_ITER, random_state=hp.seed)
    else:
        model = Ridge(alpha=1.0)
    return Pipeline([("features", build_features(schema, scale=True)), ("model", model)])


def build_xgboost(
    schema: DatasetSchema, hp: Hyperparameters, *, device: Device, n_jobs: int
) -> Pipeline:
    params: dict[str, Any] = {
        "n_estimators": hp.n_estimators,
        "max_depth": hp.max_depth,
        "learning_rate": hp.learning_rate,
        "early_stopping_rounds": hp.early_stopping_rounds,
        "tree_method": "hist",
        "device": device,
        "n_jobs": n_jobs,
        "random_state": hp.seed,
    }
    model = XGBClassifier(**params) if schema.task == "classification" else XGBRegressor(**params)
    features = build_features(schema, scale=False, ordered=orders_categories(schema))
    return Pipeline([("features", features), ("model", model)])


def build_lightgbm(schema: DatasetSchema, hp: Hyperparameters, *, n_jobs: int) -> Pipeline:
    """LightGBM on the same features as XGBoost. It runs on the CPU even where a GPU is
    present: the PyPI wheel has no CUDA build (docs/decisions.md, 2026-12-03)."""
    params: dict[str, Any] = {
        "n_estimators": hp.n_estimators,
        "learning_rate": hp.learning_rate,
        "num_leaves": hp.num_leaves,
        # LightGBM grows leaf-wise with no depth limit; a path over 16 distinct features cannot
        # be explained (functions/shared/explanation.py), and 12 levels hold 256 leaves
        "max_depth": LIGHTGBM_MAX_DEPTH,
        "min_child_samples": 20,
        "n_jobs": n_jobs,
        "random_state": hp.seed,
        # LightGBM's own parameter (a callback in its sklearn API): stops on the eval_set
        "early_stopping_round": hp.early_stopping_rounds,
        "deterministic": True,
        "force_row_wise": True,  # with deterministic: the same seed gives the same trees
        "verbose": -1,
    }
    model = LGBMClassifier(**params) if schema.task == "classification" else LGBMRegressor(**params)
    features = build_features(schema, scale=False, ordered=orders_categories(schema))
    return Pipeline([("features", features), ("model", model)])


def device_for(num_gpus: int) -> Device:
    return "cuda" if num_gpus > 0 else "cpu"


def build_candidates(
    schema: DatasetSchema, hp: Hyperparameters, *, num_gpus: int, n_jobs: int | None = None
) -> dict[CandidateName, Pipeline]:
    """The unfitted pipelines ``hp.candidates`` asks for, in that order. XGBoost trains on the
    GPU when the instance has one and uses every core (``n_jobs``, default all) otherwise."""
    pipelines: dict[CandidateName, Pipeline] = {}
    cores = n_jobs or os.cpu_count() or 1
    for name in hp.candidates:
        if name == "linear":
            pipelines[name] = build_linear(schema, hp)
        elif name == "lightgbm":
            pipelines[name] = build_lightgbm(schema, hp, n_jobs=cores)
        else:
            pipelines[name] = build_xgboost(schema, hp, device=device_for(num_gpus), n_jobs=cores)
    return pipelines


def rarest_class(schema: DatasetSchema, y: NDArray[Any]) -> tuple[int, float] | None:
    """The rarest class (index) and its share of ``y`` when that share is under
    ``RARE_CLASS_FRACTION`` of an even share; None on regression or balanced enough classes."""
    if schema.task != "classification" or not schema.classes or y.size == 0:
        return None
    counts = np.bincount(y, minlength=len(schema.classes))
    index = int(np.argmin(counts))
    share = float(counts[index]) / float(y.size)
    return (index, share) if share < RARE_CLASS_FRACTION / len(schema.classes) else None


def balanced_weights(y: NDArray[Any], n_classes: int) -> NDArray[np.float64]:
    """scikit-learn's "balanced" weights, as sample weights every family accepts:
    ``rows / (classes * rows of the class)``, so each class carries the same total weight."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    per_class = y.size / (n_classes * np.maximum(counts, 1.0))
    return np.asarray(per_class[y], dtype=np.float64)


def fit_candidate(
    name: CandidateName,
    pipeline: Pipeline,
    schema: DatasetSchema,
    train: Split,
    validation: Split,
    sample_weight: NDArray[np.float64] | None = None,
    *,
    callbacks: list[Any] | None = None,
) -> FittedCandidate:
    """Fit on train, score on validation; the boosted trees stop early on the validation split.

    Early stopping and model choice both use validation, so its figures flatter the chosen
    model slightly; the evaluate step scores the held-out test split, which training never
    sees, and that is what the gate judges.
    """
    started = time.perf_counter()
    if name == "xgboost":
        features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
        x_train = features.fit_transform(train.frame, train.y)
        x_validation = features.transform(validation.frame)
        model.set_params(callbacks=callbacks)
        try:
            model.fit(
                x_train,
                train.y,
                sample_weight=sample_weight,
                eval_set=[(x_validation, validation.y)],
                verbose=False,
            )
        finally:
            model.set_params(callbacks=None)
    elif name == "lightgbm":
        features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
        x_train = features.fit_transform(train.frame, train.y)
        x_validation = features.transform(validation.frame)
        model.fit(
            x_train,
            train.y,
            sample_weight=sample_weight,
            eval_X=(x_validation,),
            eval_y=(validation.y,),
            callbacks=callbacks,
        )
    else:
        # One BLAS thread: lbfgs on a few thousand rows gains nothing from more, and on 2 cores
        # shared with other processes OpenBLAS's spinning threads made a 0.3 s fit take 7 s.
        with threadpool_limits(limits=1, user_api="blas"):
            pipeline.fit(train.frame, train.y, model__sample_weight=sample_weight)
    fit_seconds = time.perf_counter() - started
    report, value = score(pipeline, schema, validation)
    record = CandidateRecord(
        name=name,
        params=describe_params(pipeline),
        fit_seconds=round(fit_seconds, 3),
        metric_value=value,
        validation=report,
    )
    log.info("fitted %s in %.1f s: %s=%s", name, fit_seconds, schema.metric, value)
    return FittedCandidate(name=name, pipeline=pipeline, record=record)


def score(
    pipeline: Pipeline, schema: DatasetSchema, split: Split
) -> tuple[dict[str, JsonValue], float | None]:
    """The validation report and the contract metric's value in it (None where undefined)."""
    raw: dict[str, object]
    if schema.task == "classification":
        proba = np.asarray(pipeline.predict_proba(split.frame), dtype=np.float64)
        raw = classification_report(split.y, _clip_probabilities(proba), schema.classes or [])
    else:
        raw = regression_report(split.y, np.asarray(pipeline.predict(split.frame), np.float64))
    report = cast(dict[str, JsonValue], raw)
    value = report.get(schema.metric)
    return report, (float(value) if isinstance(value, int | float) else None)


def rank_candidates(candidates: list[FittedCandidate], metric: str) -> list[FittedCandidate]:
    """Best first by the contract metric; an undefined value ranks last, ties keep the earlier
    (simpler) candidate first. Training ships the first one whose export passes parity."""
    if not candidates:
        raise TrainingError("no candidate was trained")
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0

    def rank(candidate: FittedCandidate) -> float:
        value = candidate.record.metric_value
        return -math.inf if value is None or math.isnan(value) else sign * value

    return sorted(candidates, key=rank, reverse=True)  # sorted is stable: ties keep order


def describe_params(pipeline: Pipeline) -> dict[str, JsonValue]:
    """The parameters that explain a fitted candidate, for the model card."""
    model = pipeline.named_steps["model"]
    features = pipeline.named_steps["features"]
    params: dict[str, JsonValue] = {
        "estimator": type(model).__name__,
        "encoded_columns": len(features.get_feature_names_out()),
        "categories": "target-ordered" if _ordered(features) else "one-hot",
        "max_categories": MAX_CATEGORIES,
        "min_category_rows": MIN_CATEGORY_ROWS,
    }
    if isinstance(model, XGBRegressor | LGBMRegressor):  # fitted on y or log(y): target.py
        params["target"] = LOG_TARGET if uses_log_target(model) else IDENTITY
    if isinstance(model, XGBClassifier | XGBRegressor):
        chosen = model.get_params()
        params.update({key: chosen[key] for key in XGBOOST_REPORTED})
        params["best_iteration"] = int(model.best_iteration)
    elif isinstance(model, LGBMClassifier | LGBMRegressor):
        chosen = model.get_params()
        params.update({key: chosen[key] for key in LIGHTGBM_REPORTED})
        # LightGBM counts from 1 (0: no early stop happened); the card counts from 0 like XGBoost
        params["best_iteration"] = max(int(model.best_iteration_), 1) - 1
    elif isinstance(model, LogisticRegression):
        params.update(
            C=float(model.C),
            solver=str(model.solver),
            max_iter=int(model.max_iter),
            n_iter=int(np.max(model.n_iter_)),
        )
    else:
        params["alpha"] = float(model.alpha)
    return params


def _ordered(features: ColumnTransformer) -> bool:
    return any(isinstance(t, TargetOrderedEncoder) for _, t, _ in features.transformers_)


def _clip_probabilities(proba: NDArray[np.float64]) -> NDArray[np.float64]:
    # float32 rounding can put a probability a hair outside [0, 1].
    return np.clip(proba, 0.0, 1.0)
