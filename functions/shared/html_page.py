"""What sluice's HTML pages share (the drift report, the model report): one stylesheet, escaping,
number formatting and the page frame.

Pages are self-contained: no script, no stylesheet, font or image to fetch; figures are inline
SVG. Names and labels come from user data, so every one goes through :func:`escape`.
"""

from __future__ import annotations

import html

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212121;
       margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.sub { color: #616161; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e0e0e0; }
th { background: #fafafa; font-weight: 600; } td.num { text-align: right;
     font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: .75rem; color: #fff;
         font-size: .85em; font-weight: 600; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.card { border: 1px solid #e0e0e0; border-radius: .5rem; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.3rem; }
section { border-top: 1px solid #eeeeee; } .note { color: #616161; }
footer { color: #757575; font-size: .85em; margin-top: 3rem; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", sans-serif; fill: #424242; }
"""


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def page(title: str, body: str, *, extra_style: str = "") -> bytes:
    """A whole page: ``title`` is escaped here, ``body`` is HTML the caller escaped."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}{extra_style}</style></head><body>"
        f"{body}</body></html>\n"
    ).encode()
