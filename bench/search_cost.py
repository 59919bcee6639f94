"""The search budget's rates: what a fit costs in reference seconds, fitted to this machine.

``python -m bench.search_cost`` (bench.quality's tables; ``--only NAME,...``, ``--budget S``,
``--json PATH`` keeps every fit). The search counts its budget in work, not wall-clock seconds
(``functions/training/search.py``: ``a + b * steps * leaves + c * units`` per fit,
``search.COST``; steps are trees built or solver iterations, leaves a tree's at most, units rows
x graph inputs x steps), so that the same
data, seed and budget give the same trials anywhere. This runs sluice's training on real
tables, keeps every fit's steps, units and wall seconds, and fits the three rates per family by
non-negative least squares. Run it on a quiet machine: the rates it prints are the ones to put
in ``search.COST`` when the reference machine changes. It also prints what the rates in
search.py charged against the wall seconds per family, and per table what the fitted rates
would charge.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import nnls

import functions.training.train as train_module
from bench.quality import DATASETS, contract_metric, holdout, prepare, run_sluice
from functions.training import search
from functions.training.script_mode import CandidateName
from functions.training.search import FitCost, Searcher

DEFAULT_BUDGET = 15


class _Recording(Searcher):
    """The Searcher train() uses, keeping itself so its ``fits`` can be read afterwards."""

    made: ClassVar[list[Searcher]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _Recording.made.append(self)


def collect(names: Sequence[str], budget: int) -> list[tuple[str, FitCost]]:
    """Every fit the search made on each table, with the table's name."""
    fits: list[tuple[str, FitCost]] = []
    setattr(train_module, "Searcher", _Recording)  # noqa: B010
    try:
        for spec in DATASETS:
            if spec.name not in names:
                continue
            frame = prepare(spec)
            classes = int(frame[spec.target].nunique()) if spec.task == "classification" else 0
            received, test = holdout(frame, spec)
            run_sluice(spec, contract_metric(spec.task, classes), received, test, budget)
            fits.extend((spec.name, fit) for fit in _Recording.made[-1].fits)
            print(f"… {spec.name}: {len(_Recording.made[-1].fits)} fits", flush=True)
    finally:
        setattr(train_module, "Searcher", Searcher)  # noqa: B010
    return fits


def fit_rates(fits: Sequence[FitCost]) -> dict[CandidateName, tuple[float, float, float]]:
    """Per family, ``search.COST``'s (seconds per fit, per leaf, per unit): non-negative least
    squares of ``wall``, each fit weighted by 1 / (0.1 s + its wall seconds) so that the many
    short fits of small tables count as much as the few long ones of large tables."""
    by_name: dict[CandidateName, list[FitCost]] = defaultdict(list)
    for fit in fits:
        by_name[fit.name].append(fit)
    rates = {}
    for name, group in by_name.items():
        wall = np.array([f.wall for f in group])
        design = np.array([[1.0, max(1, f.steps) * f.leaves, f.units] for f in group])
        weight = 1.0 / (0.1 + wall)
        solved, _ = nnls(design * weight[:, None], wall * weight)
        rates[name] = (float(solved[0]), float(solved[1]), float(solved[2]))
    return rates


def _by_table(
    group: Sequence[tuple[str, FitCost]], rate: tuple[float, float, float]
) -> list[tuple[str, float, float]]:
    """Per table: the family's wall seconds and what ``rate`` would have charged for them."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for table, fit in group:
        totals[table][0] += fit.wall
        totals[table][1] += rate[0] + rate[1] * max(1, fit.steps) * fit.leaves + rate[2] * fit.units
    return [(table, wall, charged) for table, (wall, charged) in totals.items()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated dataset names (default: all)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="training budget, s")
    parser.add_argument("--json", type=Path, help="also write every fit here")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else [s.name for s in DATASETS]
    labelled = collect(names, args.budget)
    fits = [fit for _, fit in labelled]
    print(f"{'family':<9} {'fits':>5} {'wall s':>8} {'charged s':>9} {'ratio':>6}")
    for name in sorted({f.name for f in fits}):
        group = [f for f in fits if f.name == name]
        wall, charged = sum(f.wall for f in group), sum(f.cost for f in group)
        print(f"{name:<9} {len(group):>5} {wall:>8.1f} {charged:>9.1f} {charged / wall:>6.2f}")
    print("fitted here (search.COST: per fit, per tree leaf, per unit):")
    rates = fit_rates(fits)
    for family, (fixed, step, unit) in sorted(rates.items()):
        print(f"  {family!r}: ({fixed:.3g}, {step:.3g}, {unit:.3g}),  now {search.COST[family]}")
        tables = [(table, f) for table, f in labelled if f.name == family]
        for label, wall, charged in _by_table(tables, rates[family]):
            print(f"    {label:<34} wall {wall:7.1f} s  would charge {charged:7.1f} s")
    if args.json:
        args.json.write_text(json.dumps([{"table": t, **asdict(f)} for t, f in labelled]))


if __name__ == "__main__":
    main()
