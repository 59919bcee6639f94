"""Drift statistics: live feature values against the training profile (numpy and pydantic only).

The baseline is what ``functions/preprocess/profile.py`` wrote for the training split: numeric
features have decile bins (inner edges, open outer bins) with the share of present values in each
bin plus ``count`` and ``missing``; categorical features have the shares of their most frequent
(normalised) categories, the rest folded into ``__other__``.

* **PSI** (population stability index) compares bin shares: ``Σ (a − e)·ln(a / e)`` over the
  training bins, every share floored at ``EPSILON`` so an empty bin on either side gives a large
  but finite term. Each term is ≥ 0, so PSI is too. Numeric features get one more bin, missing
  (NaN): its expected share is the profile's ``missing / count``, the present bins share the rest,
  so a change in how often a value is missing is drift like any other. Categorical values are
  normalised as training normalised them (``normalise_category``): ``None``/NaN/null tokens are
  the category ``__missing__``, which is its own bin whether or not the profile lists it;
  categories the profile does not list fall into ``__other__``.
* **KS** (numeric only, on present values) is the two-sample Kolmogorov–Smirnov statistic
  evaluated at the profile's bin edges only: the profile keeps no raw training sample. The
  supremum over (at most 9) edges is a lower bound of the true one, so this binned KS is
  conservative (smaller statistic, larger p-value). The p-value is the asymptotic Kolmogorov
  distribution at ``√n_eff · D`` with ``n_eff = n_train·n_live / (n_train + n_live)``.
* **Levels** by PSI, the industry convention: < 0.1 none, < 0.25 moderate, otherwise major.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from functions.shared.contract import FeatureKind
from functions.shared.features import MISSING_CATEGORY, FeatureSpec, normalise_category

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
# Floor of every share in the PSI sum: an empty bin costs (e − 1e-4)·ln(e / 1e-4), not infinity.
EPSILON = 1e-4
# Below this many live rows a feature is reported as "insufficient_data", not scored: with 100
# rows over 10 bins the sampling noise of PSI alone averages ≈ 0.09 (95th percentile ≈ 0.17).
MIN_LIVE_ROWS = 100
OTHER_CATEGORY = "__other__"
# The most frequent live categories the profile does not list, named in the report.
MAX_UNLISTED_CATEGORIES = 10
MISSING_BIN = "missing"

DriftLevel = Literal["none", "moderate", "major"]
FeatureStatus = Literal[
    "scored", "insufficient_data", "missing_column", "no_baseline", "not_scored"
]
_LEVEL_RANK: dict[str, int] = {"none": 0, "moderate": 1, "major": 2}
# A live column: a numpy array, or a list straight from JSON instances (None = missing).
Values = NDArray[Any] | Sequence[Any]


class BinShare(BaseModel):
    """One bin of a feature: its label and the share of rows in it, training vs live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    expected: float
    actual: float


