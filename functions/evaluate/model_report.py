"""The model report's numbers: every figure of ``report.html`` as data (the JSON twin).

Built in evaluate from what it already holds: the challenger's and champion's outputs on the
same test rows, the gate's decision, the model card and the dataset version's schema and
profile. Every figure's numbers come from ``functions.shared.metrics`` (the confusion matrix and
Brier/ECE from ``classification_report``, the curves and their areas, the reliability bins, the
per-decile errors), so the report cannot disagree with ``evaluation.json``. NumPy and onnxruntime
only: no plotting library (the evaluate bundle is within 5 MB of its size budget, docs/decisions.md
says so); ``report_html`` draws the SVG.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from functions.evaluate.models import ChampionNote, ModelScore
from functions.shared.features import ColumnRole, DatasetSchema, graph_columns, onnx_feeds
from functions.shared.gate import GateDecision, GateInputs
from functions.shared.metrics import (
    METRICS,
    average_precision,
    classification_report,
    compute_metric,
    precision_recall_curve,
    regression_report,
    reliability_bins,
    roc_curve,
)
from functions.shared.model_card import ModelCard, SearchSummary, TrialRecord
from functions.shared.scoring import ScoringModel

MODEL_REPORT_SCHEMA_VERSION: Literal[1] = 1
CURVE_POINTS = 200  # points kept per drawn curve; areas are computed on the full curve
SCATTER_POINTS = 2000  # rows drawn in a scatter plot (a fixed-seed sample of the test rows)
HISTOGRAM_BINS = 20
IMPORTANCE_ROWS = 10_000  # test rows permutation importance scores (a fixed-seed sample above)
IMPORTANCE_MIN_ROWS = 1_000
IMPORTANCE_REPEATS = 5
IMPORTANCE_ROW_BUDGET = 2_000_000  # rows scored over all features and repeats: wide tables get
# fewer rows (never under IMPORTANCE_MIN_ROWS), so the report stays within its 10 s
SEED = 20261203
MIN_GROUP_ROWS = 10  # as evaluation.json: smaller groups are listed by size, not measured
MAX_GROUPS = 50


@dataclass(frozen=True)
class ScoredRows:
    """One model's outputs on the test split: ``truth`` is class codes (classification) or the
    target (regression); ``proba`` rows × classes, or ``values``."""

    truth: NDArray[Any]
    proba: NDArray[np.float64] | None = None
    values: NDArray[np.float64] | None = None
    classes: tuple[str, ...] = ()  # the model's classes, in ``proba``'s column order

    @property
    def predicted(self) -> NDArray[Any]:
        """Predicted class codes (argmax, first column wins ties, as the metrics) or values."""
        if self.proba is not None:
            codes: NDArray[Any] = np.argmax(self.proba, axis=1)
            return codes
        assert self.values is not None
        return self.values


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Curve(_Frozen):
    """One class's ROC (x = false positive rate, y = true positive rate, ``area`` = AUC) or
    precision-recall curve (x = recall, y = precision, ``area`` = average precision)."""

    label: str
    area: float | None
    x: list[float]
    y: list[float]
    points: int  # before thinning to CURVE_POINTS


class ConfusionFigure(_Frozen):
    labels: list[str]
    counts: list[list[int]]  # rows = true class, columns = predicted
    normalised: list[list[float]]  # each row divided by its true-class count (recall per cell)


class ReliabilityFigure(_Frozen):
    """``metrics.reliability_bins``: the top-class probability against the share correct."""

    edges: list[float]
    count: list[int]
    confidence: list[float]
    accuracy: list[float]
    brier: float | None
    ece: float | None


class ProbabilityHistogram(_Frozen):
    """The predicted probability of ``label``, for rows of that class and for the others."""

    label: str
    edges: list[float]
    this_class: list[int]
    other_classes: list[int]


class ClassificationFigures(_Frozen):
    confusion: ConfusionFigure
    roc: list[Curve]
    pr: list[Curve]
    reliability: ReliabilityFigure
    histograms: list[ProbabilityHistogram]


class Points(_Frozen):
    x: list[float]
    y: list[float]
    sampled_from: int  # test rows the drawn points were sampled from


class Histogram(_Frozen):
    edges: list[float]
    counts: list[int]


class DecileError(_Frozen):
    """``metrics.regression_report`` on the rows whose target falls in one decile."""

    decile: int = Field(ge=1, le=10)
    low: float
    high: float
    rows: int
    rmse: float | None
    mae: float | None
    bias: float | None  # mean(predicted - actual)


class RegressionFigures(_Frozen):
    predicted_vs_actual: Points  # x = actual, y = predicted
    residuals_vs_predicted: Points  # x = predicted, y = predicted - actual
    error_histogram: Histogram  # predicted - actual, every test row
    by_decile: list[DecileError]


class FeatureImportance(_Frozen):
    feature: str  # the user's column name
    mean: float  # mean drop of the contract metric when the column is shuffled
    std: float
    drops: list[float]  # one per repeat


class Importance(_Frozen):
    """Permutation importance on the test split: the contract metric's loss (positive = the
    model relies on the feature) when one feature's values are shuffled across rows."""

    metric: str
    baseline: float | None
    rows: int
    repeats: int
    seed: int
    features: list[FeatureImportance]  # most important first


