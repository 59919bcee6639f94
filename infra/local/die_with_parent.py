"""``python -m infra.local.die_with_parent PARENT_PID -- ARGV...``: exec ARGV so that the kernel
SIGKILLs it when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), even by SIGKILL.

A launcher rather than a ``preexec_fn``: code run between fork and exec in a process with
threads (the stack has several) can deadlock on a lock another thread held at the fork. Only the
standard library is imported, so the launch costs a bare interpreter start. The pid stays the
same through the exec, so the death signal and the caller's pid file apply to the trainer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask for SIGKILL at the parent's death, and exit now if it is already dead (the request
    covers only deaths after it is made; by then this process was handed to another parent)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)


def main(args: Sequence[str]) -> None:
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        sys.exit("usage: python -m infra.local.die_with_parent PARENT_PID -- ARGV...")
    die_with_parent(int(args[0]))
    os.execv(args[2], list(args[2:]))


if __name__ == "__main__":
    main(sys.argv[1:])
