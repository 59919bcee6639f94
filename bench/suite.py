"""``make bench``: every benchmark, each in its own fresh process, then one table and
``bench/results.json``.

``python -m bench.suite [--only predict,coldstart] [--quick]``. A module that fails or overruns
its time is reported as such and the others still run; the exit status says whether all ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.report import Section, dump, render

RESULTS = Path(__file__).with_name("results.json")
# name → seconds it may take. The whole suite stays under 10 minutes on 2 cores; size's limit
# leaves room for building the layers on a fresh checkout (≈ 3 min once, then cached in .build/).
MODULES: dict[str, int] = {
    "predict": 120,
    "explain": 240,
    "coldstart": 120,
    "calibration": 60,
    "model_report": 120,
    "size": 300,
    "http": 120,
    "preprocess": 180,
    "training": 240,
    "pipeline": 120,
    "quality": 420,
}


def run_module(name: str, quick: bool, timeout: int) -> Section | str:
    """One benchmark in a fresh interpreter (imports and caches of one cannot help another);
    its section, or why there is none."""
    command = [sys.executable, "-m", f"bench.{name}", "--json"] + (["--quick"] if quick else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s"
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        return f"exit {done.returncode}: {tail}"
    return Section.from_json(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated modules (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {list(MODULES)}")
    started = time.perf_counter()
    sections: list[Section] = []
    failed: list[str] = []
    for name in names:
        print(f"… {name}", file=sys.stderr, flush=True)
        outcome = run_module(name, args.quick, MODULES[name])
        if isinstance(outcome, str):
            failed.append(name)
            print(f"== {name}: {outcome}\n", flush=True)
            continue
        sections.append(outcome)
        print(render(outcome) + "\n", flush=True)
    if not args.only:  # a partial run does not replace the recorded figures
        RESULTS.write_text(dump(sections) + "\n")
        print(f"written: {RESULTS}")
    print(f"suite seconds: {time.perf_counter() - started:.0f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
