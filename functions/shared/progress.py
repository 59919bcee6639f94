"""How far a long step has got: preprocess reading rows, training fitting candidates.

A step calls ``report_progress`` as it goes; where the record ends up is the caller's choice,
made once with ``route_progress`` (as ``observability.route_emf`` does for metrics):

- nothing routed (Lambda, SageMaker): one ``sluice.progress`` log line at INFO, which a
  SageMaker job's CloudWatch stream shows and Lambda's default WARNING level drops;
- the training process under the local runner: ``PROGRESS_FILE_ENV`` names a file, and each
  record is appended to it as one JSON line, which the runner (in the local stack's process)
  reads back and reports again there (infra/local/training_runner.py);
- the local stack: ``<state dir>/progress.jsonl`` and a console line (infra/local/stack.py);
  ``sluice demo``: a line of its output.

Imports pydantic only, so every function (and the training image) can report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

PROGRESS_FILE_ENV = "SLUICE_PROGRESS_FILE"
"""Set by the local training runner: the file the training process appends its records to."""

Step = Literal["preprocess", "train", "evaluate"]

_log = logging.getLogger("sluice.progress")


class Progress(BaseModel):
    """One progress record. ``done`` of ``total`` ``unit`` (``total`` is None when unknown);
    ``detail`` is the phrase a person reads ("candidate 2 of 3: xgboost")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: Step
    dataset: str
    run: str | None = None  # the training job (= run) name, where the step knows it
    done: int = Field(ge=0)
    total: int | None = Field(default=None, ge=0)
    unit: str
    detail: str
    elapsed_seconds: float = Field(ge=0)
    at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    def line(self) -> str:
        """``train    churn: candidate 2 of 3: xgboost (12 s)``: the console's form."""
        return f"{self.step:<8} {self.dataset}: {self.detail} ({self.elapsed_seconds:.0f} s)"


ProgressSink = Callable[[Progress], None]
_sinks: list[ProgressSink] = []


def route_progress(sink: ProgressSink | None) -> None:
    """Send every record to ``sink`` from now on; ``None`` restores the log line."""
    _sinks[:] = [] if sink is None else [sink]


def report_progress(progress: Progress) -> None:
    """Hand one record to the routed sink, or log it. Never raises: progress is commentary,
    and a sink that fails must not fail the step it describes."""
    if not _sinks:
        _log.info("progress %s", progress.line())
        return
    for sink in _sinks:
        try:
            sink(progress)
        except Exception:
            _log.warning("progress sink failed", exc_info=True)


def append_to(path: Path) -> ProgressSink:
    """A sink appending each record to ``path`` as one JSON line (the training process's)."""

    def append(progress: Progress) -> None:
        with path.open("a", encoding="utf-8") as sink:
            sink.write(progress.model_dump_json() + "\n")

    return append
