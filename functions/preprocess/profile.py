"""The training split's feature profile: the baseline drift detection compares live inputs to.

Numeric features get decile bin edges (equal-mass bins make PSI well-behaved) with the share of
rows in each bin, plus summary statistics; categorical and boolean features get their most
frequent categories' shares with the rest folded into ``__other__``; dates get the numeric
profile of their days since 1970.

``ProfileState`` is the same profile kept in a form that adds and subtracts exactly (issue 20's
per-file ingestion, docs/proposals/issue-20-per-file-ingestion.md, part 4): counts, mean and M2,
signed log-bucket counts for numbers and full value counts for categories, so a version's profile
can be merged from its files' parts instead of re-read from every training row. Its ``summary``
has ``build_profile``'s shape; only the quantiles and the histogram's edges are approximate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from functions.shared.contract import FeatureKind
from functions.shared.features import DatasetSchema, FeatureSpec, onnx_feeds

if TYPE_CHECKING:
    import pandas as pd

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
            profile["features"][spec.name] = numeric_profile(_numbers(column(spec.name)))
        elif spec.kind is FeatureKind.DATETIME:
            # Days since 1970: the range and spread of the dates, for the dataset's report;
            # the drift job does not score dates (later data always has later dates).
            days = _epoch_days(spec, column(spec.name))
            profile["features"][spec.name] = numeric_profile(days) | {"kind": "datetime"}
        else:
            entry = categorical_profile(column(spec.name))
            profile["features"][spec.name] = entry | {"kind": spec.kind.value}
    target = column(schema.target)
    profile["target"] = (
        categorical_profile(target)
        if schema.task == "classification"
        else numeric_profile(_numbers(target))
    )
    return profile


def _numbers(column: pa.ChunkedArray) -> np.ndarray[Any, Any]:
    numbers: np.ndarray[Any, Any] = column.to_numpy().astype(np.float64)
    return numbers


def _epoch_days(spec: FeatureSpec, column: pa.ChunkedArray) -> np.ndarray[Any, Any]:
    """A date column as the model sees it: days since 1970 (missing or unreadable: NaN)."""
    parts = onnx_feeds([spec], {spec.name: column.to_pylist()})
    days: np.ndarray[Any, Any] = parts[f"{spec.name}__epoch_days"].ravel().astype(np.float64)
    return days


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
    counted = category_counts(values)
    total = len(values)
    return {
        "kind": "categorical",
        "count": total,
        "cardinality": len(counted),
        "shares": _top_shares(counted, total),
    }


def category_counts(values: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Rows per category as stored (a null is ``"None"``), counted by Arrow."""
    counted: dict[str, int] = {}
    for item in pc.value_counts(values).to_pylist():
        label = str(item["values"])
        counted[label] = counted.get(label, 0) + int(item["counts"])
    return counted


def _top_shares(counted: Mapping[str, int], total: int) -> dict[str, float]:
    """The ``TOP_CATEGORIES`` most frequent categories' shares (ties in order of the category),
    the rest of ``total`` as ``__other__``."""
    ranked = sorted(counted.items(), key=lambda pair: (-pair[1], pair[0]))
    top = ranked[:TOP_CATEGORIES]
    shares = {label: count / total for label, count in top}
    other = total - sum(count for _, count in top)
    if other:
        shares["__other__"] = other / total
    return shares


# --------------------------------------------------------------------------------------
# The mergeable state
# --------------------------------------------------------------------------------------

# Numbers are counted in signed log buckets: [γ^i, γ^(i+1)) for positive values, mirrored for
# negative ones, and a zero bucket [-ZERO_WIDTH, ZERO_WIDTH) (the first positive bucket starts at
# ZERO_WIDTH, not at a power of γ). Every bucket is closed below, negative ones too, as the drift
# job's bins are. 0.1 % wide: a quantile read off the buckets is within 0.1 % of the data's, and
# a column narrow against its size (a year, 1990-2020) still spans dozens of buckets (2 % held
# it in one or two, blinding its drift score; docs/decisions.md, "Per-file parts").
GAMMA = 1.001
ZERO_WIDTH = 1e-9
# Distinct categories a state counts per feature; past it only the most frequent are kept.
CATEGORY_CAP = 65_536
PROFILE_ROWS = 262_144  # rows of a split file profiled at a time: four of a part's row groups
APPROXIMATE = ("quantiles", "histogram.edges")
_FLOAT_MAX = float(np.finfo(np.float64).max)


