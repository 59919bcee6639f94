"""A child process a test or a benchmark drives by what it prints (``sluice up``, a server)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path


class ChildProcess:
    """A child process whose output lines (stdout and stderr together) are read on a thread,
    so that a wait can give up at a deadline rather than hang."""

    def __init__(
        self,
        command: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        new_session: bool = False,
    ) -> None:
        """``new_session``: lead a process group of its own, as a shell's foreground job does,
        so that ``os.killpg(process.pid, SIGINT)`` is a terminal's Ctrl-C."""
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
        )
        self.lines: list[str] = []
        self._arrived: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._arrived.put(line)
        self._arrived.put(None)

    def wait(
        self,
        done: Callable[[list[str]], bool],
        seconds: float,
        *,
        timed_out: str,
        ended: str,
        error: Callable[[str], Exception],
    ) -> None:
        """Read lines until ``done(lines)``; ``error(timed_out or ended + what it said)`` when
        the deadline passes or the process ends first."""
        deadline = time.monotonic() + seconds
        while not done(self.lines):
            try:
                line = self._arrived.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise error(f"{timed_out}:\n{self.said}") from None
            if line is None:
                raise error(f"{ended}:\n{self.said}")
            self.lines.append(line)

    def wait_ready(self, seconds: float) -> None:
        """Until ``sluice up`` prints its ``ready`` line (AssertionError if it never does)."""
        self.wait(
            lambda lines: any(line.startswith("ready") for line in lines),
            seconds,
            timed_out="sluice up not ready",
            ended="sluice up ended early",
            error=AssertionError,
        )

    @property
    def said(self) -> str:
        return "".join(self.lines)

    def rest(self, seconds: float = 10) -> str:
        """Once the process has ended: what it printed that no wait read."""
        rest = []
        while (line := self._arrived.get(timeout=seconds)) is not None:
            rest.append(line)
        return "".join(rest)


def gone(pid: int, seconds: float) -> bool:
    """Whether the process ends (or is a zombie, dead but not reaped) within ``seconds``."""
    from infra.local.trainers import start_time

    deadline = time.monotonic() + seconds
    while start_time(pid) is not None:  # None: no such process, or a zombie (dead)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
