"""Deduplication within a file, as its rows grow: ``cleaning.Deduplicator`` over random 64-bit
row hashes in 4 MB-sized batches (50 000 rows), against the way it worked before 2026-12-04
(the peer: one sorted array, searched row by row in file order and merged with every batch).

``python -m bench.dedup [--quick] [--json]``: 3.75 M rows (a 300 MB churn file) and 12.5 M rows
(1 GB); ``--quick`` only the first. Not in ``make bench``: the preprocess benchmark measures the
whole upload; this isolates the part that grows faster than linearly with a file's rows, which
the processing route's multi-GB files need.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.report import Figure, Section, run_cli
from functions.preprocess.cleaning import Deduplicator

BATCH_ROWS = 50_000
SIZES = (3_750_000, 12_500_000)


class OneArray:
    """The deduplicator before 2026-12-04, kept here as the peer."""

    def __init__(self) -> None:
        self.seen = np.empty(0, dtype=np.uint64)

    def fresh(self, hashes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        _, first = np.unique(hashes, return_index=True)
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first] = True
        if self.seen.size:
            at = np.minimum(np.searchsorted(self.seen, hashes), self.seen.size - 1)
            mask &= self.seen[at] != hashes
        merged = np.concatenate([self.seen, np.sort(hashes[mask])])
        merged.sort(kind="stable")
        self.seen = merged
        return mask


def timed(make: Any, batches: list[np.ndarray[Any, Any]]) -> float:
    dedup = make()
    started = time.perf_counter()
    for batch in batches:
        dedup.fresh(batch)
    _ = dedup.seen
    return time.perf_counter() - started


def measure(quick: bool = False) -> Section:
    section = Section("dedup", "deduplication within one file, as its rows grow")
    rng = np.random.default_rng(0)
    for rows in SIZES[:1] if quick else SIZES:
        batches = [
            rng.integers(0, 2**63, BATCH_ROWS, dtype=np.uint64) for _ in range(rows // BATCH_ROWS)
        ]
        mine, before = timed(Deduplicator, batches), timed(OneArray, batches)
        section.add(
            Figure(
                f"{rows / 1e6:.2f} M rows in {len(batches)} batches",
                "s",
                mine,
                peer=before,
                better="lower",
                note="peer: the deduplicator before 2026-12-04",
            )
        )
    return section


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