class FeatureDrift(BaseModel):
    """One feature's drift. Only ``status == "scored"`` features have ``psi`` and ``level``;
    ``ks``/``ks_pvalue`` are numeric-only (and ``None`` with too few present live values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str
    kind: FeatureKind
    status: FeatureStatus = "scored"
    psi: float | None = None
    ks: float | None = None
    ks_pvalue: float | None = None
    level: DriftLevel | None = None
    live_count: int = 0
    live_missing: int = 0
    bins: list[BinShare] = Field(default_factory=list)
    # Categorical only: the live share of the most frequent categories the profile does not list
    # (new ones, or rare in training), all counted in __other__.
    unlisted_categories: dict[str, float] = Field(default_factory=dict)
    note: str | None = None


class DriftResult(BaseModel):
    """A dataset's drift: every schema feature, scored or with the reason it was not, and the
    overall figures over the scored ones (``None`` when none was scored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    dataset_version: str | None = None
    live_rows: int
    features: list[FeatureDrift]
    scored: int
    max_psi: float | None
    mean_psi: float | None
    drifted: int
    drifted_share: float | None
    level: DriftLevel | None

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """The CloudWatch metrics to publish: ``(name, dimensions, value)``.

        ``FeaturePSI`` and ``FeatureKS`` per feature ({dataset, feature}) where measured,
        ``DatasetDriftPSI`` (the largest feature PSI) and ``DriftedFeatures`` (features at
        moderate or above) per dataset. Nothing is published for what was not measured: a
        dataset with no scored feature publishes no zeros that would read as "no drift".
        """
        out: list[tuple[str, dict[str, str], float]] = []
        for f in self.features:
            dims = {"dataset": self.dataset, "feature": f.feature}
            if f.psi is not None:
                out.append(("FeaturePSI", dims, f.psi))
            if f.ks is not None:
                out.append(("FeatureKS", dict(dims), f.ks))
        if self.max_psi is not None:
            out.append(("DatasetDriftPSI", {"dataset": self.dataset}, self.max_psi))
            out.append(("DriftedFeatures", {"dataset": self.dataset}, float(self.drifted)))
        return out


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def psi(expected: ArrayLike, actual: ArrayLike) -> float:
    """PSI of two share vectors over the same bins, each share floored at ``EPSILON``."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.ndim != 1 or e.shape != a.shape or e.size == 0:
        raise ValueError(f"share vectors must be 1-d and alike, got {e.shape} and {a.shape}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(a)) and e.min() >= 0 and a.min() >= 0):
        raise ValueError("shares must be finite and non-negative")
    e = np.maximum(e, EPSILON)
    a = np.maximum(a, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_level(value: float) -> DriftLevel:
    if value >= PSI_MAJOR:
        return "major"
    if value >= PSI_MODERATE:
        return "moderate"
    return "none"


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit of √n·D).

    Two series of the same function, each where it converges in a few terms:
    ``1 − √(2π)/x · Σ exp(−(2k−1)²π²/(8x²))`` below 1.18, ``2 Σ (−1)^(k−1) exp(−2k²x²)`` above.
    """
    if x <= 0:
        return 1.0
    if x < 1.18:
        ks = np.arange(1, 12)
        terms = np.exp(-((2 * ks - 1) ** 2) * math.pi**2 / (8 * x * x))
        p = 1.0 - math.sqrt(2 * math.pi) / x * float(terms.sum())
    else:
        ks = np.arange(1, 101)
        signs = np.where(ks % 2 == 1, 1.0, -1.0)
        p = 2.0 * float(np.sum(signs * np.exp(-2.0 * ks**2 * x * x)))
    return min(1.0, max(0.0, p))


# --------------------------------------------------------------------------------------
# Numeric features
# --------------------------------------------------------------------------------------


def _numeric_baseline(
    profile: Mapping[str, Any],
) -> tuple[NDArray[np.float64], NDArray[np.float64], int, int]:
    """The profile's inner edges, present-value shares, row count and missing count."""
    count = int(profile["count"])
    missing = int(profile.get("missing", 0))
    if count <= 0 or not 0 <= missing <= count:
        raise ValueError(f"a numeric profile needs count > 0 and 0 <= missing <= count: {profile}")
    histogram = profile.get("histogram")
    if histogram is None:  # no present value in training: one open bin, expected share 0
        edges = np.empty(0, dtype=np.float64)
        shares = np.ones(1, dtype=np.float64)
    else:
        edges = np.asarray(histogram["edges"], dtype=np.float64)
        shares = np.asarray(histogram["shares"], dtype=np.float64)
    if edges.ndim != 1 or shares.shape != (edges.size + 1,):
        raise ValueError(f"{edges.size} inner edges need {edges.size + 1} shares, got {shares}")
    if edges.size > 1 and not np.all(np.diff(edges) > 0):
        raise ValueError("histogram edges must increase strictly")
    return edges, shares, count, missing


def _as_float(values: Values) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64).ravel()  # None becomes NaN


def _format_edges(edges: NDArray[np.float64]) -> list[str]:
    """Shortest spelling (4, 6, 8 or 17 significant digits) that keeps the edges distinct."""
    texts: list[str] = []
    for digits in (4, 6, 8, 17):
        texts = [f"{e:.{digits}g}" for e in edges]
        if len(set(texts)) == len(texts):
            break
    return texts


def numeric_bin_labels(edges: Sequence[float] | NDArray[np.float64]) -> list[str]:
    """Labels of the bins ``np.searchsorted(edges, x, side="right")`` puts values in:
    ``(-inf, e0)``, ``[e0, e1)``, …, ``[e_last, inf)`` (a value equal to an edge goes right)."""
    texts = _format_edges(np.asarray(edges, dtype=np.float64))
    if not texts:
        return ["(-inf, inf)"]
    bounds = ["-inf", *texts, "inf"]
    return [
        f"{'(' if i == 0 else '['}{bounds[i]}, {bounds[i + 1]})" for i in range(len(bounds) - 1)
    ]


