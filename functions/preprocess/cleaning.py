"""Turning raw batches into typed, clean rows, and counting every row that did not make it.

Policy (docs/decisions.md): a row with a missing target, a value that cannot be read as its
column's type, or a number beyond float32 (an infinity included) is dropped and counted under its
rule; exact duplicate rows are dropped; missing numeric values stay NaN (the model imputes them
inside the ONNX graph); missing categories become ``MISSING_CATEGORY``; category spellings are
normalised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from functions.shared.contract import Contract, FeatureKind
from functions.shared.features import MISSING_CATEGORY, FeatureSpec, normalise_category

EXAMPLE_ROWS = 10
SPLITS = ("train", "validation", "test")
NUMERIC_SHARE = 0.95
SPLIT_BOUNDS = (0.70, 0.85)  # cumulative: 70 % train, 15 % validation, 15 % test
# The model takes float32 (functions/shared/features.py onnx_feeds) and the API refuses numbers
# beyond it; a training value past it would be infinite inside the model, and overflows the
# profile's mean. Such a cell is dropped as non_finite, like an infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class RuleCount:
    rule: str
    column: str | None
    message: str
    count: int = 0
    examples: list[dict[str, object]] = field(default_factory=list)


class RowIssues:
    """Row-level rule breaks, counted per (rule, column) with a few example rows each."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str | None], RuleCount] = {}

    def add(
        self, rule: str, column: str | None, message: str, file: str, rows: Iterable[int]
    ) -> None:
        rows = list(rows)
        if not rows:
            return
        entry = self._counts.setdefault((rule, column), RuleCount(rule, column, message))
        entry.count += len(rows)
        room = EXAMPLE_ROWS - len(entry.examples)
        entry.examples.extend({"file": file, "row": int(r)} for r in rows[:room])

    @property
    def total(self) -> int:
        return sum(c.count for c in self._counts.values())

    def entries(self) -> list[RuleCount]:
        return sorted(self._counts.values(), key=lambda c: (c.rule, c.column or ""))


def infer_features(
    contract: Contract, header: list[str], sample: pd.DataFrame
) -> list[FeatureSpec]:
    """Declared features, or every other column typed by whether its values are numbers.

    A column is numeric when at least ``NUMERIC_SHARE`` of its non-missing values in the first
    batch read as numbers; the few that do not are then dropped as type mismatches (and count
    against the rejected-rows limit) instead of turning the whole column into categories.

    Sensitive columns are not features unless declared: group metrics need them, the model
    should not (docs/decisions.md).
    """
    if contract.features is not None:
        return [FeatureSpec(name=n, kind=k) for n, k in contract.features.items()]
    skip = {contract.target, contract.id_column, *contract.sensitive}
    specs = []
    for name in header:
        if name in skip:
            continue
        values = sample[name].dropna()
        _, unreadable = _as_numbers(values)
        is_numeric = len(values) > 0 and 1.0 - unreadable.mean() >= NUMERIC_SHARE
        kind = FeatureKind.NUMERIC if is_numeric else FeatureKind.CATEGORICAL
        specs.append(FeatureSpec(name=name, kind=kind))
    return specs


