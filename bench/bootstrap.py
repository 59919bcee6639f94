"""Time the gate's bootstrap interval: ``python -m bench.bootstrap [--rows N]``.

One ``bootstrap_interval`` call per metric on a synthetic test split of ``--rows`` rows (default
150 000): what evaluate spends per model (it calls it for the challenger and the champion).
Prints the resamples the budget allows, CPU seconds (the cost, less sensitive to a busy machine)
and wall seconds. Binary ROC AUC is timed with continuous scores (no ties) and with scores
rounded to two decimals (tie groups); the multiclass one with five classes (one pass per class).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from functions.shared.metrics import bootstrap_interval, bootstrap_resamples


def _time(name: str, label: str, y: Any, **scores: Any) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    interval = bootstrap_interval(name, y, **scores)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    shown = "none" if interval is None else f"{interval.low:.4f}–{interval.high:.4f}"
    resamples = interval.resamples if interval else "-"
    print(f"{label:<26} {resamples!s:>9} {cpu:>8.2f} {wall:>8.2f}   {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    rows = parser.parse_args().rows
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, rows)
    s = np.clip(0.3 * y + 0.7 * rng.random(rows), 0, 1)
    binary = np.stack([1 - s, s], axis=1)
    k = 5
    y5 = rng.integers(0, k, rows)
    five = rng.dirichlet(np.ones(k), rows)
    target = rng.normal(0, 1, rows)
    pred = target + rng.normal(0, 0.5, rows)
    print(f"{rows} test rows, {bootstrap_resamples(rows)} resamples by the budget")
    print(f"{'metric':<26} {'resamples':>9} {'cpu s':>8} {'wall s':>8}   95% interval")
    _time("roc_auc", "roc_auc binary", y, proba=binary)
    _time("roc_auc", "roc_auc binary, tied", y, proba=np.round(binary, 2))
    _time("roc_auc", f"roc_auc {k} classes", y5, proba=five)
    for name in ("accuracy", "f1_macro", "log_loss"):
        _time(name, name, y, proba=binary)
    for name in ("rmse", "r2"):
        _time(name, name, target, pred=pred)


if __name__ == "__main__":
    main()
