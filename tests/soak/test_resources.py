"""Bounded resources (issue 16, ``make soak``): ``sluice up`` with a ~1 GB dataset loaded,
uploads that train spread over the period and steady prediction traffic keeps its disk
(deleted-but-open files included), open file descriptors and RSS flat after warm-up.

The mechanism is bench/soak.py's, the same as ``python -m bench.soak --seconds 3600``; only the
period is shorter: ``SLUICE_SOAK_SECONDS`` (default 600). Writing the 1 GB CSV takes about
5 minutes here; ``SLUICE_SOAK_DATASET=/path/bulk.csv`` keeps it there for the next run. ``-s``
prints the samples and the verdict.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.soak import MAX_GROWTH, soak

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("SLUICE_SOAK_SECONDS", "600"))
DATASET = os.environ.get("SLUICE_SOAK_DATASET")


def test_an_hour_of_sluice_up_with_a_gigabyte_loaded_keeps_disk_fds_and_memory_flat() -> None:
    # Given sluice up with a 1 GB object in its raw bucket, a live model and a client predicting
    # When 10 uploads, each starting a run, arrive spread over the period
    report = soak(SECONDS, dataset_file=Path(DATASET) if DATASET else None)
    print(f"\n{report.table()}\n{report.verdict()}")
    # Then every upload ran to its end and no prediction failed
    assert report.dataset_bytes > 0.95e9
    assert len(report.uploads) == 10 and not report.failed_uploads, report.uploads
    assert report.predictions[200] > 0 and report.prediction_errors == 0, dict(
        report.prediction_failures
    )
    # And from warm-up to the end, no figure of the stack grew more than 10 %
    for growth in report.growth():
        assert growth.flat, f"{growth.what}: {growth.baseline:.1f} → {growth.end:.1f}"
        assert growth.end <= growth.baseline * (1 + MAX_GROWTH)
