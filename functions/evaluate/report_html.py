"""The model report as one self-contained HTML page, its figures drawn as inline SVG.

Every figure is drawn from the ``ModelReport`` (the JSON twin) and nothing else, so the page
shows exactly the numbers the JSON holds. No script, stylesheet, font or image is fetched (the
page works offline and without JavaScript); the style and escaping are the drift report's
(``functions.shared.html_page``). No plotting library: a few SVG primitives are enough.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import JsonValue

from functions.evaluate.model_report import (
    ClassificationFigures,
    Curve,
    FairnessColumn,
    ModelReport,
    RegressionFigures,
)
from functions.shared.html_page import escape as _e
from functions.shared.html_page import num as _num
from functions.shared.html_page import page

_PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037")
_GREY = "#b0bec5"
_PASS, _FAIL, _NEUTRAL = "#2e7d32", "#c62828", "#757575"
_W, _H, _M = 430, 300, 70  # plot width, height, left margin
_SVG_NS = "http://www.w3.org/2000/svg"  # an XML namespace name, never fetched
_EXTRA_STYLE = """
.figs { display: flex; flex-wrap: wrap; gap: 1rem; } figure { margin: 0; }
figcaption { color: #616161; font-size: .9em; max-width: 420px; }
td.flag { color: #c62828; font-weight: 600; } details { margin: .5rem 0; }
"""


# --- SVG primitives --------------------------------------------------------------------------


def _open(label: str, width: int = _W, height: int = _H) -> str:
    return (
        f'<svg xmlns="{_SVG_NS}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'
    )


def _fmt(v: float) -> str:
    """Short tick text: 0.25, 12.5, 211k, 1.2M."""
    size = abs(v)
    if size >= 1e6:
        return f"{v / 1e6:.3g}M"
    if size >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _axes(
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    x_label: str,
    y_label: str,
    categories: Sequence[str] = (),
) -> str:
    x0, x1 = _M, _W - 12
    y0, y1 = _H - _M + 8, 12
    parts = [
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#9e9e9e"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#9e9e9e"/>',
    ]
    for i in range(5):
        fx = x_range[0] + (x_range[1] - x_range[0]) * i / 4
        fy = y_range[0] + (y_range[1] - y_range[0]) * i / 4
        px = x0 + (x1 - x0) * i / 4
        py = y0 - (y0 - y1) * i / 4
        if not categories:
            parts.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">{_fmt(fx)}</text>')
        parts.append(f'<text x="{x0 - 4}" y="{py + 4:.1f}" text-anchor="end">{_fmt(fy)}</text>')
    slot = (x1 - x0) / max(len(categories), 1)
    parts.extend(
        f'<text x="{x0 + slot * (i + 0.5):.1f}" y="{y0 + 16}" text-anchor="middle">'
        f"{_e(name)}</text>"
        for i, name in enumerate(categories)
    )
    parts.append(
        f'<text x="{(x0 + x1) / 2}" y="{_H - 6}" text-anchor="middle">{_e(x_label)}</text>'
        f'<text x="12" y="{(y0 + y1) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(y0 + y1) / 2})">{_e(y_label)}</text>'
    )
    return "".join(parts)


class _Frame:
    """Maps data coordinates into the plot area."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.x_range = x_range if x_range[1] > x_range[0] else (x_range[0], x_range[0] + 1)
        self.y_range = y_range if y_range[1] > y_range[0] else (y_range[0], y_range[0] + 1)

    def x(self, v: float) -> float:
        lo, hi = self.x_range
        return _M + (v - lo) / (hi - lo) * (_W - 12 - _M)

    def y(self, v: float) -> float:
        lo, hi = self.y_range
        return _H - _M + 8 - (v - lo) / (hi - lo) * (_H - _M + 8 - 12)


def _polyline(frame: _Frame, xs: Sequence[float], ys: Sequence[float], colour: str) -> str:
    points = " ".join(
        f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in zip(xs, ys, strict=True) if y == y
    )
    return f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>'


def _legend(entries: Sequence[tuple[str, str]]) -> str:
    parts = []
    for i, (label, colour) in enumerate(entries[:8]):
        y = 20 + 16 * i
        parts.append(
            f'<rect x="{_W - 150}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{_W - 136}" y="{y}">{_e(label[:22])}</text>'
        )
    return "".join(parts)


def _line_chart(
    label: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    x_label: str,
    y_label: str,
    *,
    diagonal: bool = False,
) -> str:
    frame = _Frame((0.0, 1.0), (0.0, 1.0))
    parts = [_open(label), _axes(frame.x_range, frame.y_range, x_label, y_label)]
    if diagonal:
        parts.append(
            f'<line x1="{frame.x(0)}" y1="{frame.y(0)}" x2="{frame.x(1)}" y2="{frame.y(1)}" '
            'stroke="#bdbdbd" stroke-dasharray="4 3"/>'
        )
    entries = []
    for i, (name, xs, ys) in enumerate(series):
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(_polyline(frame, xs, ys, colour))
        entries.append((name, colour))
    parts.append(_legend(entries))
    parts.append("</svg>")
    return "".join(parts)


def _scatter(
    label: str,
    xs: Sequence[float],
    ys: Sequence[float],
    x_label: str,
    y_label: str,
    *,
    identity: bool = False,
    zero_line: bool = False,
) -> str:
    lo_x, hi_x = (min(xs), max(xs)) if xs else (0.0, 1.0)
    lo_y, hi_y = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if identity:
        lo_x = lo_y = min(lo_x, lo_y)
        hi_x = hi_y = max(hi_x, hi_y)
    frame = _Frame((lo_x, hi_x), (lo_y, hi_y))
    parts = [_open(label), _axes(frame.x_range, frame.y_range, x_label, y_label)]
    if identity:
        a, b = frame.x_range
        parts.append(
            f'<line x1="{frame.x(a):.1f}" y1="{frame.y(a):.1f}" x2="{frame.x(b):.1f}" '
            f'y2="{frame.y(b):.1f}" stroke="#9e9e9e" stroke-dasharray="4 3"/>'
        )
    if zero_line and frame.y_range[0] <= 0 <= frame.y_range[1]:
        parts.append(
            f'<line x1="{_M}" y1="{frame.y(0):.1f}" x2="{_W - 12}" y2="{frame.y(0):.1f}" '
            'stroke="#9e9e9e" stroke-dasharray="4 3"/>'
        )
    parts.append(f'<g fill="{_PALETTE[0]}" fill-opacity="0.35">')
    parts.extend(
        f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="1.8"/>'
        for x, y in zip(xs, ys, strict=True)
    )
    parts.append("</g></svg>")
    return "".join(parts)


def _bars(
    label: str,
    edges: Sequence[float],
    series: Sequence[tuple[str, Sequence[int | float], str]],
    x_label: str,
    y_label: str,
    categories: Sequence[str] = (),
) -> str:
    """Bars over ``edges`` (a histogram), or one group per category when ``categories``."""
    peak = max([float(v) for _, values, _ in series for v in values] + [1e-9])
    frame = _Frame((edges[0], edges[-1]), (0.0, peak))
    axes = _axes(frame.x_range, frame.y_range, x_label, y_label, categories)
    parts = [_open(label), axes]
    width = len(series)
    for s, (_, values, colour) in enumerate(series):
        for i, value in enumerate(values):
            left, right = frame.x(edges[i]), frame.x(edges[i + 1])
            slot = (right - left) / width
            top = frame.y(float(value))
            parts.append(
                f'<rect x="{left + s * slot:.1f}" y="{top:.1f}" width="{max(slot - 0.5, 0.5):.1f}" '
                f'height="{frame.y(0) - top:.1f}" fill="{colour}"><title>'
                f"{_fmt(edges[i])}–{_fmt(edges[i + 1])}: {_fmt(float(value))}</title></rect>"
            )
    parts.append(_legend([(name, colour) for name, _, colour in series if name]))
    parts.append("</svg>")
    return "".join(parts)


def _heatmap(
    label: str,
    labels: Sequence[str],
    counts: Sequence[Sequence[int]],
    normalised: Sequence[Sequence[float]],
) -> str:
    k = len(labels)
    cell = max(28, min(64, 320 // max(k, 1)))
    left, top = 110, 40
    width, height = left + cell * k + 10, top + cell * k + 30
    parts = [_open(label, width, height)]
    parts.append(
        f'<text x="{left + cell * k / 2}" y="14" text-anchor="middle">predicted</text>'
        f'<text x="12" y="{top + cell * k / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + cell * k / 2})">true</text>'
    )
    for j, name in enumerate(labels):
        parts.append(
            f'<text x="{left + cell * j + cell / 2}" y="{top - 6}" text-anchor="middle">'
            f"{_e(name[:8])}</text>"
            f'<text x="{left - 6}" y="{top + cell * j + cell / 2 + 4}" text-anchor="end">'
            f"{_e(name[:14])}</text>"
        )
    for i in range(k):
        for j in range(k):
            share = normalised[i][j]
            text_colour = "#fff" if share > 0.55 else "#212121"
            parts.append(
                f'<rect x="{left + cell * j}" y="{top + cell * i}" width="{cell}" height="{cell}" '
                f'fill="{_PALETTE[0]}" fill-opacity="{0.05 + 0.95 * share:.3f}" stroke="#fff"/>'
                f'<text x="{left + cell * j + cell / 2}" y="{top + cell * i + cell / 2}" '
                f'text-anchor="middle" style="fill:{text_colour}">{counts[i][j]}</text>'
                f'<text x="{left + cell * j + cell / 2}" y="{top + cell * i + cell / 2 + 13}" '
                f'text-anchor="middle" style="fill:{text_colour};font-size:10px">{share:.0%}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _importance_chart(report: ModelReport) -> str:
    features = report.importance.features[:20]
    row_h, label_w, bar_w = 22, 170, 220
    height = 30 + row_h * len(features)
    width = label_w + bar_w + 150
    peak = max([f.mean + f.std for f in features] + [1e-12])
    parts = [_open(f"Permutation importance of each feature ({report.metric})", width, height)]
    zero = label_w
    for i, f in enumerate(features):
        y = 20 + i * row_h
        bar = max(f.mean, 0.0) / peak * bar_w
        lo = max(f.mean - f.std, 0.0) / peak * bar_w
        hi = (f.mean + f.std) / peak * bar_w
        parts.append(
            f"<g><title>{_e(f.feature)}: {f.mean:.4g} ± {f.std:.2g}</title>"
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{_e(f.feature[:24])}</text>'
            f'<rect x="{zero}" y="{y + 3}" width="{bar:.1f}" height="13" fill="{_PALETTE[0]}"/>'
            f'<line x1="{zero + lo:.1f}" y1="{y + 9.5}" x2="{zero + hi:.1f}" y2="{y + 9.5}" '
            'stroke="#212121"/>'
            f'<text x="{zero + bar_w + 8}" y="{y + 13}">{_fmt(f.mean)} ± {_fmt(f.std)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


# --- figures --------------------------------------------------------------------------------


def figures(report: ModelReport) -> dict[str, str]:
    """Each figure's SVG, keyed by a file-name-safe id (also written beside the page)."""
    drawn: dict[str, str] = {}
    if report.classification is not None:
        drawn |= _classification_figures(report.classification)
    if report.regression is not None:
        drawn |= _regression_figures(report.regression)
    # the champion's, on the same rows, for the side-by-side section
    champion = report.comparison
    if champion.champion_classification is not None:
        theirs = _classification_figures(champion.champion_classification)
        drawn |= {f"champion_{k}": theirs[k] for k in ("confusion_matrix", "roc")}
    if champion.champion_regression is not None:
        theirs = _regression_figures(champion.champion_regression)
        drawn |= {f"champion_{k}": theirs[k] for k in ("predicted_vs_actual", "error_by_decile")}
    drawn["importance"] = _importance_chart(report)
    return drawn


def _curve_series(curves: Sequence[Curve], area: str) -> list[tuple[str, list[float], list[float]]]:
    return [(f"{c.label} ({area} {_num(c.area)})", c.x, c.y) for c in curves]


def _classification_figures(figs: ClassificationFigures) -> dict[str, str]:
    c = figs.confusion
    drawn = {
        "confusion_matrix": _heatmap(
            "Confusion matrix: counts and share of each true class",
            c.labels,
            c.counts,
            c.normalised,
        ),
        "roc": _line_chart(
            "ROC curve",
            _curve_series(figs.roc, "AUC"),
            "false positive rate",
            "true positive rate",
            diagonal=True,
        ),
        "precision_recall": _line_chart(
            "Precision-recall curve", _curve_series(figs.pr, "AP"), "recall", "precision"
        ),
    }
    r = figs.reliability
    filled = [i for i, n in enumerate(r.count) if n > 0]
    drawn["reliability"] = _line_chart(
        "Reliability curve",
        [("model", [r.confidence[i] for i in filled], [r.accuracy[i] for i in filled])],
        "mean top-class probability",
        "share correct",
        diagonal=True,
    )
    for i, h in enumerate(figs.histograms):
        drawn[f"probabilities_{i}"] = _bars(
            f"Predicted probability of {h.label}",
            h.edges,
            [
                (f"true {h.label}", h.this_class, _PALETTE[0]),
                ("other classes", h.other_classes, _GREY),
            ],
            f"P({h.label})",
            "rows",
        )
    return drawn


def _regression_figures(figs: RegressionFigures) -> dict[str, str]:
    pva, rvp = figs.predicted_vs_actual, figs.residuals_vs_predicted
    deciles = figs.by_decile
    edges = [float(i) for i in range(len(deciles) + 1)] if deciles else [0.0, 1.0]
    return {
        "predicted_vs_actual": _scatter(
            "Predicted against actual", pva.x, pva.y, "actual", "predicted", identity=True
        ),
        "residuals_vs_predicted": _scatter(
            "Residual against predicted",
            rvp.x,
            rvp.y,
            "predicted",
            "predicted − actual",
            zero_line=True,
        ),
        "error_histogram": _bars(
            "Histogram of errors",
            figs.error_histogram.edges,
            [("", figs.error_histogram.counts, _PALETTE[0])],
            "predicted − actual",
            "rows",
        ),
        "error_by_decile": _bars(
            "Error by decile of the target",
            edges,
            [
                ("RMSE", [d.rmse or 0.0 for d in deciles], _PALETTE[0]),
                ("MAE", [d.mae or 0.0 for d in deciles], _PALETTE[1]),
            ],
            "decile of the target (1 = lowest)",
            "error",
            categories=[str(d.decile) for d in deciles],
        ),
    }


# --- the page -------------------------------------------------------------------------------


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _badge(passed: bool | None, text: str) -> str:
    colour = _NEUTRAL if passed is None else (_PASS if passed else _FAIL)
    return f'<span class="badge" style="background:{colour}">{_e(text)}</span>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i >= numeric_from else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def report_html(report: ModelReport, drawn: dict[str, str] | None = None) -> bytes:
    drawn = figures(report) if drawn is None else drawn
    version = f"version {report.model_version}" if report.model_version else "unregistered"
    title = f"Model report — {report.dataset} {version}"
    gate = report.gate
    headline = report.headline.get(report.metric)
    cards = (
        '<div class="cards">'
        f'<div class="card">gate<b>{_badge(gate.passed, "passed" if gate.passed else "refused")}'
        "</b></div>"
        f'<div class="card">test {_e(report.metric)}<b>{_num(headline, 4)}</b></div>'
        f'<div class="card">model<b>{_e(report.chosen)}</b></div>'
        f'<div class="card">test rows<b>{report.test_rows}</b></div>'
        "</div>"
    )
    nav = (
        '<nav aria-label="sections"><a href="#performance">performance</a> · '
        '<a href="#importance">importance</a> · <a href="#fairness">fairness</a> · '
        '<a href="#gate">gate</a> · <a href="#champion">champion</a> · '
        '<a href="#data">data</a> · <a href="#candidates">candidates</a></nav>'
    )
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(report.task)} · dataset version {_e(report.dataset_version)} · '
        f"run {_e(report.run_name)} · {_e(report.created_at.isoformat())}</p>",
        cards,
        nav,
        _performance(report, drawn),
        _importance(report, drawn),
        _fairness(report),
        _gate(report),
        _champion(report, drawn),
        _data(report),
        _candidates(report),
        f"<footer><p>Built in {report.build_seconds:.2f} s by sluice's evaluate step. Every "
        "figure's numbers are in report.json beside this page; the metrics are "
        "functions/shared/metrics.py's, as in evaluation.json.</p></footer>",
    ]
    return page(title, "".join(body), extra_style=_EXTRA_STYLE)


def _performance(report: ModelReport, drawn: dict[str, str]) -> str:
    metrics = _table(
        ["metric", "test split"],
        [[_e(k), _num(v, 4)] for k, v in report.headline.items()],
    )
    parts = ['<section id="performance"><h2>Performance on the test split</h2>', metrics]
    figs: list[str] = []
    if report.classification is not None:
        c = report.classification
        r = c.reliability
        figs += [
            _figure(
                drawn["confusion_matrix"],
                "Confusion matrix: counts, and the share of each true class (row).",
            ),
            _figure(
                drawn["roc"],
                "ROC curve"
                + (
                    " of the positive class" if len(c.roc) == 1 else "s, one class against the rest"
                ),
            ),
            _figure(drawn["precision_recall"], "Precision-recall curve(s) with average precision."),
            _figure(
                drawn["reliability"],
                f"Reliability: Brier {_num(r.brier, 4)}, ECE "
                f"{_num(r.ece, 4)} ({len(r.count)} equal-width bins).",
            ),
        ]
        figs += [
            _figure(drawn[f"probabilities_{i}"], f"Predicted probability of {_e(h.label)}.")
            for i, h in enumerate(c.histograms)
        ]
    if report.regression is not None:
        g = report.regression
        figs += [
            _figure(
                drawn["predicted_vs_actual"],
                f"Predicted against actual "
                f"({len(g.predicted_vs_actual.x)} of {g.predicted_vs_actual.sampled_from} "
                "rows).",
            ),
            _figure(drawn["residuals_vs_predicted"], "Residuals against predicted."),
            _figure(drawn["error_histogram"], "Errors, every test row."),
            _figure(drawn["error_by_decile"], "RMSE and MAE per decile of the target."),
        ]
        parts.append(
            _table(
                ["decile", "target from", "to", "rows", "RMSE", "MAE", "bias"],
                [
                    [
                        str(d.decile),
                        _num(d.low),
                        _num(d.high),
                        str(d.rows),
                        _num(d.rmse),
                        _num(d.mae),
                        _num(d.bias),
                    ]
                    for d in g.by_decile
                ],
            )
        )
    parts.append(f'<div class="figs">{"".join(figs)}</div></section>')
    return "".join(parts)


def _importance(report: ModelReport, drawn: dict[str, str]) -> str:
    imp = report.importance
    return (
        '<section id="importance"><h2>Permutation feature importance</h2>'
        f"<p>Loss of {_e(imp.metric)} (baseline {_num(imp.baseline, 4)}) when one feature's "
        f"values are shuffled across {imp.rows} test rows, mean ± standard deviation over "
        f"{imp.repeats} repeats.</p>"
        + _figure(drawn["importance"], "Longer bar: the model relies more on the feature.")
        + "</section>"
    )


def _fairness(report: ModelReport) -> str:
    if not report.fairness:
        return (
            '<section id="fairness"><h2>Fairness</h2><p class="note">The contract names no '
            "sensitive column.</p></section>"
        )
    return (
        '<section id="fairness"><h2>Fairness</h2>'
        + "".join(_fairness_column(report, f) for f in report.fairness)
        + "</section>"
    )


def _fairness_column(report: ModelReport, column: FairnessColumn) -> str:
    threshold = (
        f"threshold {_num(column.threshold)}"
        if column.threshold is not None
        else "no fairness_threshold in the contract"
    )
    gaps = "".join(
        f"<li>{_e(name.replace('_', ' '))}: <b>{_num(gap)}</b> "
        + (_badge(False, "over the threshold") if name in column.flagged else "")
        + "</li>"
        for name, gap in column.gaps.items()
    )
    if report.task == "classification":
        head = ["group", "rows", report.metric, "selection rate", "true positive rate"]

        def rates(values: dict[str, float | None] | None) -> str:
            return ", ".join(f"{_e(k)} {_num(v)}" for k, v in (values or {}).items())

        rows = [
            [
                _e(g.group),
                str(g.rows),
                _num(g.metric, 4),
                rates(dict(g.selection_rate or {})),
                rates(g.true_positive_rate),
            ]
            for g in column.groups
        ]
    else:
        head = ["group", "rows", report.metric, "MAE"]
        rows = [
            [_e(g.group), str(g.rows), _num(g.metric, 4), _num(g.mae, 4)] for g in column.groups
        ]
    small = (
        f'<p class="note">Too few rows to measure: '
        f"{_e(', '.join(f'{k} ({v})' for k, v in column.too_small.items()))}</p>"
        if column.too_small
        else ""
    )
    return (
        f'<h3>by {_e(column.column)}</h3><ul>{gaps}</ul><p class="note">{_e(threshold)}</p>'
        + _table(head, rows, numeric_from=1)
        + small
    )


def _gate(report: ModelReport) -> str:
    g = report.gate
    direction = "higher" if g.higher_is_better else "lower"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in g.reasons)
    return (
        f'<section id="gate"><h2>The gate: {_badge(g.passed, "passed" if g.passed else "refused")}'
        f"</h2><p>{_e(g.metric)} ({direction} is better): challenger {_num(g.challenger, 4)}, "
        f"threshold {_num(g.threshold, 4)}, champion {_num(g.champion, 4)}, tolerance "
        f"{_num(g.tolerance, 4)}, the bar from the champion {_num(g.champion_floor, 4)}.</p>"
        f"<ul>{reasons}</ul></section>"
    )


def _champion(report: ModelReport, drawn: dict[str, str]) -> str:
    c = report.comparison
    who = f"live version {c.champion_version}: " if c.champion_version else ""
    rows = [
        [
            _e(m.name),
            _num(m.challenger, 4),
            _num(m.champion, 4),
            _num(
                None if m.challenger is None or m.champion is None else m.challenger - m.champion, 4
            ),
        ]
        for m in c.metrics
    ]
    agreement = ""
    if c.agreement is not None:
        agreement = f"<p>Same predicted label on {c.agreement:.1%} of the test rows.</p>"
    if c.mean_abs_difference is not None:
        agreement = (
            f"<p>Mean |challenger − champion| prediction: {_num(c.mean_abs_difference)}.</p>"
        )
    return (
        '<section id="champion"><h2>Champion and challenger on the same test rows</h2>'
        f"<p>{_e(who)}{_e(c.note)}</p>"
        + _table(["metric", "challenger", "champion", "difference"], rows)
        + agreement
        + _side_by_side(report, drawn)
        + "</section>"
    )


def _side_by_side(report: ModelReport, drawn: dict[str, str]) -> str:
    """The challenger's figures beside the champion's, on the same test rows."""
    names = [k.removeprefix("champion_") for k in drawn if k.startswith("champion_")]
    version = report.comparison.champion_version
    return "".join(
        f'<div class="figs">{_figure(drawn[name], "challenger")}'
        f"{_figure(drawn[f'champion_{name}'], f'champion (version {version})')}</div>"
        for name in names
    )


def _data(report: ModelReport) -> str:
    p = report.profile
    rows = ", ".join(f"{_e(k)} {v}" for k, v in p.rows.items())
    if not p.available:
        return (
            f'<section id="data"><h2>Data</h2><p>Rows: {rows}.</p><p class="note">The dataset '
            "version's profile could not be read.</p></section>"
        )
    roles = _table(
        ["column", "use", "kind", "why"],
        [
            [_e(r.column), _e(r.use), _e(r.kind.value if r.kind else "–"), _e(r.reason)]
            for r in p.columns
        ],
        numeric_from=9,
    )
    features = _table(
        ["feature", "kind", "rows", "missing", "mean / top categories"],
        [
            [
                _e(name),
                _e(f.get("kind", "")),
                _e(f.get("count", "–")),
                _e(f.get("missing", "–")),
                _e(_profile_cell(f)),
            ]
            for name, f in p.features.items()
        ],
        numeric_from=2,
    )
    return (
        f'<section id="data"><h2>Data</h2><p>Rows: {rows}.</p>'
        f"<h3>Column roles</h3>{roles}<h3>Training split profile</h3>{features}</section>"
    )


def _profile_cell(entry: dict[str, JsonValue]) -> str:
    """A categorical feature's top categories with their shares, a numeric feature's mean."""
    top, mean = entry.get("top"), entry.get("mean")
    if isinstance(top, dict):
        return ", ".join(
            f"{k} {v:.0%}" if isinstance(v, float) else f"{k} {v}" for k, v in top.items()
        )
    return _num(float(mean)) if isinstance(mean, int | float) else "–"


def _candidates(report: ModelReport) -> str:
    rows = [
        [
            _e(("★ " if c.chosen else "") + c.name),
            _num(c.metric_value, 4),
            f"{c.fit_seconds:.2f}",
            str(len(c.trials)),
            _e(c.search.stopped_by if c.search else "–"),
        ]
        for c in report.candidates
    ]
    trials = "".join(
        f"<details><summary>{_e(c.name)}: {len(c.trials)} trials</summary>"
        + _table(
            ["trial", "score", "state", "seconds", "parameters"],
            [
                [
                    str(t.number),
                    _num(t.score, 4),
                    _e(t.state),
                    f"{t.seconds:.2f}",
                    _e(", ".join(f"{k}={v}" for k, v in t.params.items())),
                ]
                for t in c.trials
            ],
        )
        + "</details>"
        for c in report.candidates
        if c.trials
    )
    return (
        '<section id="candidates"><h2>Candidates and trials</h2>'
        f"<p>Validation {_e(report.metric)} of each model family tried; ★ shipped.</p>"
        + _table(["candidate", "validation", "fit s", "trials", "search stopped by"], rows)
        + trials
        + "</section>"
    )