class GroupFigures(_Frozen):
    group: str
    rows: int
    metric: float | None  # the contract metric on the group's rows
    selection_rate: dict[str, float] | None = None  # class → share of rows predicted it
    true_positive_rate: dict[str, float | None] | None = None  # class → recall in the group
    mae: float | None = None


class FairnessColumn(_Frozen):
    column: str
    groups: list[GroupFigures]  # groups with at least MIN_GROUP_ROWS rows, largest first
    too_small: dict[str, int]  # smaller groups: rows only, left out of the gaps
    gaps: dict[str, float | None]  # largest minus smallest across the measured groups
    threshold: float | None  # the contract's fairness_threshold
    flagged: list[str]  # the gaps over the threshold


class ProfileSummary(_Frozen):
    available: bool  # False when the dataset version's schema or profile cannot be read
    rows: dict[str, int]
    columns: list[ColumnRole]  # every column's role, as preprocessing inferred it
    features: dict[str, dict[str, JsonValue]]
    target: dict[str, JsonValue] | None = None


class CandidateSummary(_Frozen):
    name: str
    chosen: bool
    metric_value: float | None
    fit_seconds: float
    trials: list[TrialRecord]
    search: SearchSummary | None


class MetricPair(_Frozen):
    name: str
    challenger: float | None
    champion: float | None


class Comparison(_Frozen):
    champion_version: int | None
    scored: bool
    note: str
    metrics: list[MetricPair]
    agreement: float | None  # share of rows with the same label / None for regression
    mean_abs_difference: float | None  # regression: mean |challenger - champion|
    # the champion's figures on the same rows, drawn beside the challenger's; None unscored
    champion_classification: ClassificationFigures | None = None
    champion_regression: RegressionFigures | None = None


class GateSummary(_Frozen):
    passed: bool
    reasons: list[str]
    metric: str
    higher_is_better: bool
    threshold: float
    tolerance: float
    challenger: float | None
    champion: float | None
    champion_floor: float | None


class ModelReport(_Frozen):
    schema_version: Literal[1] = MODEL_REPORT_SCHEMA_VERSION
    dataset: str
    dataset_version: str
    run_name: str
    model_version: int | None  # set once the registry allocated it
    task: Literal["classification", "regression"]
    metric: str
    chosen: str
    classes: list[str] | None
    test_rows: int = Field(gt=0)
    headline: dict[str, float | None]
    classification: ClassificationFigures | None = None
    regression: RegressionFigures | None = None
    importance: Importance
    fairness: list[FairnessColumn]
    profile: ProfileSummary
    candidates: list[CandidateSummary]
    gate: GateSummary
    comparison: Comparison
    created_at: AwareDatetime
    build_seconds: float = Field(ge=0)


