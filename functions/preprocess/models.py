"""What preprocessing writes and returns: rejection reports, manifests and outcomes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from functions.shared.s3_events import UploadedObject


class Violation(BaseModel):
    """One broken rule: which rule, which column, how many rows, and where to look."""

    model_config = ConfigDict(frozen=True)

    rule: str
    column: str | None = None
    file: str | None = None
    message: str
    count: int | None = None
    examples: list[dict[str, object]] = Field(default_factory=list)


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


class SourceFile(BaseModel):
    key: str
    etag: str
    version_id: str | None = None
    size: int
    sha256: str
    rows_read: int


class ExcludedFile(BaseModel):
    """A data file left out of a dataset version because of a fault of its own (unreadable,
    wrong header, no rows, too many bad rows); the version is built from the other files."""

    key: str
    etag: str
    version_id: str | None = None
    size: int
    rule: str
    message: str  # what is wrong, where, and what to do (replace or delete the file)
    report_key: str  # the file's rejection report (artifacts bucket)


class RowCounts(BaseModel):
    read: int
    duplicates_dropped: int
    rejected: dict[str, int]
    accepted: int
    per_split: dict[str, int]


class Manifest(BaseModel):
    dataset: str
    dataset_version: str
    created_at: str
    contract_sha256: str
    sources: list[SourceFile]
    rows: RowCounts
    row_issues: list[Violation]
    split: dict[str, object]
    schema_key: str
    profile_key: str
    split_keys: dict[str, str]
    # Files of the dataset's data/ that this version left out; absent in older manifests.
    excluded: list[ExcludedFile] = Field(default_factory=list)


class PreprocessOutcome(BaseModel):
    """What the handler did with one uploaded object."""

    status: Literal["ignored", "stale", "duplicate", "rejected", "started"]
    reason: str
    dataset: str | None = None
    run_name: str | None = None
    run_id: str | None = None
    dataset_version: str | None = None
    reused_dataset_version: bool = False
    report_key: str | None = None
    rows: RowCounts | None = None
    excluded: list[ExcludedFile] = Field(default_factory=list)
