"""The soak's sampler (bench/soak.py) reads what it claims from /proc: a process's deleted but
open files and their bytes, its descendants, and a verdict that calls growth growth."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.soak import ProcessFigures, Sample, SoakReport, descendants, process_figures

MIB = 1 << 20

# A child that opens a 3 MiB file, deletes it, keeps it open, and starts a grandchild.
HOLDER = """
import os, subprocess, sys, tempfile
fd, path = tempfile.mkstemp()
os.write(fd, b"x" * (3 << 20))
os.unlink(path)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(grandchild.pid, flush=True)
sys.stdin.read()
grandchild.kill()
"""


@pytest.fixture
def holder() -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # not pytest's capture file, itself deleted but open
        text=True,
    )
    assert process.stdout is not None
    grandchild = int(process.stdout.readline())
    try:
        yield process, grandchild
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def test_a_deleted_but_open_file_is_counted_with_its_bytes(
    holder: tuple[subprocess.Popen[str], int],
) -> None:
    process, _ = holder
    figures = process_figures(process.pid)
    assert figures.deleted_files == 1
    assert figures.deleted_bytes == 3 * MIB
    assert figures.fds >= 4  # stdin, stdout, stderr, the held file
    assert figures.rss_bytes > MIB


def test_descendants_include_grandchildren(holder: tuple[subprocess.Popen[str], int]) -> None:
    process, grandchild = holder
    assert grandchild in descendants(process.pid)
    assert process.pid not in descendants(process.pid)


def test_an_ended_process_counts_as_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    time.sleep(0.1)
    assert process_figures(gone.pid) == ProcessFigures()


def _sample(seconds: float, rss_mib: float, fds: int, deleted_mib: float) -> Sample:
    return Sample(
        seconds=seconds,
        stack=ProcessFigures(int(rss_mib * MIB), fds, 1, int(deleted_mib * MIB)),
        children=0,
        children_figures=ProcessFigures(),
        state_bytes=0,
        tmp_bytes=0,
        runs=1,
        predictions=0,
    )


def _report(samples: list[Sample]) -> SoakReport:
    return SoakReport(
        seconds=60,
        dataset_bytes=10**9,
        bulk_status="rejected",
        uploads=[{"key": "churn/data/soak-00.csv", "run_status": "SUCCEEDED"}],
        samples=samples,
        warm_index=1,
        predictions=Counter({200: 10}),
    )


def test_a_leak_in_deleted_open_bytes_fails_the_verdict_and_a_blip_does_not() -> None:
    warmup = _sample(0, 900, 30, 0)  # before warm-up: anything goes
    steady = [_sample(t, 300, 11, 1000) for t in range(1, 6)]
    blip = _sample(6, 300, 14, 1000)  # a socket open at one sample's instant
    flat = _report([warmup, *steady[:3], blip, *steady[3:]])
    assert flat.passed, flat.verdict()
    leaking = _report([warmup, *steady, *(_sample(t, 300, 11, 1000 + 60 * t) for t in range(6, 9))])
    grew = {g.what for g in leaking.growth() if not g.flat}
    assert grew == {"deleted-but-open (MiB)", "disk incl. deleted-open (MiB)"}
    assert not leaking.passed
    assert "GREW" in leaking.verdict()