def _binned_ks(
    shares: NDArray[np.float64], n_train: int, counts: NDArray[np.int64]
) -> tuple[float, float] | None:
    n_live = int(counts.sum())
    if n_train == 0 or n_live == 0:
        return None
    # The CDFs at each inner edge e_j: the share of values below it (bins 0..j), for both sides.
    train_cdf = np.cumsum(shares)[:-1] / shares.sum()
    live_cdf = np.cumsum(counts)[:-1] / n_live
    statistic = float(np.max(np.abs(train_cdf - live_cdf))) if train_cdf.size else 0.0
    n_eff = n_train * n_live / (n_train + n_live)
    return statistic, kolmogorov_sf(math.sqrt(n_eff) * statistic)


def _numeric_counts(edges: NDArray[np.float64], present: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)


def ks_numeric(profile: Mapping[str, Any], values: Values) -> tuple[float, float] | None:
    """Binned two-sample KS statistic and its approximate p-value, on present values only;
    ``None`` when training or live has no present value."""
    edges, shares, count, missing = _numeric_baseline(profile)
    live = _as_float(values)
    present = live[~np.isnan(live)]
    return _binned_ks(shares, count - missing, _numeric_counts(edges, present))


def psi_numeric(profile: Mapping[str, Any], values: Values, *, feature: str = "") -> FeatureDrift:
    """Score a numeric feature: PSI over the profile's bins plus a missing bin, and the binned
    KS (which shares the bins, so it comes along)."""
    edges, shares, count, missing = _numeric_baseline(profile)
    live = _as_float(values)
    if live.size == 0:
        raise ValueError(f"no live values for numeric feature '{feature}'")
    nan = np.isnan(live)
    live_missing = int(nan.sum())
    counts = _numeric_counts(edges, live[~nan])
    expected_missing = missing / count
    expected = [*(shares / shares.sum() * (1.0 - expected_missing)), expected_missing]
    actual = [*(counts / live.size), live_missing / live.size]
    labels = [*numeric_bin_labels(edges), MISSING_BIN]
    extra = {MISSING_BIN}
    bins = [
        BinShare(label=label, expected=float(e), actual=float(a))
        for label, e, a in zip(labels, expected, actual, strict=True)
        if label not in extra or e > 0 or a > 0
    ]
    value = psi([b.expected for b in bins], [b.actual for b in bins])
    ks = _binned_ks(shares, count - missing, counts)
    return FeatureDrift(
        feature=feature,
        kind=FeatureKind.NUMERIC,
        psi=value,
        ks=None if ks is None else ks[0],
        ks_pvalue=None if ks is None else ks[1],
        level=psi_level(value),
        live_count=int(live.size),
        live_missing=live_missing,
        bins=bins,
    )


# --------------------------------------------------------------------------------------
# Categorical features
# --------------------------------------------------------------------------------------


def category_counts(values: Values) -> Counter[str]:
    """Live values counted by their normalised category, as training normalised them
    (``None``, NaN and null tokens are ``__missing__``; ``1``, ``1.0`` and ``"1"`` are one)."""
    items = np.asarray(values, dtype=object).ravel().tolist()
    # Keyed by type too: True == 1 == 1.0 as dict keys, but they are different categories.
    raw = Counter((type(v), v) for v in items)
    counts: Counter[str] = Counter()
    for (_, value), n in raw.items():
        counts[normalise_category(value)] += n
    return counts


def psi_categorical(
    profile: Mapping[str, Any], values: Values, *, feature: str = ""
) -> FeatureDrift:
    """Score a categorical feature: PSI over the profile's categories, ``__other__`` (every
    category the profile does not list) and ``__missing__``."""
    shares: dict[str, float] = {str(k): float(v) for k, v in profile["shares"].items()}
    counts = category_counts(values)
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"no live values for categorical feature '{feature}'")
    listed = [c for c in shares if c != OTHER_CATEGORY]
    labels = [*listed, OTHER_CATEGORY]
    if MISSING_CATEGORY not in shares:
        labels.append(MISSING_CATEGORY)
    own_bins = set(labels) - {OTHER_CATEGORY}
    actual_counts = {c: counts.get(c, 0) for c in own_bins}
    actual_counts[OTHER_CATEGORY] = total - sum(actual_counts.values())
    extra = {OTHER_CATEGORY, MISSING_CATEGORY} - set(listed)
    bins = [
        BinShare(label=c, expected=shares.get(c, 0.0), actual=actual_counts[c] / total)
        for c in labels
        if c not in extra or shares.get(c, 0.0) > 0 or actual_counts[c] > 0
    ]
    value = psi([b.expected for b in bins], [b.actual for b in bins])
    unseen = sorted(
        ((n, c) for c, n in counts.items() if c not in own_bins), key=lambda nc: (-nc[0], nc[1])
    )
    return FeatureDrift(
        feature=feature,
        kind=FeatureKind.CATEGORICAL,
        unlisted_categories={c: n / total for n, c in unseen[:MAX_UNLISTED_CATEGORIES]},
        psi=value,
        level=psi_level(value),
        live_count=total,
        live_missing=counts.get(MISSING_CATEGORY, 0),
        bins=bins,
    )


