"""The training split's feature profile: the baseline drift detection compares live inputs to.

Numeric features get decile bin edges (equal-mass bins make PSI well-behaved) with the share of
rows in each bin, plus summary statistics; categorical features get their most frequent
categories' shares with the rest folded into ``__other__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from functions.shared.contract import FeatureKind
from functions.shared.features import DatasetSchema

TOP_CATEGORIES = 50
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def build_profile(train_file: Path, schema: DatasetSchema) -> dict[str, Any]:
    table = pq.ParquetFile(train_file)
    profile: dict[str, Any] = {"rows": table.metadata.num_rows, "features": {}}
    for spec in schema.features:
        column = table.read(columns=[spec.name]).column(0).to_numpy(zero_copy_only=False)
        if spec.kind is FeatureKind.NUMERIC:
            profile["features"][spec.name] = numeric_profile(column.astype(np.float64))
        else:
            profile["features"][spec.name] = categorical_profile(column)
    target = table.read(columns=[schema.target]).column(0).to_numpy(zero_copy_only=False)
    profile["target"] = (
        categorical_profile(target)
        if schema.task == "classification"
        else numeric_profile(target.astype(np.float64))
    )
    return profile


def numeric_profile(values: np.ndarray[Any, Any]) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    summary: dict[str, Any] = {
        "kind": "numeric",
        "count": int(values.size),
        "missing": int(values.size - present.size),
    }
    if present.size == 0:
        return summary
    quantiles = np.quantile(present, QUANTILES)
    edges = np.unique(np.quantile(present, np.linspace(0, 1, 11)))
    # Open outer bins so live values outside the training range still land somewhere.
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
    summary |= {
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "histogram": {
            "edges": [float(e) for e in inner],
            "shares": [float(c) / present.size for c in counts],
        },
    }
    return summary


def categorical_profile(values: np.ndarray[Any, Any]) -> dict[str, Any]:
    labels, counts = np.unique(values.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    top = order[:TOP_CATEGORIES]
    total = int(values.size)
    shares = {str(labels[i]): float(counts[i]) / total for i in top}
    other = total - int(counts[top].sum())
    if other:
        shares["__other__"] = other / total
    return {
        "kind": "categorical",
        "count": total,
        "cardinality": int(labels.size),
        "shares": shares,
    }
