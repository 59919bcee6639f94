"""The training split's feature profile: the baseline drift detection compares live inputs to.

Numeric features get decile bin edges (equal-mass bins make PSI well-behaved) with the share of
rows in each bin, plus summary statistics; categorical and boolean features get their most
frequent categories' shares with the rest folded into ``__other__``; dates get the numeric
profile of their days since 1970.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from functions.shared.contract import FeatureKind
from functions.shared.features import DatasetSchema, onnx_feeds

TOP_CATEGORIES = 50
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def build_profile(train_file: Path, schema: DatasetSchema) -> dict[str, Any]:
    """One column at a time; categories are counted by Arrow over the column as stored, so
    no column of Python strings is ever built (a 300 MB upload's split holds millions)."""
    table = pq.ParquetFile(train_file)
    profile: dict[str, Any] = {"rows": table.metadata.num_rows, "features": {}}

    def column(name: str) -> pa.ChunkedArray:
        return table.read(columns=[name]).column(0)

    for spec in schema.features:
        if spec.kind is FeatureKind.NUMERIC:
            numbers = column(spec.name).to_numpy().astype(np.float64)
            profile["features"][spec.name] = numeric_profile(numbers)
        elif spec.kind is FeatureKind.DATETIME:
            # Days since 1970: the range and spread of the dates, for the dataset's report;
            # the drift job does not score dates (later data always has later dates).
            parts = onnx_feeds([spec], {spec.name: column(spec.name).to_pylist()})
            days = parts[f"{spec.name}__epoch_days"].ravel().astype(np.float64)
            profile["features"][spec.name] = numeric_profile(days) | {"kind": "datetime"}
        else:
            entry = categorical_profile(column(spec.name))
            profile["features"][spec.name] = entry | {"kind": spec.kind.value}
    target = column(schema.target)
    profile["target"] = (
        categorical_profile(target)
        if schema.task == "classification"
        else numeric_profile(target.to_numpy().astype(np.float64))
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


def categorical_profile(values: Any) -> dict[str, Any]:
    """The most frequent categories' shares, the rest as ``__other__``; ties in order of the
    category. ``values``: an Arrow array, or anything ``pyarrow.array`` takes (a missing value
    counts as the category ``"None"``)."""
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(np.asarray(values, dtype=object), from_pandas=True)
    counted: dict[str, int] = {}
    for item in pc.value_counts(values).to_pylist():
        label = str(item["values"])
        counted[label] = counted.get(label, 0) + int(item["counts"])
    ranked = sorted(counted.items(), key=lambda pair: (-pair[1], pair[0]))
    total = len(values)
    top = ranked[:TOP_CATEGORIES]
    shares = {label: count / total for label, count in top}
    other = total - sum(count for _, count in top)
    if other:
        shares["__other__"] = other / total
    return {
        "kind": "categorical",
        "count": total,
        "cardinality": len(counted),
        "shares": shares,
    }