@dataclass(frozen=True)
class ReportInputs:
    """Everything evaluate hands the report builder."""

    dataset: str
    dataset_version: str
    run_name: str
    card: ModelCard
    model: ScoringModel
    columns: Mapping[str, NDArray[Any]]
    challenger: ScoredRows
    challenger_score: ModelScore
    champion: ScoredRows | None
    champion_score: ModelScore | None
    champion_note: ChampionNote
    gate: GateInputs
    decision: GateDecision
    sensitive: Sequence[str]
    fairness_threshold: float | None
    schema: DatasetSchema | None
    profile: Mapping[str, Any] | None


def build_model_report(inputs: ReportInputs, *, created_at: Any) -> ModelReport:
    started = time.perf_counter()
    card = inputs.card
    rows = inputs.challenger
    classification = regression = None
    if card.task == "classification":
        classification = classification_figures(rows, card.classes or [])
    else:
        regression = regression_figures(rows)
    report = ModelReport(
        dataset=inputs.dataset,
        dataset_version=inputs.dataset_version,
        run_name=inputs.run_name,
        model_version=None,
        task=card.task,
        metric=inputs.gate.metric,
        chosen=card.chosen,
        classes=card.classes,
        test_rows=int(rows.truth.shape[0]),
        headline=_headline(inputs.challenger_score.report),
        classification=classification,
        regression=regression,
        importance=permutation_importance(
            inputs.model, inputs.columns, rows.truth, metric=inputs.gate.metric
        ),
        fairness=[
            fairness(
                column,
                inputs.columns[column],
                rows,
                metric=inputs.gate.metric,
                classes=card.classes or [],
                threshold=inputs.fairness_threshold,
            )
            for column in inputs.sensitive
        ],
        profile=profile_summary(inputs.schema, inputs.profile, card, test_rows=len(rows.truth)),
        candidates=[
            CandidateSummary(
                name=c.name,
                chosen=c.name == card.chosen,
                metric_value=c.metric_value,
                fit_seconds=c.fit_seconds,
                trials=c.trials,
                search=c.search,
            )
            for c in card.candidates
        ],
        gate=GateSummary(
            passed=inputs.decision.passed,
            reasons=inputs.decision.reasons,
            metric=inputs.gate.metric,
            higher_is_better=inputs.gate.higher_is_better,
            threshold=inputs.gate.threshold,
            tolerance=inputs.gate.tolerance,
            challenger=inputs.gate.challenger,
            champion=inputs.gate.champion,
            champion_floor=inputs.gate.champion_floor,
        ),
        comparison=comparison(inputs),
        created_at=created_at,
        build_seconds=0.0,
    )
    return report.model_copy(update={"build_seconds": round(time.perf_counter() - started, 4)})


# --- classification ----------------------------------------------------------------------------


def classification_figures(rows: ScoredRows, classes: Sequence[str]) -> ClassificationFigures:
    assert rows.proba is not None
    y, proba = rows.truth, rows.proba
    summary = classification_report(y, proba, list(classes))
    counts = np.asarray(summary["confusion_matrix"], dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals != 0)
    # binary: the second class is the positive one, as roc_auc scores it; else one vs rest
    shown = [1] if proba.shape[1] == 2 else list(range(proba.shape[1]))
    roc: list[Curve] = []
    pr: list[Curve] = []
    for c in shown:
        positive = y == c
        if positive.any() and not positive.all():  # else the rates are undefined: no curve
            fpr, tpr, _ = roc_curve(positive, proba[:, c])
            roc.append(_curve(classes[c], float(np.trapezoid(tpr, fpr)), fpr, tpr))
        if positive.any():
            precision, recall, _ = precision_recall_curve(positive, proba[:, c])
            ap = average_precision(positive, proba[:, c])
            pr.append(_curve(classes[c], ap, recall, precision))
    bins = reliability_bins(y, proba)
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    histograms = [
        ProbabilityHistogram(
            label=classes[c],
            edges=edges.tolist(),
            this_class=_histogram(proba[y == c, c], edges),
            other_classes=_histogram(proba[y != c, c], edges),
        )
        for c in range(proba.shape[1])
    ]
    return ClassificationFigures(
        confusion=ConfusionFigure(
            labels=list(classes), counts=counts.tolist(), normalised=normalised.tolist()
        ),
        roc=roc,
        pr=pr,
        reliability=ReliabilityFigure(
            edges=[float(e) for e in bins["edges"]],
            count=[int(c) for c in bins["count"]],
            confidence=[float(c) for c in bins["confidence"]],
            accuracy=[float(a) for a in bins["accuracy"]],
            brier=_opt(summary["brier"]),
            ece=_opt(summary["ece"]),
        ),
        histograms=histograms,
    )


