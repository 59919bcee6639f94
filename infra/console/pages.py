"""The console's pages: server-rendered HTML in the frame every sluice page shares
(functions/shared/html_page.py), readable without script, navigable by keyboard: a skip link
first, a ``nav`` of the sections, one ``main`` with one ``h1``, tables with ``th scope``.

Each function takes what the read model returned and gives the whole page's bytes. Every name and
label that came from user data goes through ``escape``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from functions.retrain.guard_store import DecisionRecord
from functions.shared.html_page import escape, num, page
from functions.shared.registry import AuditEntry, LivePointer, ModelVersion
from infra.console.read_model import DatasetRow, DriftPoint, QualityPoint

CONSOLE_STYLE = """
.skip { position: absolute; left: -999px; } .skip:focus { left: 1rem; top: 1rem;
        background: #fff; padding: .4rem .8rem; border: 2px solid #1565c0; z-index: 1; }
nav ul { list-style: none; padding: 0; display: flex; gap: 1.25rem; margin: 0 0 1rem; }
nav a, main a { color: #1565c0; } a:focus { outline: 2px solid #1565c0; outline-offset: 2px; }
.crumbs { color: #616161; margin: 0; }
.live { background: #2e7d32; } .rejected, .refused { background: #c62828; }
.retired { background: #757575; } .candidate { background: #ef6c00; }
.passed { background: #2e7d32; }
ul.reasons { margin: .2rem 0; padding-left: 1.1rem; }
time { white-space: nowrap; }
caption { text-align: left; color: #616161; padding-bottom: .3rem; } th.num { text-align: right; }
"""
# Columns of figures: their headings align right, over their numbers.
NUMERIC = frozenset(
    {"Live version", "Versions", "Live before", "Seconds", "Max PSI", "Live rows",
     "Drifted features", "Live", "Offline", "Drop", "Matched"}
)  # fmt: skip

SECTIONS = (("/", "Datasets"), ("/runs", "Runs"))


def frame(title: str, body: str, *, where: str, crumbs: str = "") -> bytes:
    """The console's page: skip link, navigation, then ``main`` holding ``body``."""
    links = "".join(f'<li><a href="{href}">{escape(text)}</a></li>' for href, text in SECTIONS)
    return page(
        f"{title} · sluice console",
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><nav aria-label="Sections"><ul>{links}</ul></nav></header>'
        f'<main id="main" tabindex="-1">{crumbs}<h1>{escape(title)}</h1>{body}</main>'
        f"<footer>sluice console, read-only, over {escape(where)}</footer>",
        extra_style=CONSOLE_STYLE,
    )


def dataset_href(dataset: str, *rest: str) -> str:
    return "/".join(["/datasets", quote(dataset, safe=""), *rest])


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "–"
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return escape(moment)
    return f'<time datetime="{escape(moment.isoformat())}">{moment:%Y-%m-%d %H:%M:%S}</time>'


def _table(caption: str, headings: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="note">{escape(empty)}</p>'
    head = "".join(
        f'<th scope="col" class="num">{escape(h)}</th>'
        if h in NUMERIC
        else f'<th scope="col">{escape(h)}</th>'
        for h in headings
    )
    return (
        f"<table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _badge(word: str | None) -> str:
    return "–" if not word else f'<span class="badge {escape(word)}">{escape(word)}</span>'


def _reasons(reasons: list[str]) -> str:
    if not reasons:
        return "–"
    return '<ul class="reasons">' + "".join(f"<li>{escape(r)}</li>" for r in reasons) + "</ul>"


def index_page(rows: list[DatasetRow], *, where: str) -> bytes:
    body = []
    for row in rows:
        live = row.live
        metric = f"{escape(live.metric)} {num(live.metric_value, 4)}" if live else "–"
        state = "retired" if row.retired else ("serving" if live else "no live model")
        body.append(
            f'<tr><th scope="row"><a href="{dataset_href(row.dataset)}">'
            f"{escape(row.dataset)}</a></th>"
            f'<td class="num">{live.version if live else "–"}</td><td>{metric}</td>'
            f'<td class="num">{row.versions}</td><td>{escape(state)}</td></tr>'
        )
    table = _table(
        "Every dataset in the registry, with its live model version and that version's metric",
        ["Dataset", "Live version", "Metric (test split)", "Versions", "State"],
        body,
        "No dataset has a model version yet: upload a contract and data to start one.",
    )
    return frame("Datasets", table, where=where)


def dataset_page(
    dataset: str,
    versions: list[ModelVersion],
    live: LivePointer | None,
    audit: list[AuditEntry],
    *,
    where: str,
) -> bytes:
    links = " · ".join(
        f'<a href="{dataset_href(dataset, part)}">{escape(text)}</a>'
        for part, text in (
            ("runs", "Runs"),
            ("drift", "Drift and quality"),
            ("retraining", "Retraining decisions"),
        )
    )
    rows = []
    for v in reversed(versions):
        figures = ", ".join(
            f"{escape(k)} {num(value, 4) if isinstance(value, float) else escape(value)}"
            for k, value in v.summary.items()
            if isinstance(value, (int, float, str)) and not isinstance(value, bool)
        )
        report = dataset_href(dataset, "versions", str(v.version), "report")
        rows.append(
            f'<tr><th scope="row"><a href="{dataset_href(dataset, "versions", str(v.version))}">'
            f"v{v.version}</a></th><td>{_badge(v.status.value)}</td><td>{_badge(v.gate)}</td>"
            f"<td>{escape(v.metric)} {num(v.metric_value, 4)}</td><td>{figures or '–'}</td>"
            f"<td>{_when(v.created_at)}</td>"
            f'<td><a href="{report}">model report<span class="note"> of v{v.version}</span></a>'
            "</td></tr>"
        )
    live_line = (
        f"Live: version {live.version} (generation {live.generation}, since "
        f"{_when(live.updated_at)})"
        if live
        else "No live model."
    )
    body = (
        f'<p class="sub">{live_line}</p><p>{links}</p><h2>Model versions</h2>'
        + _table(
            f"Model versions of {dataset}, newest first",
            ["Version", "Status", "Gate", "Metric", "Figures", "Created", "Report"],
            rows,
            "No model versions.",
        )
        + "<h2>Audit trail</h2>"
        + audit_table(dataset, audit)
    )
    return frame(dataset, body, where=where, crumbs=_crumbs(("Datasets", "/")))


def audit_table(dataset: str, audit: list[AuditEntry]) -> str:
    rows = [
        f"<tr><td>{_when(a.at)}</td><td>{escape(a.action)}</td>"
        f"<td>{'–' if a.version is None else a.version}</td>"
        f'<td class="num">{"–" if a.previous_live is None else a.previous_live}</td>'
        f"<td>{escape(a.actor)}</td><td>{escape(a.reason)}</td></tr>"
        for a in audit
    ]
    return _table(
        f"Promotions, rollbacks and every other change to {dataset}'s models, oldest first",
        ["When", "Action", "Version", "Live before", "By", "Why"],
        rows,
        "No audit entries.",
    )


def version_page(dataset: str, v: ModelVersion, *, where: str) -> bytes:
    facts = [
        (
            "Status",
            _badge(v.status.value) + (f" {escape(v.status_reason)}" if v.status_reason else ""),
        ),
        ("Gate", _badge(v.gate)),
        ("Gate's reasons", _reasons(v.gate_reasons)),
        ("Metric", f"{escape(v.metric)} {num(v.metric_value, 4)}"),
        ("Run", f'<a href="/runs/{quote(v.run_name, safe="")}">{escape(v.run_name)}</a>'),
        ("Dataset version", escape(v.dataset_version)),
        ("Created", _when(v.created_at)),
        ("Model", escape(v.model_uri)),
        ("Model card", escape(v.card_uri)),
        ("Evaluation", escape(v.report_uri)),
        ("SHA-256", f"<code>{escape(v.sha256)}</code>"),
    ]
    facts += [(f"Summary: {k}", escape(value)) for k, value in v.summary.items()]
    rows = "".join(
        f'<tr><th scope="row">{escape(k)}</th><td>{value}</td></tr>' for k, value in facts
    )
    report = dataset_href(dataset, "versions", str(v.version), "report")
    body = (
        f'<p><a href="{report}">Open the model report</a></p>'
        f"<table><caption>Model version {v.version} of {escape(dataset)}</caption>"
        f"<tbody>{rows}</tbody></table>"
    )
    crumbs = _crumbs(("Datasets", "/"), (dataset, dataset_href(dataset)))
    return frame(f"{dataset} v{v.version}", body, where=where, crumbs=crumbs)


def runs_page(runs: list[dict[str, Any]], *, dataset: str | None, where: str, note: str) -> bytes:
    rows = []
    for run in runs:
        decision = run.get("decision") or {}
        rows.append(
            f'<tr><th scope="row"><a href="/runs/{quote(str(run["name"]), safe="")}">'
            f"{escape(run['name'])}</a></th>"
            f"<td>{escape(run.get('dataset') or '–')}</td><td>{escape(run.get('status'))}</td>"
            f"<td>{_when(run.get('started_at'))}</td>"
            f'<td class="num">{num(run.get("seconds"), 1)}</td>'
            f"<td>{escape(' → '.join(run.get('path') or []))}</td>"
            f"<td>{escape(decision.get('kind') or '–')}</td></tr>"
        )
    title = f"Runs of {dataset}" if dataset else "Runs"
    body = f'<p class="note">{escape(note)}</p>' + _table(
        "Pipeline runs, newest first: the states each went through and the gate's decision",
        ["Run", "Dataset", "Status", "Started", "Seconds", "State path", "Decision"],
        rows,
        "No runs yet.",
    )
    crumbs = _crumbs(("Datasets", "/"), (dataset, dataset_href(dataset))) if dataset else ""
    return frame(title, body, where=where, crumbs=crumbs)


def run_page(run: dict[str, Any], version: ModelVersion | None, *, where: str) -> bytes:
    decision = run.get("decision") or {}
    reasons = decision.get("reasons")
    if reasons is None and version is not None:
        reasons = version.gate_reasons
    timings = [
        f'<tr><th scope="row">{escape(state)}</th><td class="num">{num(seconds, 3)}</td></tr>'
        for state, seconds in (run.get("states_seconds") or {}).items()
    ]
    dataset = run.get("dataset")
    facts = [
        ("Dataset", f'<a href="{dataset_href(dataset)}">{escape(dataset)}</a>' if dataset else "–"),
        ("Status", escape(run.get("status"))),
        ("Started", _when(run.get("started_at"))),
        ("Seconds", num(run.get("seconds"), 1)),
        ("State path", escape(" → ".join(run.get("path") or []))),
        ("Decision", escape(decision.get("kind") or (version.gate if version else None) or "–")),
        ("Gate's reasons", _reasons(list(reasons or []))),
    ]
    if version is not None:
        href = dataset_href(version.dataset, "versions", str(version.version))
        facts.append(("Model version", f'<a href="{href}">v{version.version}</a>'))
    failure = run.get("failure") or {}
    if failure:
        facts.append(("Failed in", escape(f"{failure.get('state')}: {failure.get('message')}")))
    rows = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{v}</td></tr>' for k, v in facts)
    body = (
        f"<table><caption>Run {escape(run['name'])}</caption><tbody>{rows}</tbody></table>"
        "<h2>Time in each state</h2>"
        + _table(
            "Seconds spent in each state, in order", ["State", "Seconds"], timings, "No timings."
        )
    )
    crumbs = _crumbs(("Runs", "/runs"))
    return frame(f"Run {run['name']}", body, where=where, crumbs=crumbs)


def drift_page(
    dataset: str, drift: list[DriftPoint], quality: list[QualityPoint], *, where: str
) -> bytes:
    drift_rows = [
        f'<tr><th scope="row"><a href="{dataset_href(dataset, "drift", p.stamp)}">'
        f"{_when(p.at)}</a></th><td>{escape(p.level or '–')}</td>"
        f'<td class="num">{num(p.max_psi)}</td>'
        f'<td class="num">{"–" if p.drifted is None else p.drifted}</td>'
        f'<td class="num">{"–" if p.live_rows is None else p.live_rows}</td></tr>'
        for p in reversed(drift)
    ]
    quality_rows = [
        f"<tr><td>{_when(q.at)}</td>"
        f"<td>{'–' if q.model_version is None else q.model_version}</td>"
        f'<td>{escape(q.metric or "–")}</td><td class="num">{num(q.value, 4)}</td>'
        f'<td class="num">{num(q.offline_value, 4)}</td><td class="num">{num(q.drop, 4)}</td>'
        f'<td class="num">{q.matched}</td></tr>'
        for q in reversed(quality)
    ]
    body = (
        "<h2>Drift</h2>"
        + series_figure(
            "Largest feature PSI per drift report",
            [(p.at, p.max_psi) for p in drift],
        )
        + _table(
            "Drift reports, newest first: each links to its page",
            ["Measured", "Level", "Max PSI", "Drifted features", "Live rows"],
            drift_rows,
            "No drift reports yet: the drift job writes one when the live model has traffic.",
        )
        + "<h2>Live quality</h2>"
        + series_figure("Live metric per quality report", [(q.at, q.value) for q in quality])
        + _table(
            "Live quality from feedback, newest first",
            ["Measured", "Version", "Metric", "Live", "Offline", "Drop", "Matched"],
            quality_rows,
            "No quality reports yet: they need feedback on predictions.",
        )
    )
    crumbs = _crumbs(("Datasets", "/"), (dataset, dataset_href(dataset)))
    return frame(f"Drift and quality of {dataset}", body, where=where, crumbs=crumbs)


def series_figure(title: str, points: list[tuple[datetime | None, float | None]]) -> str:
    """A small inline SVG line of ``points`` in time order; nothing when fewer than two."""
    values = [(at, v) for at, v in points if at is not None and v is not None]
    if len(values) < 2:
        return ""
    width, height, pad = 600, 140, 30
    low, high = min(v for _, v in values), max(v for _, v in values)
    span = (high - low) or 1.0
    step = (width - 2 * pad) / (len(values) - 1)
    xy = [
        (pad + i * step, height - pad - (v - low) / span * (height - 2 * pad))
        for i, (_, v) in enumerate(values)
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    return (
        f'<figure><svg role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{line}"/>'
        f'<text x="{pad}" y="15">{escape(num(high))}</text>'
        f'<text x="{pad}" y="{height - 8}">{escape(num(low))}</text></svg>'
        f"<figcaption>{escape(title)}</figcaption></figure>"
    )


def retraining_page(dataset: str, decisions: list[DecisionRecord], *, where: str) -> bytes:
    rows = [
        f"<tr><td>{_when(d.at)}</td><td>{escape(d.outcome)}</td><td>{escape(d.guard or '–')}</td>"
        f"<td>{escape(d.source or '–')}</td><td>{escape(d.reason)}</td>"
        f"<td>{escape(d.run_name or '–')}</td></tr>"
        for d in decisions
    ]
    body = _table(
        f"The retrain guard's decisions for {dataset}, newest first",
        ["When", "Outcome", "Guard", "Trigger", "Why", "Run"],
        rows,
        "No retraining decisions yet.",
    )
    crumbs = _crumbs(("Datasets", "/"), (dataset, dataset_href(dataset)))
    return frame(f"Retraining decisions for {dataset}", body, where=where, crumbs=crumbs)


def error_page(status: int, message: str, *, where: str) -> bytes:
    titles = {
        404: "Not found",
        405: "Method not allowed",
        421: "Misdirected request",
        500: "The console failed",
    }
    body = f'<p>{escape(message)}</p><p><a href="/">Back to the datasets</a></p>'
    return frame(titles.get(status, f"Error {status}"), body, where=where)


def _crumbs(*links: tuple[str, str]) -> str:
    items = " › ".join(f'<a href="{href}">{escape(text)}</a>' for text, href in links)
    return f'<p class="crumbs">{items}</p>'