def _powers(exponents: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """GAMMA ** exponents by repeated squaring: IEEE multiplications only, so every machine
    computes the same edges (a libm ``pow`` may differ in the last bit between platforms)."""
    result = np.ones(exponents.shape, dtype=np.float64)
    base = np.full(exponents.shape, GAMMA, dtype=np.float64)
    left = np.abs(exponents)
    with np.errstate(over="ignore"):  # the last squaring overflows; it is never used
        while left.any():
            odd = (left & 1).astype(bool)
            result[odd] *= base[odd]
            base *= base
            left >>= 1
    powers: np.ndarray[Any, Any] = np.where(exponents < 0, 1.0 / result, result)
    return powers


@cache
def _magnitudes() -> np.ndarray[Any, Any]:
    """The bucket edges of |x| in increasing order: ZERO_WIDTH, then every finite γ^i above it,
    then infinity (the upper edge of the last bucket)."""
    low = math.floor(math.log(ZERO_WIDTH) / math.log(GAMMA)) - 1
    high = math.ceil(math.log(_FLOAT_MAX) / math.log(GAMMA)) + 1
    powers = _powers(np.arange(low, high + 1, dtype=np.int64))
    kept = powers[(powers > ZERO_WIDTH) & np.isfinite(powers)]
    return np.concatenate([[ZERO_WIDTH], kept, [math.inf]])


def bucket_keys(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each finite value's bucket, keyed so that keys sort as the values do: 0 is the zero
    bucket, k > 0 the k-th above it, -k the k-th below it. Every bucket is ``[bucket_edge(k),
    bucket_edge(k + 1))``, closed below for negative values too, so the drift job's bins
    (``searchsorted(..., side="right")``) put a value on an edge where its bucket does."""
    values = np.asarray(values, dtype=np.float64)
    positive = values >= 0
    keys = np.empty(values.shape, dtype=np.int64)
    keys[positive] = _edges_up_to(values[positive], closed=True)
    keys[~positive] = -_edges_up_to(-values[~positive], closed=False)
    return keys


def _edges_up_to(size: np.ndarray[Any, Any], *, closed: bool) -> np.ndarray[Any, Any]:
    """``np.searchsorted(edges, size, side="right" if closed else "left")`` over the |x| edges
    (how many edges lie at or below each size, or strictly below), found from the logarithm and
    corrected against the edges themselves: exact, without a binary search over ~730 000 edges
    per value."""
    edges = _magnitudes()[:-1]
    first = _first_power()
    with np.errstate(divide="ignore"):
        guess = np.floor(np.log(size) / math.log(GAMMA)) - first + 2
    found = np.clip(np.nan_to_num(guess, nan=0.0, neginf=0.0), 0, edges.size).astype(np.int64)
    for _ in range(64):  # the logarithm is off by one edge at most, near an edge
        below = np.maximum(found - 1, 0)
        lower = edges[below]
        high = (found > 0) & ((lower > size) if closed else (lower >= size))
        at = np.minimum(found, edges.size - 1)
        upper = edges[at]
        low = (found < edges.size) & ((upper <= size) if closed else (upper < size))
        if not (high.any() or low.any()):
            settled: np.ndarray[Any, Any] = found
            return settled
        found = found - high + low
    exact: np.ndarray[Any, Any] = np.searchsorted(edges, size, side="right" if closed else "left")
    return exact


@cache
def _first_power() -> int:
    """The exponent of the first edge above the zero bucket's: ``edges[1] == GAMMA ** it``."""
    return round(math.log(_magnitudes()[1]) / math.log(GAMMA))


def bucket_edge(keys: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The lower edge of each bucket ``bucket_keys`` numbers (the upper edge of key k is the
    lower edge of k + 1): the one place edges are computed, so keys and edges agree."""
    magnitudes = _magnitudes()
    keys = np.asarray(keys, dtype=np.int64)
    positive = magnitudes[np.clip(keys - 1, 0, None)]
    negative = -magnitudes[np.clip(-keys, 0, None)]
    edges: np.ndarray[Any, Any] = np.where(keys > 0, positive, negative)
    return edges


_BUCKET_CHUNK = 1 << 18  # values bucketed at a time: the temporaries stay a few MB


def _bucket_counts(values: np.ndarray[Any, Any]) -> dict[int, int]:
    """Values per bucket, a chunk at a time (a split's column holds millions). Each chunk's
    distinct values are bucketed, not every value: a column repeats its values (ages, counts,
    prices in cents), and finding a bucket is a logarithm and a few corrections. The distinct
    values are counted by Arrow's hash table, not by a sort (half the time on the bench file's
    columns; -0.0 and 0.0 share the zero bucket whether or not they are told apart)."""
    counts: dict[int, int] = {}
    for start in range(0, values.size, _BUCKET_CHUNK):
        counted = pc.value_counts(pa.array(values[start : start + _BUCKET_CHUNK]))
        distinct = counted.field("values").to_numpy(zero_copy_only=False)
        found = counted.field("counts").to_numpy(zero_copy_only=False)
        keys, at = np.unique(bucket_keys(distinct), return_inverse=True)
        # float weights add counts exactly (far below 2**53)
        sums = np.bincount(at.ravel(), weights=found, minlength=keys.size).astype(np.int64)
        for key, count in zip(keys.tolist(), sums.tolist(), strict=True):
            counts[key] = counts.get(key, 0) + count
    return dict(sorted(counts.items()))


def _sorted_counts(buckets: Mapping[int, int]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    keys = np.array(sorted(buckets), dtype=np.int64)
    return keys, np.array([buckets[int(k)] for k in keys], dtype=np.int64)


def _added(a: Mapping[Any, int], b: Mapping[Any, int], sign: int = 1) -> dict[Any, int]:
    """``a + sign·b`` per key, empty keys dropped; a negative count means ``b`` was never
    part of ``a``."""
    total = dict(a)
    for key, count in b.items():
        total[key] = total.get(key, 0) + sign * count
    if any(count < 0 for count in total.values()):
        raise ValueError("cannot remove counts that were never merged in")
    return {key: count for key, count in total.items() if count}


def _decile_histogram(keys: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Inner edges at the bucket edges nearest each decile of the counts (deduplicated), and
    the exact share of values in each bin: every edge is a bucket edge, so no bucket straddles
    one."""
    n = int(counts.sum())
    below = np.cumsum(counts)[:-1]  # values under the lower edge of keys[1:]
    if below.size == 0:
        return {"edges": [], "shares": [1.0]}
    deciles = np.linspace(0, 1, 11)[1:-1] * n
    chosen = np.unique(np.abs(below[None, :] - deciles[:, None]).argmin(axis=1))
    bins = np.diff(np.concatenate([[0], below[chosen], [n]]))
    return {
        "edges": [float(e) for e in bucket_edge(keys[1:][chosen])],
        "shares": [float(c) / n for c in bins],
    }


def _bucket_quantiles(
    keys: np.ndarray[Any, Any], counts: np.ndarray[Any, Any], low: float, high: float
) -> dict[str, float]:
    """``QUANTILES`` as ``np.quantile`` computes them (linear between the order statistics
    around rank q·(n−1)), each order statistic read off its bucket with the bucket's values
    taken as evenly spread over it (clipped to [min, max]): within a bucket's width."""
    after = np.cumsum(counts)
    lower = np.maximum(bucket_edge(keys), low)
    upper = np.minimum(bucket_edge(keys + 1), high)
    n = int(after[-1])

    def order_statistic(rank: int) -> float:
        j = int(np.searchsorted(after, rank, side="right"))
        within = (rank - int(after[j] - counts[j]) + 0.5) / int(counts[j])
        return float(lower[j] + (upper[j] - lower[j]) * within)

    quantiles: dict[str, float] = {}
    for q in QUANTILES:
        rank = q * (n - 1)
        below = min(int(rank), n - 1)
        left, right = order_statistic(below), order_statistic(min(below + 1, n - 1))
        value = left + (right - left) * (rank - below)
        quantiles[str(q)] = min(max(value, low), high)
    quantiles[str(QUANTILES[0])], quantiles[str(QUANTILES[-1])] = low, high
    return quantiles


def _lowest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _highest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass(frozen=True)
class NumericState:
    """A numeric (or date, as days since 1970) feature's mergeable profile: ``n`` present
    values and ``missing`` ones, their mean and M2 (sum of squared deviations, for the
    variance), min, max, and the values counted per ``bucket_keys`` bucket."""

    kind: str = "numeric"
    n: int = 0
    missing: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float | None = None
    max: float | None = None
    buckets: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, values: np.ndarray[Any, Any], kind: str = "numeric") -> NumericState:
        """The state of one column (NaN = missing), mean and M2 as ``numeric_profile`` sums
        them, so one part's summary has exactly its mean and std. Infinities are refused:
        preprocessing drops them (``non_finite``) before a profile is built."""
        present = values[~np.isnan(values)]
        if not np.all(np.isfinite(present)):
            raise ValueError("a profile state takes finite values or NaN (missing) only")
        missing = int(values.size - present.size)
        if present.size == 0:
            return cls(kind=kind, missing=missing)
        mean = present.mean()
        squares = present - mean
        np.square(squares, out=squares)  # in place: one temporary the column's size, not two
        return cls(
            kind=kind,
            n=int(present.size),
            missing=missing,
            mean=float(mean),
            m2=float(np.sum(squares)),
            min=float(present.min()),
            max=float(present.max()),
            buckets=_bucket_counts(present),
        )

    def merge(self, other: NumericState) -> NumericState:
        """Both parts' values together: counts add, mean and M2 by Chan's parallel formula."""
        n = self.n + other.n
        if other.n == 0 or self.n == 0:
            chosen = self if other.n == 0 else other
            return replace(chosen, missing=self.missing + other.missing)
        delta = other.mean - self.mean
        return NumericState(
            kind=self.kind,
            n=n,
            missing=self.missing + other.missing,
            mean=self.mean + delta * (other.n / n),
            m2=self.m2 + other.m2 + delta * delta * (self.n * other.n / n),
            min=_lowest(self.min, other.min),
            max=_highest(self.max, other.max),
            buckets=_added(self.buckets, other.buckets),
        )

    def remove(self, other: NumericState) -> NumericState:
        """This state without a part merged into it: counts subtract, mean and M2 by Chan's
        formula solved for the rest. Min and max cannot be subtracted (the part may have held
        the extreme): they are kept as bounds, and the caller sets them from the remaining
        parts' own min and max (``ProfileState.with_extremes_of``)."""
        n = self.n - other.n
        missing = self.missing - other.missing
        buckets = _added(self.buckets, other.buckets, -1)
        if n < 0 or missing < 0:
            raise ValueError("cannot remove a part larger than the state")
        if n == 0:
            return NumericState(kind=self.kind, missing=missing)
        mean = self.mean + (self.mean - other.mean) * (other.n / n)
        delta = other.mean - mean
        m2 = self.m2 - other.m2 - delta * delta * (n * other.n / self.n)
        return replace(self, n=n, missing=missing, mean=mean, m2=max(0.0, m2), buckets=buckets)

    def summary(self) -> dict[str, Any]:
        """``numeric_profile``'s entry: count, missing, min, max, mean and std exact; the
        histogram's shares exact for its edges, which lie at bucket edges near the deciles."""
        entry: dict[str, Any] = {
            "kind": self.kind,
            "count": self.n + self.missing,
            "missing": self.missing,
        }
        if self.n == 0 or self.min is None or self.max is None:
            return entry
        keys, counts = _sorted_counts(self.buckets)
        return entry | {
            "mean": self.mean,
            "std": math.sqrt(self.m2 / self.n),
            "min": self.min,
            "max": self.max,
            "quantiles": _bucket_quantiles(keys, counts, self.min, self.max),
            "histogram": _decile_histogram(keys, counts),
        }

    def to_dict(self) -> dict[str, Any]:
        keys, counts = _sorted_counts(self.buckets)
        return {
            "kind": self.kind,
            "n": self.n,
            "missing": self.missing,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min,
            "max": self.max,
            "buckets": [keys.tolist(), counts.tolist()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericState:
        keys, counts = data["buckets"]
        return cls(
            kind=str(data["kind"]),
            n=int(data["n"]),
            missing=int(data["missing"]),
            mean=float(data["mean"]),
            m2=float(data["m2"]),
            min=None if data["min"] is None else float(data["min"]),
            max=None if data["max"] is None else float(data["max"]),
            buckets={int(k): int(c) for k, c in zip(keys, counts, strict=True)},
        )


@dataclass(frozen=True)
class CategoricalState:
    """A categorical or boolean feature's (or a classification target's) mergeable profile:
    rows per category as stored. Past ``CATEGORY_CAP`` categories only the most frequent are
    kept, the rest's rows counted in ``dropped`` and the state marked ``truncated`` (then
    cardinality is a lower bound and a merge or removal is no longer exact)."""

    kind: str = "categorical"
    counts: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    truncated: bool = False

    @classmethod
    def of(cls, values: pa.Array | pa.ChunkedArray, kind: str = "categorical") -> CategoricalState:
        return cls(kind=kind)._capped(category_counts(values), 0)

    @property
    def count(self) -> int:
        return sum(self.counts.values()) + self.dropped

    def _capped(self, counts: dict[str, int], dropped: int) -> CategoricalState:
        if len(counts) <= CATEGORY_CAP:
            return replace(self, counts=counts, dropped=dropped)
        ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
        rest = sum(count for _, count in ranked[CATEGORY_CAP:])
        return replace(
            self, counts=dict(ranked[:CATEGORY_CAP]), dropped=dropped + rest, truncated=True
        )

    def merge(self, other: CategoricalState) -> CategoricalState:
        merged = replace(self, truncated=self.truncated or other.truncated)
        return merged._capped(_added(self.counts, other.counts), self.dropped + other.dropped)

    def remove(self, other: CategoricalState) -> CategoricalState:
        """Exact unless truncated: then a category this state dropped is taken out of
        ``dropped`` instead."""
        dropped = self.dropped - other.dropped
        if not self.truncated:
            if dropped < 0:
                raise ValueError("cannot remove counts that were never merged in")
            return replace(self, counts=_added(self.counts, other.counts, -1), dropped=dropped)
        counts = dict(self.counts)
        for label, count in other.counts.items():
            kept = counts.get(label, 0)
            counts[label] = max(0, kept - count)
            dropped -= max(0, count - kept)
        live = {label: count for label, count in counts.items() if count}
        return replace(self, counts=live, dropped=max(0, dropped))

    def summary(self) -> dict[str, Any]:
        """``categorical_profile``'s entry, exact unless truncated (then marked so)."""
        total = self.count
        entry: dict[str, Any] = {
            "kind": self.kind,
            "count": total,
            "cardinality": len(self.counts),
            "shares": _top_shares(self.counts, total),
        }
        return entry | {"truncated": True} if self.truncated else entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "counts": dict(sorted(self.counts.items())),
            "dropped": self.dropped,
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalState:
        return cls(
            kind=str(data["kind"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            dropped=int(data["dropped"]),
            truncated=bool(data["truncated"]),
        )


FeatureState = NumericState | CategoricalState
_NUMERIC_KINDS = ("numeric", "datetime")


def _combined(a: FeatureState, b: FeatureState, *, remove: bool) -> FeatureState:
    if a.kind != b.kind:
        raise ValueError(f"cannot combine a {a.kind} state with a {b.kind} one")
    if isinstance(a, NumericState) and isinstance(b, NumericState):
        return a.remove(b) if remove else a.merge(b)
    if isinstance(a, CategoricalState) and isinstance(b, CategoricalState):
        return a.remove(b) if remove else a.merge(b)
    raise ValueError(f"cannot combine {type(a).__name__} with {type(b).__name__}")


def _feature_from_dict(data: Mapping[str, Any]) -> FeatureState:
    if data["kind"] in _NUMERIC_KINDS:
        return NumericState.from_dict(data)
    return CategoricalState.from_dict(data)


def _feature_state(spec: FeatureSpec, column: pa.ChunkedArray) -> FeatureState:
    """One feature's state from its column, read as ``build_profile`` reads it."""
    if spec.kind is FeatureKind.NUMERIC:
        return NumericState.of(_numbers(column))
    if spec.kind is FeatureKind.DATETIME:
        return NumericState.of(_epoch_days(spec, column), "datetime")
    return CategoricalState.of(column, spec.kind.value)


def _with_extremes(state: FeatureState, parts: Iterable[FeatureState]) -> FeatureState:
    if not isinstance(state, NumericState):
        return state
    numeric = [p for p in parts if isinstance(p, NumericState) and p.n]
    if state.n == 0 or not numeric:
        return replace(state, min=None, max=None)
    low = min(p.min for p in numeric if p.min is not None)
    high = max(p.max for p in numeric if p.max is not None)
    return replace(state, min=low, max=high)


@dataclass(frozen=True)
class ProfileState:
    """A training split's profile in parts that add up: one state per part (a file's rows),
    ``merge``d into the version's state, whose ``summary`` is profile.json. Features in schema
    order, and the target."""

    rows: int
    features: dict[str, FeatureState]
    target: FeatureState

    @classmethod
    def from_columns(
        cls, rows: int, column: Callable[[str], pa.ChunkedArray], schema: DatasetSchema
    ) -> ProfileState:
        """From the columns ``build_profile`` reads, one at a time."""
        features = {spec.name: _feature_state(spec, column(spec.name)) for spec in schema.features}
        target_column = column(schema.target)
        target: FeatureState = (
            CategoricalState.of(target_column)
            if schema.task == "classification"
            else NumericState.of(_numbers(target_column))
        )
        return cls(rows=rows, features=features, target=target)

    @classmethod
    def from_parquet(cls, train_file: Path, schema: DatasetSchema) -> ProfileState:
        """A split file's state, ``PROFILE_ROWS`` rows at a time, merged (memory bounded by
        the chunk, not the file; one chunk, as most files are, is one pass as before)."""
        table = pq.ParquetFile(train_file)
        columns = list(dict.fromkeys([*(f.name for f in schema.features), schema.target]))
        state: ProfileState | None = None
        for batch in table.iter_batches(batch_size=PROFILE_ROWS, columns=columns):
            chunk = cls.from_table(pa.Table.from_batches([batch]), schema)
            state = chunk if state is None else state.merge(chunk)
        if state is not None:
            return state

        def column(name: str) -> pa.ChunkedArray:
            return table.read(columns=[name]).column(0)

        return cls.from_columns(table.metadata.num_rows, column, schema)

    @classmethod
    def from_table(cls, table: pa.Table, schema: DatasetSchema) -> ProfileState:
        return cls.from_columns(table.num_rows, table.column, schema)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, schema: DatasetSchema) -> ProfileState:
        """From a frame holding columns as a split stores them (numbers, text)."""
        return cls.from_table(pa.Table.from_pandas(frame, preserve_index=False), schema)

    def _combined(self, other: ProfileState, *, remove: bool) -> ProfileState:
        if list(self.features) != list(other.features):
            raise ValueError("profile states of different features cannot be combined")
        rows = self.rows - other.rows if remove else self.rows + other.rows
        if rows < 0:
            raise ValueError("cannot remove a part larger than the state")
        features = {
            name: _combined(state, other.features[name], remove=remove)
            for name, state in self.features.items()
        }
        target = _combined(self.target, other.target, remove=remove)
        return ProfileState(rows=rows, features=features, target=target)

    def merge(self, other: ProfileState) -> ProfileState:
        """Both parts' rows together (the same schema's features)."""
        return self._combined(other, remove=False)

    def remove(self, other: ProfileState) -> ProfileState:
        """This state without a part merged into it. Numeric min and max stay as they were
        (bounds): set them from the remaining parts with ``with_extremes_of``."""
        return self._combined(other, remove=True)

    def with_extremes_of(self, parts: Iterable[ProfileState]) -> ProfileState:
        """This state with every numeric min and max taken from ``parts``, the parts it is
        made of (after a ``remove``, the ones that remain)."""
        kept = list(parts)
        features = {
            name: _with_extremes(state, [p.features[name] for p in kept])
            for name, state in self.features.items()
        }
        target = _with_extremes(self.target, [p.target for p in kept])
        return replace(self, features=features, target=target)

    def summary(self) -> dict[str, Any]:
        """``build_profile``'s output, plus which of its fields are approximate."""
        return {
            "rows": self.rows,
            "features": {name: state.summary() for name, state in self.features.items()},
            "target": self.target.summary(),
            "approximate": list(APPROXIMATE),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``bucketing`` names the buckets' γ and zero width, which a stored
        state's bucket keys mean only with."""
        return {
            "bucketing": [GAMMA, ZERO_WIDTH],
            "rows": self.rows,
            "features": {name: state.to_dict() for name, state in self.features.items()},
            "target": self.target.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileState:
        if data.get("bucketing") != [GAMMA, ZERO_WIDTH]:
            raise ValueError(
                f"a state bucketed as {data.get('bucketing')}, not {[GAMMA, ZERO_WIDTH]}"
            )
        return cls(
            rows=int(data["rows"]),
            features={str(k): _feature_from_dict(v) for k, v in data["features"].items()},
            target=_feature_from_dict(data["target"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ProfileState:
        return cls.from_dict(json.loads(text))
