"""Read a dataset version's channels into model inputs.

Both the native pipeline and the ONNX graph are fed from ``features.onnx_feeds``: numerics as
float32, categories as normalised strings, under the graph's input names
(``features.onnx_input_name``), which the native pipeline's columns also take so that the
converter finds each column under the name of its input. The native model is therefore fitted
and checked on exactly the values the exported model will see at inference time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pydantic import ValidationError

from functions.shared.contract import describe_validation_error
from functions.shared.errors import TrainingError
from functions.shared.features import DatasetSchema, onnx_feeds, onnx_input_names
from functions.shared.row_hash import ROW_HASH, first_occurrences

SCHEMA_FILE = "dataset.json"


@dataclass(frozen=True)
class Split:
    """One split: the features as the model sees them, and the encoded target."""

    name: str
    frame: (
        pd.DataFrame
    )  # one column per graph input (features.graph_columns), as the graph names it
    feeds: dict[str, NDArray[Any]]  # the same values as ONNX inputs, (n, 1) each
    y: NDArray[Any]  # class index into schema.classes (int64), or float64 target

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])


def join_splits(first: Split, second: Split) -> Split:
    """``first``'s rows, then ``second``'s: train + validation, for k-fold selection and the
    refit."""
    return Split(
        name=f"{first.name}+{second.name}",
        frame=pd.concat([first.frame, second.frame], ignore_index=True),
        feeds={k: np.concatenate([first.feeds[k], second.feeds[k]]) for k in first.feeds},
        y=np.concatenate([first.y, second.y]),
    )


def load_schema(channel: Path) -> DatasetSchema:
    """The version's schema: ``dataset.json`` at the channel's root (a format-1 split folder),
    else the one ``dataset.json`` below it (a format-2 channel keeps its manifest keys' folders:
    ``versions/<v>/dataset.json``)."""
    path = channel / SCHEMA_FILE
    if not path.is_file():
        found = sorted(p for p in channel.rglob(SCHEMA_FILE) if p.is_file())
        if not found:
            raise TrainingError(f"the train channel has no {SCHEMA_FILE} (looked in {channel})")
        if len(found) > 1:
            raise TrainingError(
                f"the train channel holds {len(found)} {SCHEMA_FILE} files, one expected: "
                f"{[str(p) for p in found]}"
            )
        path = found[0]
    try:
        schema = DatasetSchema.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise TrainingError(f"{path}: {describe_validation_error(exc)}") from None
    return schema


def require_every_class(schema: DatasetSchema, split: Split) -> None:
    """XGBoost needs classes 0..K-1 present, and the probability columns must cover
    ``schema.classes``: a class without training rows cannot be learnt."""
    if schema.task != "classification":
        return
    classes = schema.classes or []
    counts = np.bincount(split.y, minlength=len(classes))
    absent = [label for label, count in zip(classes, counts, strict=True) if count == 0]
    if absent:
        raise TrainingError(
            f"classes {absent} have no rows in the {split.name} split ({split.rows} rows); "
            f"every class of {classes} must be learnt"
        )


def load_split(channel: Path, schema: DatasetSchema, name: str) -> Split:
    """Read a channel (``read_channel_frame``); columns other than features and target are
    ignored (id and sensitive columns travel with the data but never reach the model)."""
    columns = [f.name for f in schema.features] + [schema.target]
    table = read_channel_frame(channel, columns, name=name)
    if table.empty:
        raise TrainingError(f"the {name} split has no rows")
    names = onnx_input_names(schema.features)
    feeds = onnx_feeds(schema.features, {c: table[c].to_numpy() for c in table.columns}, names)
    frame = pd.DataFrame({name: feed.ravel() for name, feed in feeds.items()})
    return Split(name=name, frame=frame, feeds=feeds, y=_encode_target(table, schema, name))


def read_channel_frame(
    channel: Path, columns: list[str] | None = None, *, name: str | None = None
) -> pd.DataFrame:
    """Every ``*.parquet`` file below ``channel`` as one table, in file-name order: a format-1
    split folder (one ``part-0.parquet``) or a format-2 channel (its parts' files, which carry
    ``__row_hash``: a row several parts hold is kept once, from the file whose name sorts
    first, and the column is dropped). ``columns``: only those (None: all but the hash)."""
    name = name or channel.name
    files = sorted(channel.rglob("*.parquet"), key=lambda p: (p.name, p.as_posix()))
    if not files:
        raise TrainingError(f"the {name} channel holds no *.parquet file (looked in {channel})")
    hashed = [ROW_HASH in pq.read_schema(f).names for f in files]
    if any(hashed) and not all(hashed):
        plain = [f.name for f, h in zip(files, hashed, strict=True) if not h]
        raise TrainingError(
            f"the {name} channel mixes part files with {ROW_HASH} and files without it ({plain})"
        )
    wanted = None if columns is None else [*columns, *([ROW_HASH] if all(hashed) else [])]
    try:
        tables = [pd.read_parquet(f, columns=wanted) for f in files]
    except (KeyError, ValueError) as exc:  # pyarrow reports a missing column as either
        raise TrainingError(
            f"the {name} split lacks a column it needs ({columns}): {exc}"
        ) from None
    if all(hashed):
        keep = first_occurrences([t[ROW_HASH].to_numpy(np.uint64) for t in tables])
        tables = [t.loc[k].drop(columns=ROW_HASH) for t, k in zip(tables, keep, strict=True)]
    return pd.concat(tables, ignore_index=True)


def _encode_target(table: pd.DataFrame, schema: DatasetSchema, split: str) -> NDArray[Any]:
    target = table[schema.target]
    if schema.task == "regression":
        y: NDArray[np.float64] = np.asarray(pd.to_numeric(target, errors="coerce"), np.float64)
        bad = int(np.count_nonzero(~np.isfinite(y)))
        if bad:
            raise TrainingError(f"the {split} target '{schema.target}' has {bad} non-finite rows")
        return y
    classes = schema.classes or []
    # The split holds labels as matched (normalised); the classes are the data's spellings.
    codes = np.asarray(pd.Index(schema.class_keys).get_indexer(target), dtype=np.int64)
    unknown = target[codes < 0]
    if unknown.size:
        seen = sorted({str(v) for v in unknown.head(1000)})[:5]
        raise TrainingError(
            f"the {split} target '{schema.target}' has {unknown.size} rows whose label is not one "
            f"of the dataset's classes {classes}, e.g. {seen}"
        )
    return codes
