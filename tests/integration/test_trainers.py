"""Trainer processes on real processes: out of the terminal's Ctrl-C, dead with their parent, and
found and ended by a restart only when pid AND start time match (infra/local/trainers.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.trainers import TrainerRecord, end_stale_trainers, start_time
from tests.processes import gone

ROOT = Path(__file__).resolve().parents[2]
LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="/proc and PR_SET_PDEATHSIG")

# A stand-in for sluice up: starts a guarded trainer (a sleeping python), prints its pid, waits.
PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from infra.local.trainers import trainer_process
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with trainer_process(argv, job="job-1", pid_dir=Path(sys.argv[1]), env={}, cwd=Path.cwd(),
                         stdout=None, stderr=None) as trainer:
        print(trainer.pid, flush=True)
        time.sleep(60)
    """
)


def _start_parent(script: str, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """``script`` run in its own session (as a shell starts a foreground job); the pid of the
    trainer it started, as it prints it."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "trainers")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The stand-in, in its own session (as a shell starts a foreground job), and its trainer."""
    process, trainer = _start_parent(PARENT, tmp_path)
    try:
        yield process, trainer
    finally:
        for pid in (process.pid, trainer):
            if start_time(pid) is not None:
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)


@LINUX_ONLY
def test_a_trainer_dies_with_its_parent_even_by_sigkill(
    parent: tuple[subprocess.Popen[str], int],
) -> None:
    # Given a parent with a running trainer
    process, trainer = parent
    assert start_time(trainer) is not None
    # When the parent is killed with SIGKILL (no shutdown code runs)
    process.kill()
    process.wait(timeout=10)
    # Then the trainer is gone within a second
    assert gone(trainer, 1.0), f"trainer {trainer} outlived its parent"


@LINUX_ONLY
def test_a_sigint_to_the_group_leaves_the_trainer_running(tmp_path: Path) -> None:
    # Given a parent that ignores SIGINT (as sluice up's shutdown does) and its trainer
    script = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" + PARENT
    process, trainer = _start_parent(script, tmp_path)
    try:
        # When the parent's process group gets SIGINT
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.5)
        # Then the trainer is still running, and its pid file names it
        assert start_time(trainer) is not None, "the trainer took the terminal's Ctrl-C"
        record = TrainerRecord.model_validate_json(
            (tmp_path / "trainers" / "job-1.json").read_text()
        )
        assert (record.pid, record.start_time) == (trainer, start_time(trainer))
    finally:
        process.kill()
        process.wait(timeout=10)
    assert gone(trainer, 1.0)


@LINUX_ONLY
def test_a_restart_ends_a_trainer_its_pid_file_names(tmp_path: Path) -> None:
    # Given a trainer that outlived its stack (spawned without the death signal) and its pid file
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    pid_dir = tmp_path / "trainers"
    pid_dir.mkdir()
    record = TrainerRecord(pid=orphan.pid, start_time=start_time(orphan.pid), job="j", argv=[])
    (pid_dir / "j.json").write_text(record.model_dump_json())
    # When the next stack starts
    ended = end_stale_trainers(pid_dir)
    # Then the trainer was ended before it returned, and the pid file removed
    assert orphan.wait(timeout=1) == -signal.SIGKILL
    assert [(e.record.pid, e.was_alive) for e in ended] == [(orphan.pid, True)]
    assert not list(pid_dir.iterdir())


@LINUX_ONLY
def test_a_recycled_pid_is_left_alone(tmp_path: Path) -> None:
    # Given a pid file whose pid now belongs to another process (a different start time)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pid_dir = tmp_path / "trainers"
        pid_dir.mkdir()
        started = start_time(bystander.pid)
        assert started is not None
        record = TrainerRecord(pid=bystander.pid, start_time=started - 1, job="j", argv=[])
        (pid_dir / "j.json").write_text(record.model_dump_json())
        # When the next stack starts
        ended = end_stale_trainers(pid_dir)
        # Then the process is not touched, and the stale pid file is cleared
        time.sleep(0.2)
        assert bystander.poll() is None
        assert [e.was_alive for e in ended] == [False]
        assert not list(pid_dir.iterdir())
    finally:
        bystander.kill()
        bystander.wait()
