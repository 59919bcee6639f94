"""What a dataset version is: its manifest, written last by preprocess (a version without one is
incomplete) and read by the retrain function (``runs.current_data``), and the records it holds.

In ``functions/shared`` because both functions read it: the retrain function's code zip holds
``functions/shared/`` and ``functions/retrain/`` only, and no pandas (layers/build.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Violation(BaseModel):
    """One broken rule: which rule, which column, how many rows, and where to look."""

    model_config = ConfigDict(frozen=True)

    rule: str
    column: str | None = None
    file: str | None = None
    message: str
    count: int | None = None
    examples: list[dict[str, object]] = Field(default_factory=list)


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


class PartRef(BaseModel):
    """One accepted data object's part, as a version lists it (format 2)."""

    part_id: str
    key: str  # the raw data object
    etag: str
    version_id: str | None = None
    size: int
    rows_accepted: int  # before deduplication across parts
    split_keys: dict[str, str]  # split -> the part's file of it (only splits with rows)
    index_key: str


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
    # 1: one Parquet file per split under the version (``split_keys``), the layout before
    # per-file parts; 2: a list of parts, each split a SageMaker ManifestFile (``channels``)
    # naming the parts' files, rows equal across parts kept once (``row_hash``).
    format: int = 1
    parts: list[PartRef] = Field(default_factory=list)
    channels: dict[str, str] = Field(default_factory=dict)  # split -> channel manifest key
    state_key: str | None = None
