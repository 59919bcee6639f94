"""What preprocessing writes and returns: rejection reports and outcomes (the dataset version's
manifest, which the retrain function reads too, is ``functions.shared.manifest``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from functions.shared.manifest import ExcludedFile, RowCounts, Violation
from functions.shared.s3_events import UploadedObject

UNCHANGED_NOTE = (
    "Nothing was trained and the live model is unchanged; the raw data was not modified."
)


class RejectionReport(BaseModel):
    """Why an upload started no run (``rejected``), or why one data file was left out of a
    dataset version built from the others (``excluded``; ``trigger`` is then that file)."""

    dataset: str
    run_name: str
    trigger: UploadedObject
    decision: Literal["rejected", "excluded"] = "rejected"
    violations: list[Violation]
    rows_read: int = 0
    note: str = UNCHANGED_NOTE
    created_at: str


class PreprocessOutcome(BaseModel):
    """What the handler did with one uploaded object."""

    # unchanged: a deleted file took no rows with it (it was left out): the version is written
    # and no run starts. building: a processing job builds the parts; the version and the run
    # follow when it ends (run_id: that build's execution)
    status: Literal["ignored", "stale", "duplicate", "rejected", "started", "unchanged", "building"]
    reason: str
    dataset: str | None = None
    run_name: str | None = None
    run_id: str | None = None
    dataset_version: str | None = None
    reused_dataset_version: bool = False
    report_key: str | None = None
    rows: RowCounts | None = None
    excluded: list[ExcludedFile] = Field(default_factory=list)