def normalise_categories(values: pd.Series) -> NDArray[np.object_]:
    """Vectorised ``normalise_category``: the same function, applied once per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([normalise_category(u) for u in uniques] + [MISSING_CATEGORY], dtype=object)
    result: NDArray[np.object_] = table[codes]
    return result  # code -1 (missing) picks the appended MISSING_CATEGORY


# What reads as a number, as pandas.to_numeric reads it: decimal or scientific notation, or an
# infinity; "nan" is not (a cell that says so was not a null token, so it is unreadable).
_NUMBER = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity)$"


def _as_numbers(values: pd.Series) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Values as float64, plus a mask of cells that held something that is not a number."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        parsed = _parse_numbers(values)
    else:
        parsed = values
    numbers = np.asarray(parsed, dtype=np.float64)
    unreadable = np.isnan(numbers) & np.asarray(values.notna())
    return numbers, unreadable


def _parse_numbers(values: pd.Series) -> NDArray[np.float64] | pd.Series:
    """Text cells as float64, NaN where a cell is not a number: Arrow's kernels (trim, match,
    cast) over the column's Arrow buffer, 20× pandas.to_numeric over the same strings (bench/
    preprocess.py; docs/decisions.md). Anything Arrow cannot take whole (a column of mixed
    Python objects, a number Arrow parses differently) goes the pandas way."""
    try:
        text = pc.utf8_trim_whitespace(pa.array(values, type=pa.string(), from_pandas=True))
        readable = pc.match_substring_regex(text, _NUMBER, ignore_case=True)
        numbers = pc.cast(pc.if_else(readable, text, None), pa.float64())
        parsed: NDArray[np.float64] = numbers.to_numpy(zero_copy_only=False)
        return parsed
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pd.to_numeric(values.astype("string").str.strip(), errors="coerce")


def _beyond_float32(numbers: NDArray[np.float64]) -> NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        beyond: NDArray[np.bool_] = np.abs(numbers) > FLOAT32_MAX  # NaN (missing) is not
    return beyond


class BatchCleaner:
    """Types and cleans one batch at a time against the contract and the feature specs."""

    def __init__(self, contract: Contract, features: list[FeatureSpec]) -> None:
        self.contract = contract
        self.features = features
        self.classes: dict[str, int] = {}

    def clean(
        self, frame: pd.DataFrame, *, file: str, first_row: int, issues: RowIssues
    ) -> pd.DataFrame:
        rows = np.arange(first_row, first_row + len(frame))
        keep = np.ones(len(frame), dtype=bool)
        out: dict[str, object] = {}
        target = self.contract.target

        raw_target = frame[target]
        null_target = raw_target.isna().to_numpy(copy=True)
        if self.contract.task == "classification":
            labels = normalise_categories(raw_target)
            null_target |= labels == MISSING_CATEGORY
            out[target] = labels
        else:
            numbers, unreadable = _as_numbers(raw_target)
            self._drop(
                issues,
                keep,
                unreadable,
                rows,
                "type_mismatch",
                target,
                "target value is not a number",
                file,
            )
            self._drop(
                issues,
                keep,
                _beyond_float32(numbers),
                rows,
                "non_finite",
                target,
                "target value is infinite or beyond float32 (±3.4e38)",
                file,
            )
            out[target] = numbers
        self._drop(
            issues, keep, null_target, rows, "target_null", target, "target value is missing", file
        )

        for spec in self.features:
            values = frame[spec.name]
            if spec.kind is FeatureKind.NUMERIC:
                numbers, unreadable = _as_numbers(values)
                self._drop(
                    issues,
                    keep,
                    unreadable,
                    rows,
                    "type_mismatch",
                    spec.name,
                    "value is not a number (feature is numeric)",
                    file,
                )
                self._drop(
                    issues,
                    keep,
                    _beyond_float32(numbers),
                    rows,
                    "non_finite",
                    spec.name,
                    "value is infinite or beyond float32 (±3.4e38)",
                    file,
                )
                out[spec.name] = numbers
            else:
                out[spec.name] = normalise_categories(values)
        if self.contract.id_column:
            ids = frame[self.contract.id_column]
            self._drop(
                issues,
                keep,
                np.asarray(ids.isna()),
                rows,
                "id_null",
                self.contract.id_column,
                "id value is missing",
                file,
            )
            out[self.contract.id_column] = np.asarray(ids.astype("string").str.strip(), object)
        for name in self.contract.sensitive:
            if name not in out:
                out[name] = normalise_categories(frame[name])

        cleaned = pd.DataFrame(out)[keep]
        if self.contract.task == "classification":
            for label, count in cleaned[target].value_counts().items():
                self.classes[str(label)] = self.classes.get(str(label), 0) + int(count)
        return cleaned.reset_index(drop=True)

    @staticmethod
    def _drop(
        issues: RowIssues,
        keep: NDArray[np.bool_],
        bad: NDArray[np.bool_],
        rows: NDArray[np.int64],
        rule: str,
        column: str,
        message: str,
        file: str,
    ) -> None:
        # Count a row under the first rule it breaks only, so per-rule counts add up.
        newly = bad & keep
        issues.add(rule, column, message, file, rows[newly])
        keep &= ~bad


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> NDArray[np.uint64]:
    """A stable 64-bit hash per row over ``columns`` in sorted-name order.

    Stable across files, runs and dataset versions: values are hashed after typing and
    normalisation, so ``"5"`` and ``5.0`` in a numeric column, or ``" Red"`` and ``"red"`` in a
    categorical one, hash alike.
    """
    combined = np.zeros(len(frame), dtype=np.uint64)
    for name in sorted(columns):
        col = frame[name]
        if pd.api.types.is_float_dtype(col):
            values = np.where(np.isnan(col.to_numpy()), np.nan, col.to_numpy() + 0.0)
            hashed = pd.util.hash_array(values.astype(np.float64))
        else:
            hashed = pd.util.hash_array(np.asarray(col, dtype=object))
        # order-dependent mix (FNV-style) so swapping two columns' values changes the hash
        combined = (combined * np.uint64(1099511628211)) ^ hashed
    return combined


def assign_splits(split_keys: NDArray[np.uint64]) -> NDArray[np.int8]:
    """0 = train, 1 = validation, 2 = test, from a key that never changes for a row."""
    # Re-hash so that ids with structure (sequential numbers) still spread evenly.
    mixed = pd.util.hash_array(split_keys, categorize=False)
    fraction = (mixed % np.uint64(10_000)).astype(np.float64) / 10_000.0
    splits: NDArray[np.int8] = np.searchsorted(
        np.array(SPLIT_BOUNDS), fraction, side="right"
    ).astype(np.int8)
    return splits


class Deduplicator:
    """Remembers every row hash seen (8 bytes per row) so duplicates across batches and files
    are dropped; memory grows with distinct rows, not with file size.

    The hashes seen are kept sorted: a batch is looked up with a binary search and merged in
    with a stable sort of two sorted runs (timsort merges them in linear time). ``np.isin`` and
    ``np.union1d`` re-hashed every hash seen at every batch: 36 s of a 300 MB upload's 55 s."""

    def __init__(self) -> None:
        self._seen = np.empty(0, dtype=np.uint64)

    def fresh(self, hashes: NDArray[np.uint64]) -> NDArray[np.bool_]:
        _, first = np.unique(hashes, return_index=True)
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first] = True
        if self._seen.size:
            at = np.minimum(np.searchsorted(self._seen, hashes), self._seen.size - 1)
            mask &= self._seen[at] != hashes
        merged = np.concatenate([self._seen, np.sort(hashes[mask])])
        merged.sort(kind="stable")
        self._seen = merged
        return mask
