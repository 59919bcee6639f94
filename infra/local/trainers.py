"""Training subprocesses that never outlive ``sluice up``, and that a restart can find.

Three guards, because each covers what the others cannot:

- **own session**: a terminal's Ctrl-C goes to its whole foreground process group; the trainer is
  not in it, so the stack's shutdown decides what happens to the run (it finishes), not a
  ``KeyboardInterrupt`` in the middle of training;
- **death signal**: on Linux the trainer is started through ``infra/local/die_with_parent.py``,
  which asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to kill it when its parent dies,
  then execs the trainer (same pid). The signal follows the parent *thread*: the run worker's
  thread waits on the trainer until it ends, so the two live and die together;
- **pid files**: while a trainer runs, ``<state dir>/trainers/<job>.json`` holds its pid and the
  kernel's start time of that pid. A restart ends every trainer still alive whose pid AND start
  time match (a pid the kernel recycled for another process is left alone); its run, journaled
  in ``pending-runs/`` until it ends, resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, ValidationError

TRAINERS_DIR = "trainers"
_GONE_SECONDS = 5.0


class TrainerRecord(BaseModel):
    """One running trainer, as its pid file holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: int
    start_time: int | None  # clock ticks after boot (/proc/<pid>/stat field 22); None off Linux
    job: str
    argv: list[str]


@dataclass(frozen=True)
class EndedTrainer:
    """A trainer a restart found alive (and ended), or whose pid file it cleared."""

    record: TrainerRecord
    was_alive: bool


@contextlib.contextmanager
def trainer_process(
    argv: Sequence[str],
    *,
    job: str,
    pid_dir: Path | None,
    env: dict[str, str],
    cwd: Path,
    stdout: int | IO[str] | None = subprocess.PIPE,
    stderr: int | IO[str] | None = subprocess.PIPE,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``argv`` as a guarded trainer (own session, killed with its parent on Linux); while
    the block runs, its pid file is in ``pid_dir`` (when given). Leaving the block kills the
    trainer's process group if it is still running, then removes the pid file."""
    launcher = [sys.executable, "-m", "infra.local.die_with_parent", str(os.getpid()), "--"]
    process = subprocess.Popen(
        [*launcher, *argv] if sys.platform == "linux" else list(argv),
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    pid_file = None
    try:
        if pid_dir is not None:
            pid_dir.mkdir(parents=True, exist_ok=True)
            record = TrainerRecord(
                pid=process.pid, start_time=start_time(process.pid), job=job, argv=list(argv)
            )
            pid_file = pid_dir / f"{job}.json"
            pid_file.write_text(record.model_dump_json())
        yield process
    finally:
        if process.poll() is None:
            kill_group(process.pid)
            process.communicate()
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)


def end_stale_trainers(pid_dir: Path) -> list[EndedTrainer]:
    """At start: end every trainer a previous life left running (pid and start time as its pid
    file recorded), wait until each is gone, and remove every pid file. Unreadable files are
    removed too: they name nothing this can safely kill."""
    ended: list[EndedTrainer] = []
    for pid_file in sorted(pid_dir.glob("*.json")) if pid_dir.is_dir() else []:
        try:
            record = TrainerRecord.model_validate_json(pid_file.read_bytes())
        except (OSError, ValidationError):
            pid_file.unlink(missing_ok=True)
            continue
        alive = record.start_time is not None and start_time(record.pid) == record.start_time
        if alive:
            kill_group(record.pid)
            _wait_gone(record.pid, record.start_time)
        ended.append(EndedTrainer(record, was_alive=alive))
        pid_file.unlink(missing_ok=True)
    return ended


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (ticks after boot), or None when there is no such
    process, it is a zombie (dead, awaiting its reaper), or this is not Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    if fields[0] == "Z":
        return None
    return int(fields[19])


def kill_group(pid: int) -> None:
    """SIGKILL the trainer's process group (it leads its own session), or the pid alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pid: int, started: int | None) -> None:
    deadline = time.monotonic() + _GONE_SECONDS
    while start_time(pid) == started and time.monotonic() < deadline:
        time.sleep(0.02)
