"""Turning raw batches into typed, clean rows, and counting every row that did not make it.

Policy (docs/decisions.md): a row with a missing target, a value that cannot be read as its
column's type, or a number beyond float32 (an infinity included) is dropped and counted under its
rule; exact duplicate rows are dropped; missing numeric values stay NaN (the model imputes them
inside the ONNX graph); missing categories become ``MISSING_CATEGORY``; category spellings are
normalised.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from functions.shared.contract import Contract, FeatureKind
from functions.shared.features import (
    MISSING_CATEGORY,
    ColumnRole,
    ColumnUse,
    FeatureSpec,
    normalise_category,
    parse_boolean,
    parse_datetime,
)

EXAMPLE_ROWS = 10
SPLITS = ("train", "validation", "test")
NUMERIC_SHARE = 0.95
# Column roles inferred from the first batch (docs/decisions.md, "Column roles"): below
# JUDGE_ROWS present values a column is too small to call an id or free text.
JUDGE_ROWS = 50
ID_DISTINCT_SHARE = 0.95  # nearly every value distinct: an identifier, not a category
FREE_TEXT_DISTINCT_SHARE = 0.5
FREE_TEXT_WORDS = 4.0  # mean words per value at which text is prose, not a category
ROW_NUMBER = "a row number"
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

    def merge(self, other: RowIssues) -> None:
        """Add ``other``'s counts and examples (one file's, once the file is accepted)."""
        for entry in other.entries():
            mine = self._counts.setdefault(
                (entry.rule, entry.column), RuleCount(entry.rule, entry.column, entry.message)
            )
            mine.count += entry.count
            mine.examples.extend(entry.examples[: EXAMPLE_ROWS - len(mine.examples)])

    @property
    def total(self) -> int:
        return sum(c.count for c in self._counts.values())

    def entries(self) -> list[RuleCount]:
        return sorted(self._counts.values(), key=lambda c: (c.rule, c.column or ""))


def infer_features(
    contract: Contract, header: list[str], sample: pd.DataFrame
) -> tuple[list[FeatureSpec], list[ColumnRole]]:
    """The features, and what became of every column, as a data scientist would decide it.

    Declared features (the contract's ``features``) are taken as they are. Otherwise each other
    column, judged on the first batch: no value or one value only → left out (constant);
    booleans (true/false) → boolean; numbers in at least ``NUMERIC_SHARE`` of its values →
    numeric (the few others are then dropped as type mismatches and count against the
    rejected-rows limit), unless they are distinct integers counting rows from 0 or 1 (a row
    number, left out); ISO dates in at least ``NUMERIC_SHARE`` → datetime; text nearly all
    distinct → left out as an identifier, prose (many words, mostly distinct) → left out as free
    text; else categorical.

    Sensitive columns are not features unless declared: group metrics need them, the model
    should not (docs/decisions.md).
    """
    roles: list[ColumnRole] = []
    fixed: dict[str, tuple[ColumnUse, str]] = {contract.target: ("target", "the contract's target")}
    if contract.id_column:
        fixed[contract.id_column] = (
            "id_column",
            "the contract's id_column: splits rows, not a feature",
        )
    for name in contract.sensitive:
        fixed.setdefault(
            name, ("sensitive", "a sensitive column: group metrics only, not a feature")
        )
    if contract.features is not None:
        specs = [FeatureSpec(name=n, kind=k) for n, k in contract.features.items()]
        for name in header:
            if name in contract.features:
                kind = contract.features[name]
                roles.append(
                    ColumnRole(
                        column=name, use="feature", kind=kind, reason="declared in the contract"
                    )
                )
            elif name in fixed:
                use, reason = fixed[name]
                roles.append(ColumnRole(column=name, use=use, reason=reason))
        return specs, roles
    specs = []
    for name in header:
        if name in fixed:
            use, reason = fixed[name]
            roles.append(ColumnRole(column=name, use=use, reason=reason))
            continue
        inferred, why = _infer_kind(sample[name])
        if inferred is None:
            # What the column would be as a feature: how it is typed for the row hash.
            looks = FeatureKind.NUMERIC if why.startswith(ROW_NUMBER) else FeatureKind.CATEGORICAL
            roles.append(ColumnRole(column=name, use="excluded", kind=looks, reason=why))
        else:
            specs.append(FeatureSpec(name=name, kind=inferred))
            roles.append(ColumnRole(column=name, use="feature", kind=inferred, reason=why))
    return specs, roles


def _infer_kind(values: pd.Series) -> tuple[FeatureKind | None, str]:
    """A column's kind and why, or None and why it is left out."""
    present = values.dropna()
    rows = len(values)
    if len(present) == 0:
        return None, f"constant: no value in the first {rows} rows"
    if pd.api.types.is_bool_dtype(present):
        return FeatureKind.BOOLEAN, "booleans"
    if pd.api.types.is_datetime64_any_dtype(present):
        return FeatureKind.DATETIME, "dates: year, month, day, weekday, hour, days since 1970"
    keys = pd.Series(normalise_categories(present))
    distinct = keys.nunique()
    if distinct <= 1:
        return None, f"constant: every value in the first {rows} rows is {keys.iloc[0]!r}"
    numbers, unreadable = _as_numbers(present)
    if 1.0 - unreadable.mean() >= NUMERIC_SHARE:
        if _row_number(numbers[~unreadable]):
            first = int(np.nanmin(numbers))
            return None, f"{ROW_NUMBER} (distinct integers counting from {first}): an identifier"
        return FeatureKind.NUMERIC, "numbers"
    if set(keys.unique()) <= {"true", "false"}:
        return FeatureKind.BOOLEAN, "booleans (true / false)"
    counts = present.astype(str).value_counts(sort=False)  # each distinct text judged once
    if _date_share(counts) >= NUMERIC_SHARE:
        return FeatureKind.DATETIME, "ISO dates: year, month, day, weekday, hour, days since 1970"
    share = distinct / len(present)
    if len(present) >= JUDGE_ROWS:
        words = sum(len(str(text).split()) * int(n) for text, n in counts.items()) / len(present)
        if share >= FREE_TEXT_DISTINCT_SHARE and words >= FREE_TEXT_WORDS:
            return None, (
                f"free text: {distinct} distinct values in {len(present)} rows, "
                f"{words:.1f} words on average"
            )
        if share >= ID_DISTINCT_SHARE:
            return None, f"an identifier: {distinct} distinct values in {len(present)} rows"
    return FeatureKind.CATEGORICAL, f"categories ({distinct} distinct in the first {rows} rows)"


def _row_number(numbers: NDArray[np.float64]) -> bool:
    """Distinct integers counting rows from 0 or 1 (in any order): a saved row index. A run of
    years (1950, 1951, …) is a trend a model may use, so it starts elsewhere and stays."""
    if numbers.size < JUDGE_ROWS or not np.all(numbers == np.round(numbers)):
        return False
    distinct = np.unique(numbers)
    return bool(
        distinct.size == numbers.size
        and distinct[0] in (0.0, 1.0)
        and distinct[-1] - distinct[0] == numbers.size - 1
    )


def _date_share(counts: pd.Series) -> float:
    """The share of rows whose text is an ISO date, from the text's ``value_counts``: each
    distinct text parsed once."""
    dates = sum(int(n) for text, n in counts.items() if parse_datetime(text) is not None)
    return dates / int(counts.sum())


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


def _parse_numbers(values: pd.Series) -> NDArray[np.float64]:
    """Text cells as float64, NaN where a cell is not a number: the column's Arrow buffer through
    ``_arrow_text_numbers``, 20× pandas.to_numeric over the same strings (bench/preprocess.py;
    docs/decisions.md). A column Arrow cannot take as text whole (mixed Python objects) goes
    the pandas way."""
    try:
        text = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _pandas_numbers(values)
    return _arrow_text_numbers(text)


def _pandas_numbers(values: pd.Series) -> NDArray[np.float64]:
    return np.asarray(
        pd.to_numeric(values.astype("string").str.strip(), errors="coerce"), dtype=np.float64
    )


_NUMBER_TEXT = re.compile(_NUMBER, re.IGNORECASE)


# Booleans and dates: stored as the text a request sends, a cell that does not parse dropped.
_TEXT_MESSAGES: dict[FeatureKind, str] = {
    FeatureKind.BOOLEAN: "value is not true or false (feature is boolean)",
    FeatureKind.DATETIME: "value is not an ISO 8601 date or date-time (feature is a date)",
}
_U8MAX = np.uint64(np.iinfo(np.uint64).max)  # pandas' hash of a missing value (categorize path)


def _beyond_float32(numbers: NDArray[np.float64]) -> NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        beyond: NDArray[np.bool_] = np.abs(numbers) > FLOAT32_MAX  # NaN (missing) is not
    return beyond


def label_spelling(value: object) -> str:
    """A class as the data spells it: text with its surrounding and repeated white space
    dropped, case kept; numbers and booleans as ``normalise_category`` writes them."""
    if isinstance(value, str):
        return " ".join(value.split())
    return normalise_category(value)


def hash_numbers(numbers: NDArray[np.float64]) -> NDArray[np.uint64]:
    """``row_hashes``' term for a float column: pandas' hash of each value, -0.0 as 0.0."""
    values = np.where(np.isnan(numbers), np.nan, numbers + 0.0)
    hashed: NDArray[np.uint64] = pd.util.hash_array(values.astype(np.float64))
    return hashed


def hash_texts(texts: Sequence[str | None]) -> NDArray[np.uint64]:
    """pandas' hash of each text as ``hash_array`` gives it for a column holding them (its
    categorize path: a missing value hashes to 2⁶⁴-1): hashing a column's distinct values and
    taking by code is the same hash as hashing the column."""
    hashed = np.full(len(texts), _U8MAX, dtype=np.uint64)
    present = np.array([t is not None for t in texts], dtype=bool)
    if present.any():
        values = np.array(texts, dtype=object)[present]
        hashed[present] = pd.util.hash_array(values, categorize=False)
    return hashed


@dataclass
class Column:
    """One cleaned column of a batch, every row of it: each value's hash (``row_hashes``' term
    for it) and what ``take`` makes the split file's values of: text as codes into a table of
    distinct values, numbers as float64 (NaN missing), or an Arrow array as it is. Values are
    made only for the rows written (a take per split)."""

    hashes: NDArray[np.uint64]
    table: pa.Array | None = None  # with codes: each row's value is table[code]
    codes: NDArray[np.intp] | None = None
    numbers: NDArray[np.float64] | None = None
    array: pa.Array | None = None

    def take(self, rows: NDArray[np.intp]) -> pa.Array:
        if self.numbers is not None:  # a missing number is a null, as pandas writes NaN
            return pa.array(self.numbers[rows], from_pandas=True)
        if self.table is not None and self.codes is not None:
            return self.table.take(pa.array(self.codes[rows]))
        assert self.array is not None
        return self.array.take(pa.array(rows))

    @property
    def values(self) -> pa.Array:
        """Every row's value."""
        return self.take(np.arange(len(self.hashes)))


@dataclass
class Coded:
    """A column's raw cells as codes into ``uniques`` (-1: missing): Arrow's dictionary
    encoding, so that each distinct value is typed, normalised and hashed once and no row
    becomes a Python object. ``column`` maps the codes through a table of typed values, one per
    unique and then the missing cell's."""

    codes: NDArray[np.intp]  # per row; -1 (missing) picks the last entry of the table
    uniques: list[Any]  # the distinct raw values, as pandas' factorize would give them

    @classmethod
    def of(cls, values: pa.Array) -> Coded:
        encoded = pc.dictionary_encode(values)
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
        dictionary = encoded.dictionary
        if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
            uniques: list[Any] = dictionary.to_pylist()
        else:  # a Parquet column's own type: its values as pandas gives them (Timestamp, …)
            uniques = list(dictionary.to_pandas())
        return cls(codes=codes, uniques=uniques)

    def column(self, table: Sequence[str | None]) -> Column:
        """``table[code]`` per row: ``table`` has an entry per unique, then the missing one."""
        rows = np.where(self.codes < 0, len(table) - 1, self.codes)
        values = pa.array(list(table), type=pa.string())
        return Column(hashes=hash_texts(table)[rows], table=values, codes=rows)

    def rows_where(self, flags: Sequence[bool]) -> NDArray[np.bool_]:
        """Per row, the flag of its unique (``flags`` has an entry per unique, then missing)."""
        mask: NDArray[np.bool_] = np.asarray(flags, dtype=bool)[self.codes]
        return mask


def normalised(values: pa.Array) -> Column:
    """Vectorised ``normalise_category`` over an Arrow column: the same function, applied once
    per distinct value."""
    coded = Coded.of(values)
    return coded.column([*(normalise_category(u) for u in coded.uniques), MISSING_CATEGORY])


def arrow_numbers(values: pa.Array) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """An Arrow column as float64 (NaN where missing or not a number), plus a mask of cells
    that held something that is not a number: text through ``_arrow_text_numbers``, a
    Parquet number cast, a boolean or anything else not a number."""
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        numbers = pc.cast(values, pa.float64(), safe=False)
        parsed: NDArray[np.float64] = numbers.to_numpy(zero_copy_only=False)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        parsed = _arrow_text_numbers(values)
    elif pa.types.is_null(kind):
        parsed = np.full(len(values), np.nan)
    else:  # booleans, dates, binary: as pandas reads them, through their text
        return _as_numbers(values.to_pandas())
    unreadable: NDArray[np.bool_] = np.isnan(parsed) & _present(values)
    return parsed, unreadable


def _arrow_text_numbers(text: pa.Array) -> NDArray[np.float64]:
    """Text cells as float64, NaN where a cell is not a number (``_NUMBER``): Arrow's trim,
    match and cast."""
    try:
        # A column of plain numbers (most batches of most columns) takes Arrow's cast alone: a
        # cell it cannot read raises, and one it reads as NaN (``-nan``) may not be a number to
        # ``_NUMBER``: either sends the column through trim, match and cast, cell by cell.
        with contextlib.suppress(pa.ArrowInvalid):
            direct: NDArray[np.float64] = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
            if not (np.isnan(direct) & _present(text)).any():
                return direct
        trimmed = pc.utf8_trim_whitespace(text)
        readable = pc.match_substring_regex(trimmed, _NUMBER, ignore_case=True)
        numbers = pc.cast(pc.if_else(readable, trimmed, None), pa.float64())
        parsed: NDArray[np.float64] = numbers.to_numpy(zero_copy_only=False)
        return parsed
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _pandas_numbers(text.to_pandas())  # a number Arrow parses differently


def _numbers_column(numbers: NDArray[np.float64]) -> Column:
    # a missing number is a null in the split file, as pandas writes NaN
    return Column(hashes=hash_numbers(numbers), numbers=numbers)


def _boolean_words(uniques: list[Any]) -> tuple[list[str], list[bool]]:
    """Each distinct cell as ``true``/``false`` (missing: ``MISSING_CATEGORY``, so the split
    holds what a request's value normalises to), and whether it is not a boolean."""
    words, bad = [], []
    for unique in uniques:
        parsed = parse_boolean(unique)
        words.append(MISSING_CATEGORY if parsed is None else ("true" if parsed else "false"))
        bad.append(parsed is None and normalise_category(unique) != MISSING_CATEGORY)
    return [*words, MISSING_CATEGORY], [*bad, False]


def _date_texts(uniques: list[Any]) -> tuple[list[str | None], list[bool]]:
    """Each distinct cell as text (ISO 8601, as ``features.parse_datetime`` reads it; missing:
    None), and whether it is not a date. A Parquet date or timestamp column is written out in
    ISO form, so the split holds what a request would send."""
    texts: list[str | None] = []
    bad = []
    for unique in uniques:
        text = unique.isoformat() if hasattr(unique, "isoformat") else str(unique).strip()
        readable = parse_datetime(text) is not None
        missing = not readable and normalise_category(text) == MISSING_CATEGORY
        texts.append(text if readable else None)
        bad.append(not readable and not missing)
    return [*texts, None], [*bad, False]


_TEXT_TYPERS: dict[FeatureKind, Callable[[list[Any]], tuple[list[Any], list[bool]]]] = {
    FeatureKind.BOOLEAN: _boolean_words,
    FeatureKind.DATETIME: _date_texts,
}


@dataclass
class Cleaned:
    """One batch typed and cleaned: every column for every row of the batch, and ``keep``, the
    rows that broke no rule. ``labels``: a classifier's target, coded, for counting classes."""

    columns: dict[str, Column]
    keep: NDArray[np.bool_]
    labels: tuple[Coded, list[str]] | None = None

    def row_hashes(self, rows: NDArray[np.intp], names: Sequence[str] | None = None) -> Any:
        """``row_hashes`` over ``names`` (default: every column) for ``rows``."""
        combined = np.zeros(len(rows), dtype=np.uint64)
        for name in sorted(self.columns if names is None else names):
            combined = (combined * np.uint64(1099511628211)) ^ self.columns[name].hashes[rows]
        return combined

    def class_counts(self, rows: NDArray[np.intp]) -> list[tuple[str, int]]:
        """Rows per class (as matched: normalised) among ``rows``, most first, ties in the order
        the classes first appear (as pandas' ``value_counts`` of a text column orders them)."""
        assert self.labels is not None
        coded, keys = self.labels
        distinct: dict[str, int] = {}
        ids = np.array([distinct.setdefault(k, len(distinct)) for k in keys], dtype=np.intp)
        picked = ids[np.where(coded.codes < 0, len(keys) - 1, coded.codes)[rows]]
        if not picked.size:
            return []
        counts = np.bincount(picked, minlength=len(distinct))
        present, first = np.unique(picked, return_index=True)
        names = list(distinct)
        appearing = [(names[i], int(counts[i])) for i in present[np.argsort(first)]]
        return sorted(appearing, key=lambda pair: -pair[1])  # stable: ties keep their order

    def table(self, rows: NDArray[np.intp], schema: pa.Schema) -> pa.Table:
        """``rows`` of the columns ``schema`` names, as a table of that schema."""
        return pa.Table.from_arrays(
            [self.columns[f.name].take(rows) for f in schema], schema=schema
        )


class BatchCleaner:
    """Types and cleans one batch at a time against the contract and the feature specs."""

    def __init__(
        self,
        contract: Contract,
        features: list[FeatureSpec],
        carried: Sequence[ColumnRole] = (),
    ) -> None:
        self.contract = contract
        self.features = features
        # Columns left out of the model that still make a row what it is: typed as they would
        # be as features and returned with the batch, so that two rows differing only in an id
        # or a row number are not exact duplicates (the caller hashes, then drops them).
        self.carried = [r for r in carried if r.column not in {f.name for f in features}]
        # Rows per class (as matched: normalised) and, per class, rows per original spelling.
        self.classes: dict[str, int] = {}
        self.spellings: dict[str, dict[str, int]] = {}
        # Categorical features one of whose values reads as a number (the others are text-only).
        self.numeric_categories: set[str] = set()

    def class_spellings(self) -> dict[str, str]:
        """Each class (normalised) → its most frequent original spelling (ties: the first in
        sorted order)."""
        return {
            key: min(counts.items(), key=lambda pair: (-pair[1], pair[0]))[0]
            for key, counts in self.spellings.items()
        }

    def features_seen(self) -> list[FeatureSpec]:
        """The features with what the data showed of them: ``text_only`` categoricals."""
        return [
            spec.model_copy(update={"text_only": spec.name not in self.numeric_categories})
            if spec.kind is FeatureKind.CATEGORICAL
            else spec
            for spec in self.features
        ]

    def clean(
        self, batch: pa.RecordBatch, *, file: str, first_row: int, issues: RowIssues
    ) -> Cleaned:
        """Type every column of ``batch`` on Arrow arrays (no pandas frame: each distinct text
        value is normalised once, numbers are parsed by Arrow's kernels) and mark the rows that
        break a rule, counting each under ``issues``."""
        keep = np.ones(batch.num_rows, dtype=bool)
        out: dict[str, Column] = {}
        target = self.contract.target

        def drop(bad: NDArray[np.bool_], rule: str, column: str, message: str) -> None:
            # Count a row under the first rule it breaks only, so per-rule counts add up.
            issues.add(rule, column, message, file, np.flatnonzero(bad & keep) + first_row)
            keep[bad] = False

        raw_target = batch.column(target)
        labels = None
        if self.contract.task == "classification":
            coded = Coded.of(raw_target)
            keys = [*(normalise_category(u) for u in coded.uniques), MISSING_CATEGORY]
            out[target] = coded.column(keys)
            null_target = coded.rows_where([k == MISSING_CATEGORY for k in keys])
            labels = (coded, keys)
        else:
            numbers, unreadable = arrow_numbers(raw_target)
            drop(unreadable, "type_mismatch", target, "target value is not a number")
            drop(
                _beyond_float32(numbers),
                "non_finite",
                target,
                "target value is infinite or beyond float32 (±3.4e38)",
            )
            out[target] = _numbers_column(numbers)
            null_target = ~_present(raw_target)
        drop(null_target, "target_null", target, "target value is missing")

        for spec in self.features:
            values = batch.column(spec.name)
            if spec.kind is FeatureKind.NUMERIC:
                numbers, unreadable = arrow_numbers(values)
                drop(
                    unreadable,
                    "type_mismatch",
                    spec.name,
                    "value is not a number (feature is numeric)",
                )
                drop(
                    _beyond_float32(numbers),
                    "non_finite",
                    spec.name,
                    "value is infinite or beyond float32 (±3.4e38)",
                )
                out[spec.name] = _numbers_column(numbers)
            elif spec.kind is FeatureKind.CATEGORICAL:
                out[spec.name] = self._categories(spec.name, values)
            else:
                coded = Coded.of(values)
                texts, bad = _TEXT_TYPERS[spec.kind](coded.uniques)
                drop(coded.rows_where(bad), "type_mismatch", spec.name, _TEXT_MESSAGES[spec.kind])
                out[spec.name] = coded.column(texts)
        if self.contract.id_column:
            ids = batch.column(self.contract.id_column)
            drop(~_present(ids), "id_null", self.contract.id_column, "id value is missing")
            out[self.contract.id_column] = _ids(ids)
        for name in self.contract.sensitive:
            if name not in out:
                out[name] = normalised(batch.column(name))
        for role in self.carried:
            values = batch.column(role.column)
            out[role.column] = (
                _numbers_column(arrow_numbers(values)[0])
                if role.kind is FeatureKind.NUMERIC
                else normalised(values)
            )
        if labels is not None:
            self._count_labels(labels[0], keep)
        return Cleaned(columns=out, keep=keep, labels=labels)

    def _count_labels(self, coded: Coded, keep: NDArray[np.bool_]) -> None:
        """Rows per class and per spelling, over the rows kept."""
        kept = coded.codes[keep]
        counts = np.bincount(kept[kept >= 0], minlength=len(coded.uniques))
        for unique, count in zip(coded.uniques, counts.tolist(), strict=False):
            if not count:
                continue
            key = normalise_category(unique)
            self.classes[key] = self.classes.get(key, 0) + count
            spellings = self.spellings.setdefault(key, {})
            spelling = label_spelling(unique)
            spellings[spelling] = spellings.get(spelling, 0) + count

    def _categories(self, name: str, values: pa.Array) -> Column:
        """Normalised categories; notes whether any reads as a number (not ``text_only``)."""
        coded = Coded.of(values)
        keys = [normalise_category(u) for u in coded.uniques]
        if name not in self.numeric_categories and any(
            _NUMBER_TEXT.match(k) for k in keys if k != MISSING_CATEGORY
        ):
            self.numeric_categories.add(name)
        return coded.column([*keys, MISSING_CATEGORY])


def _present(values: pa.Array) -> NDArray[np.bool_]:
    """Cells that hold a value, as pandas' ``notna`` reads them: a float NaN is missing."""
    present: NDArray[np.bool_] = values.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(values.type):
        present &= ~np.isnan(values.to_numpy(zero_copy_only=False))
    return present


def _ids(values: pa.Array) -> Column:
    """Ids as text with surrounding white space dropped (Arrow's trim: the same characters as
    Python's ``str.strip``, tests hold them equal); a missing id stays missing (its row is
    dropped, ``id_null``). Nearly every id is distinct, so they are hashed as they are, not
    through a dictionary of distinct values."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        trimmed = pc.utf8_trim_whitespace(values).cast(pa.string())
        texts = trimmed.fill_null("").to_numpy(zero_copy_only=False)
        hashes: NDArray[np.uint64] = pd.util.hash_array(texts, categorize=False)
        hashes[~_present(values)] = _U8MAX  # as pandas hashes a missing value (its row is dropped)
        return Column(hashes=hashes, array=trimmed)
    # a Parquet id column of another type: its text as pandas writes it
    coded = Coded.of(values)
    series = pd.Series(coded.uniques, dtype=object).astype("string").str.strip()
    return coded.column([*(None if v is pd.NA else str(v) for v in series), None])


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> NDArray[np.uint64]:
    """A stable 64-bit hash per row over ``columns`` in sorted-name order (a typed frame's:
    ``Cleaned.row_hashes`` is the same over a cleaned batch, tests hold them equal).

    Stable across files, runs and dataset versions: values are hashed after typing and
    normalisation, so ``"5"`` and ``5.0`` in a numeric column, or ``" Red"`` and ``"red"`` in a
    categorical one, hash alike.
    """
    combined = np.zeros(len(frame), dtype=np.uint64)
    for name in sorted(columns):
        col = frame[name]
        if pd.api.types.is_float_dtype(col):
            hashed = hash_numbers(col.to_numpy(dtype=np.float64))
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


def _distinct_sorted(
    hashes: NDArray[np.uint64],
) -> tuple[NDArray[np.uint64], NDArray[np.intp]]:
    """``np.unique(hashes, return_index=True)``: the distinct hashes, sorted, and where each
    first occurs. An unstable sort (np.unique's is a stable merge sort, for the first index)
    then, among equal hashes (a few: duplicate rows), the least position."""
    order = np.argsort(hashes)
    ordered = hashes[order]
    if ordered.size < 2:
        return ordered, order
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    if starts.size == ordered.size:
        return ordered, order
    return ordered[starts], np.minimum.reduceat(order, starts)


class Deduplicator:
    """Remembers every row hash seen (8 bytes per row) so duplicates across batches are dropped;
    memory grows with distinct rows, not with file size.

    The hashes are kept in 16 shards by their top 4 bits, each as a few sorted runs, disjoint,
    each at least twice the next: a batch's hashes are looked up in their shard's runs with a
    binary search, and its fresh hashes become a new run there, merged with the last while it is
    at least half as long (as an LSM tree does). Merging every batch into one sorted array, as
    before, copied every hash seen at every 4 MB batch: linear per batch, so quadratic in a
    file's rows (a 5 GB file holds ~60 M rows). Sharding bounds what a merge copies (and the
    merge's own buffer) to a sixteenth of the hashes, so a file's peak is its hashes plus a
    sixth, not twice them (bench/processing.py's 5 GB file: 60 M rows, 480 MB of
    hashes)."""

    SHARDS = 16
    _EDGES = np.array([s << 60 for s in range(1, 16)], dtype=np.uint64)
    # A byte per value of a hash's top MAP_BITS bits, set once a hash with them is kept: a hash
    # whose byte is clear was never seen, so only the others are searched for in the runs
    # (a search misses the cache at every level of a run; most of a file's rows are new).
    # 16 MiB whatever the file; a 300 MB file's 3.5 M rows set a fifth of it.
    MAP_BITS = 24

    def __init__(self) -> None:
        self._shards: list[list[NDArray[np.uint64]]] = [[] for _ in range(self.SHARDS)]
        self._map = np.zeros(1 << self.MAP_BITS, dtype=np.uint8)

    @property
    def size(self) -> int:
        return sum(run.size for runs in self._shards for run in runs)

    @property
    def seen(self) -> NDArray[np.uint64]:
        """Every hash marked fresh so far, sorted and distinct (a copy; ``drain`` takes them
        without one)."""
        return np.concatenate([self._merged(s) for s in range(self.SHARDS)])

    def drain(self, path: Path) -> None:
        """``seen`` written to ``path`` as NPY (1-D little-endian uint64), emptying the
        deduplicator shard by shard as it goes: a part's row index at the memory of one
        shard's merge, never a second copy of the hashes."""
        with path.open("wb") as out:
            np.lib.format.write_array_header_1_0(
                out, {"descr": "<u8", "fortran_order": False, "shape": (self.size,)}
            )
            for shard in range(self.SHARDS):
                self._merged(shard).astype("<u8", copy=False).tofile(out)
                self._shards[shard] = []
            self._map.fill(0)

    def fresh(self, hashes: NDArray[np.uint64]) -> NDArray[np.bool_]:
        # the batch's distinct hashes, sorted: a sorted search walks each run once, in order
        # (4x faster than searching the rows' hashes in file order, a cache miss per level)
        distinct, first = _distinct_sorted(hashes)
        new = np.ones(distinct.size, dtype=bool)
        slots = (distinct >> np.uint64(64 - self.MAP_BITS)).astype(np.intp)
        maybe = self._map[slots].astype(bool)  # the rest were never seen
        bounds = [0, *np.searchsorted(distinct, self._EDGES).tolist(), distinct.size]
        for shard, runs in enumerate(self._shards):
            lo, hi = bounds[shard], bounds[shard + 1]
            if lo == hi:
                continue
            part = distinct[lo:hi]
            mine = new[lo:hi]  # a view: marks land in ``new``
            asked = np.flatnonzero(maybe[lo:hi])
            if runs and asked.size:
                wanted = part[asked]
                unseen = np.ones(asked.size, dtype=bool)
                for run in runs:
                    at = np.minimum(np.searchsorted(run, wanted), run.size - 1)
                    unseen &= run[at] != wanted
                mine[asked] = unseen
            if mine.any():
                runs.append(part[mine])
                while len(runs) > 1 and 2 * runs[-1].size >= runs[-2].size:
                    self._merge_last(runs)
        self._map[slots[new]] = 1
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first[new]] = True
        return mask

    def _merged(self, shard: int) -> NDArray[np.uint64]:
        runs = self._shards[shard]
        while len(runs) > 1:
            self._merge_last(runs)
        return runs[0] if runs else np.empty(0, dtype=np.uint64)

    @staticmethod
    def _merge_last(runs: list[NDArray[np.uint64]]) -> None:
        """The last two runs as one (disjoint sorted runs: timsort merges them in linear time)."""
        newer, older = runs.pop(), runs.pop()
        merged = np.concatenate([older, newer])
        merged.sort(kind="stable")
        runs.append(merged)