def _curve(label: str, area: float | None, x: NDArray[Any], y: NDArray[Any]) -> Curve:
    keep = _thin(x.shape[0], CURVE_POINTS)
    clean = None if area is None or math.isnan(area) else float(area)
    return Curve(
        label=label,
        area=clean,
        x=[round(float(v), 6) for v in x[keep]],
        y=[round(float(v), 6) for v in y[keep]],
        points=int(x.shape[0]),
    )


def _thin(n: int, most: int) -> NDArray[np.intp]:
    """Indexes of at most ``most`` evenly spread points, the first and last always kept."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.intp))


def _histogram(values: NDArray[Any], edges: NDArray[np.float64]) -> list[int]:
    counts, _ = np.histogram(values, bins=edges)
    return [int(c) for c in counts]


# --- regression --------------------------------------------------------------------------------


def regression_figures(rows: ScoredRows) -> RegressionFigures:
    assert rows.values is not None
    y = np.asarray(rows.truth, dtype=np.float64)
    pred = rows.values
    residual = pred - y
    sample = _sample(y.shape[0], SCATTER_POINTS)
    low, high = float(residual.min()), float(residual.max())
    edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
    deciles: list[DecileError] = []
    cuts = np.quantile(y, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(cuts[1:-1], y, side="right"), 0, 9)
    for d in range(10):
        members = which == d
        if not members.any():
            continue
        figures = regression_report(y[members], pred[members])
        deciles.append(
            DecileError(
                decile=d + 1,
                low=float(cuts[d]),
                high=float(cuts[d + 1]),
                rows=int(members.sum()),
                rmse=_opt(figures["rmse"]),
                mae=_opt(figures["mae"]),
                bias=float(residual[members].mean()),
            )
        )
    return RegressionFigures(
        predicted_vs_actual=Points(
            x=_rounded(y[sample]), y=_rounded(pred[sample]), sampled_from=int(y.shape[0])
        ),
        residuals_vs_predicted=Points(
            x=_rounded(pred[sample]), y=_rounded(residual[sample]), sampled_from=int(y.shape[0])
        ),
        error_histogram=Histogram(edges=edges.tolist(), counts=_histogram(residual, edges)),
        by_decile=deciles,
    )


def _sample(n: int, most: int) -> NDArray[np.intp]:
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, most, replace=False))


def _rounded(values: NDArray[Any]) -> list[float]:
    return [float(f"{v:.6g}") for v in values.tolist()]


# --- permutation importance --------------------------------------------------------------------


def permutation_importance(
    model: ScoringModel,
    columns: Mapping[str, NDArray[Any]],
    truth: NDArray[Any],
    *,
    metric: str,
    rows: int | None = None,
    repeats: int = IMPORTANCE_REPEATS,
) -> Importance:
    """Shuffle one feature at a time (a date's derived parts together, as one column) and
    measure the contract metric's loss; the graph's inputs are built once (``onnx_feeds``) and
    only the shuffled feature's inputs change per repeat, so the cost is the model's scoring."""
    card = model.card
    n = int(truth.shape[0])
    if rows is None:
        budgeted = IMPORTANCE_ROW_BUDGET // (len(card.features) * repeats)
        rows = min(IMPORTANCE_ROWS, max(IMPORTANCE_MIN_ROWS, budgeted))
    sample = _sample(n, rows)
    picked = {f.name: np.asarray(columns[f.name])[sample] for f in card.features}
    feeds = onnx_feeds(card.features, picked, card.input_names)
    y = truth[sample]
    higher = METRICS[metric].higher_is_better

    def measured(current: Mapping[str, NDArray[Any]]) -> float:
        return _metric_of(model, current, y, metric)

    baseline = measured(feeds)
    rng = np.random.default_rng(SEED)
    results: list[FeatureImportance] = []
    for spec in card.features:
        inputs = [
            name for name, _ in graph_columns([spec], {spec.name: card.input_names[spec.name]})
        ]
        drops: list[float] = []
        for _ in range(repeats):
            order = rng.permutation(len(sample))
            shuffled = dict(feeds) | {name: feeds[name][order] for name in inputs}
            value = measured(shuffled)
            drop = baseline - value if higher else value - baseline
            drops.append(drop)
        finite = [d for d in drops if math.isfinite(d)]
        results.append(
            FeatureImportance(
                feature=spec.name,
                mean=float(np.mean(finite)) if finite else 0.0,
                std=float(np.std(finite)) if finite else 0.0,
                drops=[round(d, 8) if math.isfinite(d) else 0.0 for d in drops],
            )
        )
    results.sort(key=lambda f: -f.mean)
    return Importance(
        metric=metric,
        baseline=baseline if math.isfinite(baseline) else None,
        rows=len(sample),
        repeats=repeats,
        seed=SEED,
        features=results,
    )


def _metric_of(
    model: ScoringModel, feeds: Mapping[str, NDArray[Any]], y: NDArray[Any], metric: str
) -> float:
    scores = model.score_feeds(feeds)
    if scores.probabilities is not None:
        return compute_metric(metric, y, proba=scores.probabilities.astype(np.float64))
    assert scores.values is not None
    return compute_metric(metric, y, pred=scores.values.astype(np.float64))


# --- fairness ----------------------------------------------------------------------------------


def fairness(
    column: str,
    values: NDArray[Any],
    rows: ScoredRows,
    *,
    metric: str,
    classes: Sequence[str],
    threshold: float | None,
) -> FairnessColumn:
    """The contract metric per group of a sensitive column and the gaps between groups.

    Classification: ``demographic_parity_difference`` is the largest gap in the share of rows
    predicted a class (binary: the positive, second class; multiclass: the worst class);
    ``equal_opportunity_difference`` the same for the true positive rate (groups with no row of
    the class are left out of that class's gap). Regression: ``error_gap`` is the gap in MAE.
    Each gap is over the groups with at least ``MIN_GROUP_ROWS`` rows.
    """
    keys = np.array(["(missing)" if v is None else str(v) for v in values], dtype=object)
    labels, counts = np.unique(keys, return_counts=True)
    ranked = sorted(zip(labels.tolist(), counts.tolist(), strict=True), key=lambda lc: -lc[1])
    predicted = rows.predicted
    groups: list[GroupFigures] = []
    too_small: dict[str, int] = {}
    for label, count in ranked[:MAX_GROUPS]:
        if count < MIN_GROUP_ROWS:
            too_small[str(label)] = int(count)
            continue
        members = keys == label
        y = rows.truth[members]
        if rows.proba is not None:
            value = compute_metric(metric, y, proba=rows.proba[members])
            k = rows.proba.shape[1]
            chosen = predicted[members]
            selection = {classes[c]: float(np.mean(chosen == c)) for c in range(k)}
            tpr: dict[str, float | None] = {}
            for c in range(k):
                truly = y == c
                tpr[classes[c]] = float(np.mean(chosen[truly] == c)) if truly.any() else None
            groups.append(
                GroupFigures(
                    group=str(label),
                    rows=int(count),
                    metric=_opt(value),
                    selection_rate=selection,
                    true_positive_rate=tpr,
                )
            )
        else:
            pred = predicted[members]
            figures = regression_report(y, pred)
            value = compute_metric(metric, y, pred=pred)
            groups.append(
                GroupFigures(
                    group=str(label), rows=int(count), metric=_opt(value), mae=_opt(figures["mae"])
                )
            )
    gaps = (
        _gaps(groups, classes, binary=len(classes) == 2)
        if rows.proba is not None
        else {"error_gap": _spread([g.mae for g in groups])}
    )
    flagged = [
        name
        for name, gap in gaps.items()
        if threshold is not None and gap is not None and gap > threshold
    ]
    return FairnessColumn(
        column=column,
        groups=groups,
        too_small=too_small,
        gaps=gaps,
        threshold=threshold,
        flagged=flagged,
    )


def _spread(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(max(present) - min(present)) if len(present) >= 2 else None


def _gaps(
    groups: Sequence[GroupFigures], classes: Sequence[str], *, binary: bool
) -> dict[str, float | None]:
    considered = [classes[1]] if binary else list(classes)

    def worst(of: str) -> float | None:
        per_class = [
            _spread([(getattr(g, of) or {}).get(label) for g in groups]) for label in considered
        ]
        present = [v for v in per_class if v is not None]
        return max(present) if present else None

    return {
        "demographic_parity_difference": worst("selection_rate"),
        "equal_opportunity_difference": worst("true_positive_rate"),
    }


# --- the rest ----------------------------------------------------------------------------------


def profile_summary(
    schema: DatasetSchema | None,
    profile: Mapping[str, Any] | None,
    card: ModelCard,
    *,
    test_rows: int,
) -> ProfileSummary:
    rows = {
        "train": card.training.rows_train,
        "validation": card.training.rows_validation,
        "test": test_rows,
    }
    if schema is None or profile is None:
        return ProfileSummary(available=False, rows=rows, columns=[], features={})
    features: dict[str, dict[str, JsonValue]] = {}
    for name, entry in (profile.get("features") or {}).items():
        summary = {
            k: entry[k]
            for k in ("kind", "count", "missing", "mean", "std", "min", "max", "cardinality")
            if k in entry
        }
        shares = entry.get("shares")
        if isinstance(shares, dict):
            summary["top"] = {k: round(float(v), 4) for k, v in list(shares.items())[:3]}
        features[str(name)] = summary
    target = profile.get("target")
    return ProfileSummary(
        available=True,
        rows=rows,
        columns=schema.columns,
        features=features,
        target=dict(target) if isinstance(target, dict) else None,
    )


def comparison(inputs: ReportInputs) -> Comparison:
    note = inputs.champion_note
    challenger = _headline(inputs.challenger_score.report)
    champion = _headline(inputs.champion_score.report) if inputs.champion_score else {}
    metrics = [
        MetricPair(name=name, challenger=value, champion=champion.get(name))
        for name, value in challenger.items()
    ]
    agreement = mean_abs = None
    classification = regression = None
    champion_rows = inputs.champion
    if champion_rows is not None:
        ours, theirs = inputs.challenger.predicted, champion_rows.predicted
        if inputs.challenger.proba is not None:
            # labels, not codes: the champion may know other classes, in another order
            mine = np.asarray(inputs.challenger.classes, dtype=object)[ours]
            its = np.asarray(champion_rows.classes, dtype=object)[theirs]
            agreement = float(np.mean(mine == its))
            classification = classification_figures(champion_rows, champion_rows.classes)
        else:
            mean_abs = float(np.mean(np.abs(ours - theirs)))
            regression = regression_figures(champion_rows)
    return Comparison(
        champion_version=note.version,
        scored=note.scored,
        note=note.reason,
        metrics=metrics,
        agreement=agreement,
        mean_abs_difference=mean_abs,
        champion_classification=classification,
        champion_regression=regression,
    )


_HEADLINE = (
    "accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "roc_auc",
    "log_loss",
    "brier",
    "ece",
    "rmse",
    "mae",
    "r2",
)


def _headline(report: Mapping[str, JsonValue]) -> dict[str, float | None]:
    return {k: _opt(report[k]) for k in _HEADLINE if k in report}


def _opt(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None
