"""A format-2 split's part files read as Arrow tables, a row several parts hold kept once: the
rule of ``row_hash.first_occurrences`` applied to tables (evaluate's test split, the tools that
read a stored version). Its own module because ``row_hash`` stays numpy-only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from functions.shared.row_hash import ROW_HASH, first_occurrences


def kept_once(tables: Sequence[pa.Table]) -> list[pa.Table]:
    """The tables, in the order given (file-name order), each less the rows an earlier one
    holds and less the hash column."""
    keep = first_occurrences(
        [t.column(ROW_HASH).to_numpy().astype(np.uint64, copy=False) for t in tables]
    )
    return [
        t.filter(pa.array(k)).drop_columns([ROW_HASH]) for t, k in zip(tables, keep, strict=True)
    ]
