"""Where ``sluice up``'s machine output goes: the functions' structured (JSON) logs, other
libraries' log records and uncaught tracebacks are written to ``<state dir>/logs/sluice-<UTC
date>.log`` (a new file each day), so that the console holds the stack's own lines only; with
``--verbose`` they are echoed to the console as well.

Lambda's convention is JSON on stdout; here stdout is a person's terminal. The functions keep
logging as they do on AWS: only the stream their handler writes to changes.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

LOGS_DIR = "logs"


class DailyLog:
    """A text stream appending to ``<dir>/sluice-<UTC date>.log``, the file chosen at each write,
    optionally echoing to ``echo``. Safe to share between threads."""

    def __init__(self, directory: Path, echo: IO[str] | None = None) -> None:
        self.directory = directory
        self._echo = echo
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.directory / f"sluice-{datetime.now(UTC):%Y-%m-%d}.log"

    def write(self, text: str) -> int:
        with self._lock:
            with self.path.open("a", encoding="utf-8") as sink:
                sink.write(text)
            if self._echo is not None:
                self._echo.write(text)
                self._echo.flush()
        return len(text)

    def flush(self) -> None:
        """Each write is flushed already (the file is closed after it)."""


def route_logs(state_dir: Path, *, verbose: bool) -> DailyLog:
    """Send the functions' logger, the root logger and uncaught exceptions (any thread) to the
    state directory's daily log; ``verbose`` echoes them to stdout too. Returns the log."""
    from functions.shared.observability import logger

    log = DailyLog(state_dir / LOGS_DIR, echo=sys.stdout if verbose else None)
    handler = logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(log)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    plain = logging.StreamHandler(log)
    plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(plain)

    def uncaught(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        # The traceback to the log; one line on the console says what and where to look
        log.write("".join(traceback.format_exception(kind, error, trace)))
        print(f"error    {kind.__name__}: {error} (traceback in {log.path})", file=sys.stderr)

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            log.write(f"in thread {args.thread.name if args.thread else '?'}:\n")
            uncaught(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
    return log
