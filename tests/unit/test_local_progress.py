"""The local stack's progress sink, which ``sluice up``'s console, ``sluice demo``'s output and
``sluice status`` all read: a line and a record per step and dataset every few seconds, never a
flood, the first and the last always."""

from __future__ import annotations

import json
from pathlib import Path

from functions.shared.progress import Progress, report_progress, route_progress
from infra.local.stack import PROGRESS_FILE, LocalStack, StackConfig


def _record(done: int, dataset: str = "churn") -> Progress:
    return Progress(
        step="train", dataset=dataset, run="churn-1", done=done, total=3, unit="candidates",
        detail=f"{done} of 3 candidates fitted", elapsed_seconds=float(done),
    )  # fmt: skip


def test_progress_is_a_console_line_and_a_record_every_few_seconds_first_and_last_always(
    tmp_path: Path,
) -> None:
    # Given a stack (not started) whose progress sink is routed, as start() routes it
    lines: list[str] = []
    stack = LocalStack(StackConfig(state_dir=tmp_path), log=lines.append)
    route_progress(stack._progress)
    try:
        # When a step reports four times in quick succession, and another dataset once
        for done in (0, 1, 2):
            report_progress(_record(done))
        report_progress(_record(0, dataset="houses"))
        report_progress(_record(3))
    finally:
        route_progress(None)
    # Then the first of each dataset and the finishing record are shown and kept, not the rest
    assert lines == [
        "train    churn: 0 of 3 candidates fitted (0 s)",
        "train    houses: 0 of 3 candidates fitted (0 s)",
        "train    churn: 3 of 3 candidates fitted (3 s)",
    ]
    kept = [json.loads(line) for line in (tmp_path / PROGRESS_FILE).read_text().splitlines()]
    assert [(r["dataset"], r["done"]) for r in kept] == [("churn", 0), ("houses", 0), ("churn", 3)]
    assert kept[0]["run"] == "churn-1" and kept[0]["at"]


def test_a_line_that_repeats_the_one_before_is_not_shown_again(tmp_path: Path) -> None:
    # Given a stack whose progress sink is routed
    lines: list[str] = []
    stack = LocalStack(StackConfig(state_dir=tmp_path), log=lines.append)
    route_progress(stack._progress)
    try:
        # When a small file is read in one block: its first record is also its last, reported
        # twice, and the next run of the same step starts again
        report_progress(_record(3))
        report_progress(_record(3))
        report_progress(_record(0))
    finally:
        route_progress(None)
    # Then the finished line is shown once, and the next run's first record is shown
    assert lines == [
        "train    churn: 3 of 3 candidates fitted (3 s)",
        "train    churn: 0 of 3 candidates fitted (0 s)",
    ]
