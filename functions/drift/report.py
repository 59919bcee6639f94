"""The drift report: JSON for machines, one self-contained HTML page for people.

The HTML page has no script, no stylesheet or font to fetch and no image file: a summary table
and, per scored feature, an inline SVG bar chart of the training vs live share of each bin.
Feature and category names come from user data, so every one goes through ``html.escape``.
"""

from __future__ import annotations

from functions.drift.stats import (
    MIN_LIVE_ROWS,
    OTHER_CATEGORY,
    PSI_MAJOR,
    PSI_MODERATE,
    DriftResult,
    FeatureDrift,
)
from functions.shared.html_page import escape as _e
from functions.shared.html_page import num as _num
from functions.shared.html_page import page

_LEVEL_COLOURS = {"none": "#2e7d32", "moderate": "#ef6c00", "major": "#c62828"}
_UNSCORED_COLOUR = "#757575"
_EXPECTED_FILL = "#b0bec5"
_ACTUAL_FILL = "#1565c0"
_STATUS_TEXT = {
    "scored": "scored",
    "insufficient_data": "insufficient data",
    "missing_column": "no live values",
    "no_baseline": "no baseline",
}
_MAX_LABEL = 28


def report_json(result: DriftResult) -> bytes:
    """The result as JSON, keys in the models' field order (``DriftResult.model_validate_json``
    reads it back)."""
    return result.model_dump_json(indent=2).encode() + b"\n"


def _pvalue(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1e-12:
        return "&lt; 1e-12"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def _badge(feature: FeatureDrift) -> str:
    if feature.level is None:
        return (
            f'<span class="badge" style="background:{_UNSCORED_COLOUR}">'
            f"{_e(_STATUS_TEXT[feature.status])}</span>"
        )
    return (
        f'<span class="badge" style="background:{_LEVEL_COLOURS[feature.level]}">'
        f"{_e(feature.level)}</span>"
    )


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"


def bar_chart_svg(feature: FeatureDrift) -> str:
    """Horizontal bars, one row per bin: training share (grey) above live share (blue)."""
    label_w, bar_w, value_w, row_h, top = 210, 340, 130, 26, 30
    width = label_w + bar_w + value_w
    height = top + row_h * len(feature.bins) + 6
    peak = max([b.expected for b in feature.bins] + [b.actual for b in feature.bins] + [1e-9])
    scale = bar_w / peak
    name = _e(feature.feature)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Training and live share of each bin of {name}">',
        f'<rect x="{label_w}" y="6" width="12" height="12" fill="{_EXPECTED_FILL}"/>'
        f'<text x="{label_w + 18}" y="16">training</text>'
        f'<rect x="{label_w + 90}" y="6" width="12" height="12" fill="{_ACTUAL_FILL}"/>'
        f'<text x="{label_w + 108}" y="16">live</text>',
    ]
    for i, b in enumerate(feature.bins):
        y = top + i * row_h
        expected_w = b.expected * scale
        actual_w = b.actual * scale
        parts.append(
            f"<g><title>{_e(b.label)}: training {b.expected:.2%}, live {b.actual:.2%}</title>"
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_e(_short(b.label))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{expected_w:.1f}" height="9" '
            f'fill="{_EXPECTED_FILL}"/>'
            f'<rect x="{label_w}" y="{y + 13}" width="{actual_w:.1f}" height="9" '
            f'fill="{_ACTUAL_FILL}"/>'
            f'<text x="{label_w + bar_w + 8}" y="{y + 16}">'
            f"{b.expected:.1%} → {b.actual:.1%}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _summary_row(index: int, f: FeatureDrift) -> str:
    return (
        f'<tr><td><a href="#f{index}">{_e(f.feature)}</a></td><td>{_e(f.kind.value)}</td>'
        f'<td class="num">{_num(f.psi)}</td><td class="num">{_num(f.ks)}</td>'
        f'<td class="num">{_pvalue(f.ks_pvalue)}</td><td class="num">{f.live_count}</td>'
        f'<td class="num">{f.live_missing}</td><td>{_badge(f)}</td></tr>'
    )


def _feature_section(index: int, f: FeatureDrift) -> str:
    head = f'<section id="f{index}"><h2>{_e(f.feature)} {_badge(f)}</h2>'
    ks = f" · KS {_num(f.ks)} (p {_pvalue(f.ks_pvalue)})" if f.ks is not None else ""
    facts = (
        f"<p>{_e(f.kind.value)} · PSI {_num(f.psi)}{ks} · {f.live_count} live rows, "
        f"{f.live_missing} missing</p>"
    )
    if f.status != "scored":
        return head + f'<p class="note">{_e(f.note or _STATUS_TEXT[f.status])}</p></section>'
    note = f'<p class="note">{_e(f.note)}</p>' if f.note else ""
    unlisted = ""
    if f.unlisted_categories:
        items = "".join(
            f"<li>{_e(c)}: {share:.1%}</li>" for c, share in f.unlisted_categories.items()
        )
        unlisted = (
            "<p>Most frequent live categories the training profile does not list "
            f"(counted in {_e(OTHER_CATEGORY)}):</p><ul>{items}</ul>"
        )
    return head + facts + note + bar_chart_svg(f) + unlisted + "</section>"


def report_html(result: DriftResult) -> bytes:
    """One self-contained HTML page: overall figures, a summary table, a chart per feature."""
    title = f"Drift report — {result.dataset}"
    version = f" · version {_e(result.dataset_version)}" if result.dataset_version else ""
    overall = (
        f'<span class="badge" style="background:{_LEVEL_COLOURS[result.level]}">'
        f"{_e(result.level)}</span>"
        if result.level is not None
        else f'<span class="badge" style="background:{_UNSCORED_COLOUR}">not scored</span>'
    )
    share = "–" if result.drifted_share is None else f"{result.drifted_share:.0%}"
    cards = (
        '<div class="cards">'
        f'<div class="card">overall<b>{overall}</b></div>'
        f'<div class="card">max PSI<b>{_num(result.max_psi)}</b></div>'
        f'<div class="card">mean PSI<b>{_num(result.mean_psi)}</b></div>'
        f'<div class="card">drifted features<b>{result.drifted} of {result.scored}</b>'
        f"{share}</div>"
        f'<div class="card">live rows<b>{result.live_rows}</b></div>'
        "</div>"
    )
    table = (
        "<table><thead><tr><th>feature</th><th>kind</th><th>PSI</th><th>KS</th>"
        "<th>KS p</th><th>live rows</th><th>missing</th><th>level</th></tr></thead><tbody>"
        + "".join(_summary_row(i, f) for i, f in enumerate(result.features))
        + "</tbody></table>"
    )
    sections = "".join(_feature_section(i, f) for i, f in enumerate(result.features))
    footer = (
        "<footer><p>PSI = Σ (live − training)·ln(live / training) over the training profile's "
        f"bins (shares floored at 1e-4); level none below {PSI_MODERATE}, moderate below "
        f"{PSI_MAJOR}, major from {PSI_MAJOR}. KS is the two-sample statistic at the profile's "
        "bin edges only (a conservative, binned KS) with an asymptotic p-value. Features with "
        f"fewer than {MIN_LIVE_ROWS} live rows are not scored.</p></footer>"
    )
    return page(
        title,
        f'<h1>{_e(title)}</h1><p class="sub">live inputs against the training profile'
        f"{version}</p>{cards}{table}{sections}{footer}",
    )
