"""Categories for the boosted trees: one float column per categorical feature, its categories
numbered in the order of their (smoothed) mean target.

One-hot columns make a tree isolate one category per split; a depth-5 tree over 40 one-hot
encoded categorical features of a house-price table spends its splits on single categories.
Native categorical splits (LightGBM's, HistGradientBoosting's) group categories instead, by
sorting them on their gradient statistics, and skl2onnx does not convert them correctly
(candidates.py). Numbering the categories by their mean target once, before the trees, gives a
tree the same groupings as threshold splits: "every neighbourhood cheaper than X" is one split.
On modeldata/ames (issue 17) it took XGBoost's held-out rmse from 30 839 (one-hot) to 25 521 on
the same rows, where a native-categorical HistGradientBoosting fitted on more rows scores 24 005.

- Regression orders by the mean target, a binary classifier by the positive rate. A
  multiclass target has no single order: those trees keep one-hot (``orders_categories``).
- The mean is smoothed toward the overall mean with ``SMOOTHING`` (5) pseudo-rows, so a
  category seen twice does not jump to an end of the order on its two rows' luck. Ties are
  broken by the category's string, so the same rows give the same numbering.
- Only the order is learnt from the target, never the mean itself: the trees see ranks, which
  keeps the leak of fitting the encoding on the training rows small.
- A category not seen in training, at validation or serving, is NaN: a missing value, which the
  trees send down each split's learnt default branch.

``TargetOrderedEncoder`` is an ``OrdinalEncoder`` whose ``fit`` chooses ``categories`` first;
export.py converts it with skl2onnx's ordinal-encoder converter (a LabelEncoder per column).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.preprocessing import OrdinalEncoder

from functions.shared.features import DatasetSchema

SMOOTHING = 5.0  # pseudo-rows at the overall mean, per category


def orders_categories(schema: DatasetSchema) -> bool:
    """Whether the tree families number this dataset's categories by target (regression and
    binary classification) rather than one-hot encoding them (multiclass)."""
    return schema.task == "regression" or len(schema.classes or []) == 2


class TargetOrderedEncoder(OrdinalEncoder):  # type: ignore[misc]  # sklearn is untyped
    """An ``OrdinalEncoder`` whose categories are numbered by their smoothed mean target."""

    def __init__(self, smoothing: float = SMOOTHING) -> None:
        super().__init__(handle_unknown="use_encoded_value", unknown_value=np.nan, dtype=np.float32)
        self.smoothing = smoothing

    def fit(self, X: Any, y: Any = None) -> TargetOrderedEncoder:  # noqa: N803 (sklearn's name)
        if y is None:
            raise ValueError("TargetOrderedEncoder orders categories by the target: fit needs y")
        frame = pd.DataFrame(X)
        target = np.asarray(y, dtype=np.float64)
        self.categories = [
            target_order(frame.iloc[:, i], target, self.smoothing) for i in range(frame.shape[1])
        ]
        super().fit(frame)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> NDArray[Any]:  # noqa: N803
        return np.asarray(self.fit(X, y).transform(X))


def target_order(column: pd.Series, target: NDArray[np.float64], smoothing: float) -> NDArray[Any]:
    """The column's categories (as strings) sorted by their smoothed mean target, then by name."""
    values = column.astype(str).to_numpy()
    prior = float(target.mean()) if target.size else 0.0
    grouped = (
        pd.DataFrame({"category": values, "y": target})
        .groupby("category")["y"]
        .agg(["sum", "count"])
    )
    smoothed = (grouped["sum"] + prior * smoothing) / (grouped["count"] + smoothing)
    ordered = sorted(zip(smoothed.to_numpy().tolist(), grouped.index.tolist(), strict=True))
    return np.array([category for _, category in ordered], dtype=object)
