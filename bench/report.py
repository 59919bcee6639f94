"""What every benchmark reports, and how the suite prints and stores it.

A benchmark module (``bench/<name>.py``) exposes ``measure(quick: bool = False) -> Section`` and a
``main()`` that prints its own section (``python -m bench.<name>``). A ``Section`` holds
``Figure`` rows: sluice's value, the peer's (what a user would build instead) and the floor
(the physical limit), each with its unit, and the target with whether it was met. Ratios are
computed here, one way: ``sluice / floor`` and ``peer / sluice`` (how many times sluice beats
the peer), so that absolute times, which drift on a shared machine, matter less than they do.

``bench/suite.py`` (``make bench``) runs every module in its own process, prints the sections
and writes them all to ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Figure:
    what: str  # "warm predict, 1 row (median)"
    unit: str  # "µs", "s", "MB", "MB/s", "req/s"
    sluice: float | None  # None: not measured here (the note says why)
    peer: float | None = None
    floor: float | None = None
    better: Better = "lower"  # lower is better for times and sizes, higher for throughput
    target: str | None = None  # "≤ 5× floor", "≤ 0.6 s", ...
    met: bool | None = None  # None when the figure has no target
    note: str | None = None  # what the peer/floor are, or why a target is not met

    @property
    def vs_floor(self) -> float | None:
        """How far from the floor: ×1 is the floor, larger is worse, for either direction."""
        if self.floor is None or not self.sluice or self.floor == 0:
            return None
        return self.sluice / self.floor if self.better == "lower" else self.floor / self.sluice

    @property
    def vs_peer(self) -> float | None:
        """How many times better than the peer (> 1: sluice wins)."""
        if self.peer is None or not self.sluice or self.peer == 0:
            return None
        return self.peer / self.sluice if self.better == "lower" else self.sluice / self.peer

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "vs_floor": self.vs_floor, "vs_peer": self.vs_peer}


@dataclass
class Section:
    name: str  # "predict", "coldstart", ...
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping
    seconds: float = 0.0  # how long the benchmark took

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "figures": [f.to_json() for f in self.figures],
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Section:
        figures = [
            Figure(**{k: v for k, v in f.items() if k not in ("vs_floor", "vs_peer")})
            for f in data["figures"]
        ]
        return cls(data["name"], data["title"], figures, data.get("details", {}), data["seconds"])


def render(section: Section) -> str:
    """A section as a text table: value, peer, floor, ratios, target."""
    lines = [f"== {section.title} ({section.seconds:.0f} s)"]
    header = (
        f"  {'':<44} {'sluice':>10} {'peer':>10} {'floor':>10} {'vs floor':>9} {'vs peer':>8}"
        "  target"
    )
    lines.append(header)
    for f in section.figures:
        verdict = "" if f.met is None else (" met" if f.met else " MISSED")
        lines.append(
            f"  {f.what[:44]:<44} {_num(f.sluice, f.unit):>10} {_num(f.peer, f.unit):>10} "
            f"{_num(f.floor, f.unit):>10} {_ratio(f.vs_floor):>9} {_ratio(f.vs_peer):>8}"
            f"  {f.target or ''}{verdict}"
        )
        if f.note:
            lines.append(f"  {'':<44} {f.note}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def dump(sections: list[Section]) -> str:
    return json.dumps({"machine": machine(), "sections": [s.to_json() for s in sections]}, indent=2)


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def markdown(sections: list[Section]) -> str:
    """The sections as one Markdown table, for the README (``python -m bench.report``)."""
    lines = [
        "| benchmark | figure | sluice | peer | floor | vs floor | vs peer | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for section in sections:
        for f in section.figures:
            verdict = "" if f.met is None else (" ✓" if f.met else " ✗")
            cells = (
                section.name,
                f.what.strip(),
                _num(f.sluice, f.unit),
                _num(f.peer, f.unit),
                _num(f.floor, f.unit),
                _ratio(f.vs_floor),
                _ratio(f.vs_peer),
                f"{f.target or ''}{verdict}",
            )
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def run_cli(measure: Callable[[bool], Section], argv: Sequence[str] | None = None) -> None:
    """A benchmark module's ``main``: ``--quick`` for smaller inputs, ``--json`` for the suite
    (the section as the last line of stdout), else the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--json", action="store_true", help="print the section as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    section = measure(args.quick)
    section.seconds = time.perf_counter() - started
    print(json.dumps(section.to_json()) if args.json else render(section), flush=True)


if __name__ == "__main__":  # the README's table from the recorded figures
    from pathlib import Path

    recorded = json.loads(Path(__file__).with_name("results.json").read_text())
    print(f"{recorded['machine']}\n")
    print(markdown([Section.from_json(section) for section in recorded["sections"]]))


def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run ``bench.<module>.child(*args)`` in a fresh interpreter (so its peak RSS and imports
    are its own) and return the JSON object its last output line holds."""
    code = f"import sys; from bench.{module} import child; child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {args[0]} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