# --------------------------------------------------------------------------------------
# A dataset
# --------------------------------------------------------------------------------------


def _missing_count(spec: FeatureSpec, column: Values) -> tuple[int, int]:
    if spec.kind is FeatureKind.NUMERIC:
        live = _as_float(column)
        return int(live.size), int(np.isnan(live).sum())
    counts = category_counts(column)
    return sum(counts.values()), counts.get(MISSING_CATEGORY, 0)


def _score(
    spec: FeatureSpec, baseline: Mapping[str, Any] | None, column: Values | None
) -> FeatureDrift:
    if column is None:
        return FeatureDrift(
            feature=spec.name,
            kind=spec.kind,
            status="missing_column",
            note="no live values were captured for this feature",
        )
    rows, missing = _missing_count(spec, column)
    if spec.kind is FeatureKind.DATETIME:
        return FeatureDrift(
            feature=spec.name,
            kind=spec.kind,
            status="not_scored",
            live_count=rows,
            live_missing=missing,
            note="dates are not scored: later data always has later dates",
        )
    if baseline is None or baseline.get("kind") != spec.kind.value:
        found = "no entry" if baseline is None else f"a {baseline.get('kind')} entry"
        return FeatureDrift(
            feature=spec.name,
            kind=spec.kind,
            status="no_baseline",
            live_count=rows,
            live_missing=missing,
            note=f"the training profile has {found} for this {spec.kind.value} feature",
        )
    if rows < MIN_LIVE_ROWS:
        return FeatureDrift(
            feature=spec.name,
            kind=spec.kind,
            status="insufficient_data",
            live_count=rows,
            live_missing=missing,
            note=f"{rows} live rows; at least {MIN_LIVE_ROWS} are needed to score drift",
        )
    if spec.kind is FeatureKind.CATEGORICAL or spec.kind is FeatureKind.BOOLEAN:
        # A boolean's profile holds the shares of true, false and missing, as normalised.
        drifted = psi_categorical(baseline, column, feature=spec.name)
        return drifted.model_copy(update={"kind": spec.kind})
    result = psi_numeric(baseline, column, feature=spec.name)
    if result.ks is not None and rows - missing < MIN_LIVE_ROWS:
        return result.model_copy(
            update={
                "ks": None,
                "ks_pvalue": None,
                "note": f"KS not computed: {rows - missing} present live values",
            }
        )
    return result


def drift(
    profile: Mapping[str, Any],
    schema_features: Sequence[FeatureSpec],
    columns: Mapping[str, Values],
    *,
    dataset: str,
    dataset_version: str | None = None,
) -> DriftResult:
    """Compare live columns with a dataset's training profile (``build_profile``'s output).

    ``columns`` maps feature names to live values: numeric as floats (NaN or ``None`` missing),
    categorical as raw or normalised scalars (``None`` missing). Every schema feature gets a
    ``FeatureDrift``: scored, or with the reason it was not (``missing_column``,
    ``no_baseline``, ``insufficient_data`` below ``MIN_LIVE_ROWS`` rows).
    """
    baselines: Mapping[str, Any] = profile.get("features", {})
    results = [
        _score(spec, baselines.get(spec.name), columns.get(spec.name)) for spec in schema_features
    ]
    scored = [r.psi for r in results if r.psi is not None]
    drifted = sum(1 for r in results if r.level is not None and _LEVEL_RANK[r.level] >= 1)
    return DriftResult(
        dataset=dataset,
        dataset_version=dataset_version,
        live_rows=max((int(np.size(c)) for c in columns.values()), default=0),
        features=results,
        scored=len(scored),
        max_psi=max(scored) if scored else None,
        mean_psi=float(np.mean(scored)) if scored else None,
        drifted=drifted,
        drifted_share=drifted / len(scored) if scored else None,
        level=psi_level(max(scored)) if scored else None,
    )
