"""A log target for the boosted trees of a positive, right-skewed regression (issue 17).

A price-like target (modeldata/ames' ``Sale_Price``: positive, skewness 1.7) spreads its
errors by its size: trees fitted on the raw values spend their splits on the few expensive
rows, and their leaves average prices that differ by multiples. Fitted on ``log(y)`` and
answered as ``exp(...)``, the same trees model relative differences. On ames' 1 999 training
rows it took every tree model's held-out rmse down by 4-10 % (XGBoost 26 578 -> 24 120,
LightGBM 26 894 -> 24 606); on the same rows it took a ridge regression from 36 709 to 65 010,
because ``exp`` of an unbounded linear extrapolation is worse still. So only the tree families
try it (their predictions stay within their leaves' range), and only where it can help:
every target value positive and its sample skewness at least ``MIN_SKEW`` (``eligible``).

Whether a family uses it is decided on the selection figure, in the target's own unit
(search.py): the family's default configuration is scored both ways and the better one fixes
the family's target for its whole search, so the metric that chooses is the one reported.

``LogTargetXGBRegressor`` and ``LogTargetLGBMRegressor`` are the estimators themselves with
``fit`` taking ``log`` of the target (and of the early-stopping split's) and ``predict``
answering ``exp``; every other part of training (the pipeline's ``model`` step, refit's
rounds, the ensemble's tree count) sees an XGBRegressor or LGBMRegressor. The exported graph
is the trees' graph with one ``Exp`` after ``variable`` (``append_exp``): serving stays one
graph and onnxruntime only, and the parity check compares it with ``predict``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from lightgbm import LGBMRegressor
from numpy.typing import NDArray
from xgboost import XGBRegressor

from functions.shared.errors import TrainingError
from functions.shared.features import PREDICTION_OUTPUT, DatasetSchema
from functions.training.graphs import rename_tensor

# Bulmer's "highly skewed": a target under it is near enough symmetric that a log cannot pay
# for the extra evaluation it costs each tree family (diabetes' target: 0.44).
MIN_SKEW = 1.0
LOG_TARGET = "log"
IDENTITY = "identity"
EXP_PREFIX = "log_target_"  # the names of the node and tensor append_exp adds


def skewness(y: NDArray[np.float64]) -> float:
    """The sample skewness (Fisher-Pearson, unadjusted); 0 for a constant or tiny target."""
    if y.size < 3:
        return 0.0
    centred = y - y.mean()
    spread = float(np.sqrt(np.mean(centred**2)))
    return 0.0 if spread == 0.0 else float(np.mean(centred**3)) / spread**3


def eligible(schema: DatasetSchema, y: NDArray[Any]) -> bool:
    """Whether the tree families try a log target: a regression whose every value is positive
    and finite and whose skewness is at least ``MIN_SKEW``."""
    if schema.task != "regression" or y.size == 0:
        return False
    values = np.asarray(y, dtype=np.float64)
    if not bool(np.all(np.isfinite(values))) or float(values.min()) <= 0.0:
        return False
    return skewness(values) >= MIN_SKEW


def _log(y: Any) -> NDArray[np.float64]:
    values = np.asarray(y, dtype=np.float64)
    if values.size and float(values.min()) <= 0.0:
        raise TrainingError(
            f"a log target needs positive values; this one's smallest is {float(values.min())}"
        )
    return np.log(values)


class LogTargetXGBRegressor(XGBRegressor):
    """XGBRegressor fitted on ``log(y)``, predicting ``exp``: see the module's docstring."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> LogTargetXGBRegressor:  # noqa: N803
        eval_set = kwargs.get("eval_set")
        if eval_set is not None:
            kwargs["eval_set"] = [(x, _log(target)) for x, target in eval_set]
        super().fit(X, _log(y), **kwargs)
        return self

    def predict(self, X: Any, **kwargs: Any) -> NDArray[np.float64]:  # noqa: N803
        return np.exp(np.asarray(super().predict(X, **kwargs), dtype=np.float64))


class LogTargetLGBMRegressor(LGBMRegressor):
    """LGBMRegressor fitted on ``log(y)``, predicting ``exp``: see the module's docstring.

    ``fit`` and ``predict`` pass every argument on by keyword, so they take all LightGBM's
    (its stubs spell each one out: hence the override ignores)."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> LogTargetLGBMRegressor:  # type: ignore[override]  # noqa: N803
        if kwargs.get("eval_y") is not None:
            kwargs["eval_y"] = tuple(_log(target) for target in kwargs["eval_y"])
        if kwargs.get("eval_set") is not None:
            kwargs["eval_set"] = [(x, _log(target)) for x, target in kwargs["eval_set"]]
        super().fit(X, _log(y), **kwargs)
        return self

    def predict(self, X: Any, **kwargs: Any) -> NDArray[np.float64]:  # type: ignore[override]  # noqa: N803
        return np.exp(np.asarray(super().predict(X, **kwargs), dtype=np.float64))


LOG_TARGET_ESTIMATORS = (LogTargetXGBRegressor, LogTargetLGBMRegressor)


def uses_log_target(model: Any) -> bool:
    return isinstance(model, LOG_TARGET_ESTIMATORS)


def with_log_target(model: Any) -> Any:
    """The log-target twin of an unfitted XGBRegressor or LGBMRegressor, same parameters.

    Raises
    ------
    TrainingError
        For any other estimator: only the tree regressors take a log target.
    """
    if isinstance(model, LOG_TARGET_ESTIMATORS):
        return model
    if isinstance(model, XGBRegressor):
        return LogTargetXGBRegressor(**model.get_params())
    if isinstance(model, LGBMRegressor):
        return LogTargetLGBMRegressor(**model.get_params())
    raise TrainingError(
        f"a log target is for XGBRegressor and LGBMRegressor, not {type(model).__name__}"
    )


def append_exp(data: bytes) -> bytes:
    """A regression graph whose ``variable`` is ``exp`` of what it was: the model's own output
    tensor is renamed and followed by one ``Exp`` node that takes the ``variable`` name, so the
    inputs and outputs serving sees are unchanged."""
    model = onnx.load_from_string(data)
    graph = model.graph
    outputs = [o.name for o in graph.output]
    if outputs != [PREDICTION_OUTPUT]:
        raise TrainingError(
            f"a log target's graph needs the one output '{PREDICTION_OUTPUT}' (it has {outputs})"
        )
    logged = f"{EXP_PREFIX}log_{PREDICTION_OUTPUT}"
    rename_tensor(graph, PREDICTION_OUTPUT, logged)
    graph.node.append(
        onnx.helper.make_node("Exp", [logged], [PREDICTION_OUTPUT], name=f"{EXP_PREFIX}exp")
    )
    onnx.checker.check_model(model)
    exported: bytes = model.SerializeToString()
    return exported
