"""Preprocessing throughput and peak memory: a 300 MB churn CSV becomes a dataset version.

``python -m bench.preprocess [--quick]``. A churn-like CSV (an id, six numeric and five
categorical columns, a yes/no target, a few gaps, duplicate rows, unreadable cells and
inconsistent category spellings) is generated once and cached under ``.build/bench/``. Each tool
then runs in its own fresh interpreter, so its peak RSS (``ru_maxrss``, imports included) is its
own:

- **sluice**: ``process_upload`` on the upload event of that file, exactly as the Lambda runs it,
  over a filesystem ``ObjectStore`` (objects are files, as S3 would hold them: nothing of the
  output stays in memory) and a recording orchestrator: download with the sha256, typing,
  cleaning, deduplication, split assignment, three zstd Parquet splits, profile, manifest;
- **peer**: ``pandas.read_csv(path)`` with its defaults: what a user would start from, and only
  the parse, none of the rest;
- **floor**: ``pyarrow.csv.read_csv(path)`` with its defaults (type inference, every core):
  the parse alone, into memory.

MB/s is the file's size (10⁶ bytes) over the seconds the call takes in the warm interpreter
(imports excluded: cold starts are bench/coldstart.py's). Tools alternate, round after round, and
the median of each is reported, so load from others on the machine hits all three alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.report import Figure, Section, run_child, run_cli
from functions.shared.storage import ObjectChangedError, ObjectInfo, ObjectStore, sha256_stream

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".build" / "bench" / "preprocess"
FULL_MB, QUICK_MB = 300, 30
FULL_ROUNDS, QUICK_ROUNDS = 3, 2
SEED = 7
GENERATOR = 1  # bump when the generated file changes, so cached copies are not reused
CHUNK_ROWS = 250_000
TARGET_VS_FLOOR = 0.4  # ≥ 0.4× the floor's MB/s (issue 20, part 4)
TARGET_RSS_VS_FILE = 2.0  # peak RSS ≤ 2× the file size
DATASET = "churn"
CONTRACT = {
    "target": "churned",
    "task": "classification",
    "metric": "f1_macro",
    "threshold": 0.6,
    "id_column": "customer_id",
}
TOOLS = ("floor", "peer", "sluice")


# -- the file --------------------------------------------------------------------------------
def churn_csv(megabytes: int) -> Path:
    """The cached CSV of about ``megabytes`` MB, generated on first use (a few seconds)."""
    path = CACHE / f"churn-{megabytes}mb-seed{SEED}-v{GENERATOR}.csv"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    write_churn_csv(partial, megabytes * 1_000_000)
    partial.replace(path)  # atomic: a killed run never leaves a short file under the final name
    return path


def write_churn_csv(path: Path, target_bytes: int, seed: int = SEED, start: int = 0) -> None:
    """About ``target_bytes`` of churn rows, their customer ids counted from ``start``."""
    import numpy as np
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    # as most exports are: no quotes (none is needed), the header written by hand unquoted
    plain = pacsv.WriteOptions(quoting_style="none", include_header=False)
    # ~86 bytes a row: the first chunk no larger than the file asked for
    first, rows = start, max(1, min(CHUNK_ROWS, target_bytes // 86))
    with path.open("wb") as sink:
        writer: pacsv.CSVWriter | None = None
        while sink.tell() < target_bytes:
            table = _churn_chunk(rng, start, rows)
            if writer is None:
                sink.write((",".join(table.column_names) + "\n").encode())
                writer = pacsv.CSVWriter(sink, table.schema, write_options=plain)
            writer.write_table(table)
            start += rows
            row_bytes = sink.tell() / (start - first)
            rows = max(1, min(CHUNK_ROWS, int((target_bytes - sink.tell()) / row_bytes) + 1))
        assert writer is not None
        writer.close()


def _churn_chunk(rng: Any, start: int, rows: int) -> Any:
    """``rows`` churn rows: ~86 bytes each as CSV."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    def choice(values: list[str], missing: float = 0.0) -> pa.Array:
        picked = pa.array(np.array(values, dtype=object)[rng.integers(0, len(values), rows)])
        return _with_gaps(rng, picked, missing)

    ids = pc.cast(pa.array(np.arange(start, start + rows)), pa.string())
    tenure = rng.integers(1, 73, rows)
    charges = np.round(rng.normal(70, 25, rows), 2)
    calls = rng.poisson(1.5, rows)
    plan_code = rng.integers(0, 3, rows)
    risk = -0.05 * tenure + 0.03 * charges + 0.4 * calls + (plan_code == 0) + rng.normal(0, 1, rows)
    tenure_text = pc.cast(pa.array(tenure), pa.string())
    unreadable = pa.array(rng.random(rows) < 0.0002)  # "unknown" in a numeric column
    plans = np.array(["Basic", "Standard", "Premium", " basic", "PREMIUM "], dtype=object)
    plan_spelling = np.where(rng.random(rows) < 0.02, plan_code * 0 + 3 + (plan_code == 2), 0)
    plan = plans[np.where(plan_spelling > 0, plan_spelling, plan_code)]
    columns = {
        "customer_id": pc.binary_join_element_wise("C", pc.utf8_lpad(ids, 9, "0"), ""),
        "tenure": pc.if_else(unreadable, pa.scalar("unknown"), tenure_text),
        "monthly_charges": _with_gaps(rng, pa.array(charges), 0.03),
        "total_charges": _with_gaps(rng, pa.array(np.round(charges * tenure, 2)), 0.01),
        "support_calls": pa.array(calls),
        "data_gb": pa.array(np.round(rng.gamma(2.0, 8.0, rows), 1)),
        "age": pa.array(rng.integers(18, 90, rows)),
        "contract": choice(["Month-to-month", "One year", "Two year"]),
        "plan": pa.array(plan),
        "region": choice(["north", "south", "east", "west"], missing=0.03),
        "payment": choice(["Electronic check", "Mailed check", "Bank transfer", "Credit card"]),
        "paperless": choice(["Yes", "No"]),
        "churned": pa.array(np.where(risk > 1.6, "yes", "no")),
    }
    table = pa.table(columns)
    # 0.5 % of rows repeat an earlier row of the chunk verbatim (a re-sent record)
    order = np.arange(rows)
    repeats = rng.random(rows) < 0.005
    order[repeats] = rng.integers(0, rows, int(repeats.sum()))
    return table.take(pa.array(order))


def _with_gaps(rng: Any, values: Any, share: float) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not share:
        return values
    gaps = pa.array(rng.random(len(values)) < share)
    return pc.if_else(gaps, pa.scalar(None, values.type), values)


# -- one tool in its own interpreter ----------------------------------------------------------
def child(tool: str, csv: str) -> None:
    """Entry point of the child process: one run of ``tool`` over ``csv``; prints a JSON line."""
    path = Path(csv)
    run = {"floor": _floor, "peer": _peer, "sluice": _sluice}[tool]
    prepared = run(path)  # imports and set-up, untimed
    rss_ready = _peak_rss()
    started = time.perf_counter()
    detail = prepared()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss": _peak_rss(), "rss_ready": rss_ready, **detail}))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _floor(path: Path) -> Any:
    import pyarrow.csv as pacsv

    def go() -> dict[str, Any]:
        return {"rows": pacsv.read_csv(path).num_rows}

    return go


def _peer(path: Path) -> Any:
    import pandas as pd

    def go() -> dict[str, Any]:
        return {"rows": len(pd.read_csv(path))}

    return go


def _sluice(path: Path) -> Any:
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from functions.preprocess.logic import process_upload
    from functions.shared import layout
    from tests.builders import upload_of
    from tests.fakes import RecordingOrchestrator

    work = Path(tempfile.mkdtemp(prefix="sluice-bench-preprocess-"))
    store = FolderStore(work)
    store.put_bytes("raw", layout.contract_key(DATASET), json.dumps(CONTRACT).encode())
    data_key = f"{DATASET}/data/{path.name}"
    (work / "raw" / data_key).parent.mkdir(parents=True, exist_ok=True)
    (work / "raw" / data_key).symlink_to(path.resolve())
    info = store.head("raw", data_key)
    assert info is not None

    def go() -> dict[str, Any]:
        try:
            outcome = process_upload(
                upload_of(info),
                store=store,
                orchestrator=RecordingOrchestrator(),
                artifacts_bucket="artifacts",
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        assert outcome.status == "started", outcome.reason
        assert outcome.rows is not None
        return {"rows": outcome.rows.read, "accepted": outcome.rows.accepted}

    return go


class FolderStore(ObjectStore):
    """Buckets as folders: objects live on disk as they would in S3, never in memory.

    ``download`` streams and hashes in chunks like the S3 adapter; the ETag is derived from size
    and mtime (S3 computes it on upload; hashing the file here would bill the bench, not sluice).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / bucket / key

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self._path(bucket, key)
        if not path.is_file():
            return None
        stat = path.stat()
        etag = hashlib.md5(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()
        return ObjectInfo(bucket, key, stat.st_size, etag)

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        base = self.root / bucket
        keys = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        found = (self.head(bucket, k) for k in keys if k.startswith(prefix))
        return sorted((o for o in found if o is not None), key=lambda o: o.key)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._path(bucket, key).read_bytes()

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def download(
        self,
        bucket: str,
        key: str,
        dest: Path,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> str:
        current = self.head(bucket, key)
        if if_match is not None and (current is None or current.etag != if_match):
            raise ObjectChangedError(bucket, key, if_match)
        with self._path(bucket, key).open("rb") as source, dest.open("wb") as sink:
            return sha256_stream(source, sink)

    def purge_prefix(self, bucket: str, prefix: str) -> int:
        found = self.list(bucket, prefix)  # folders keep one version of each object
        for info in found:
            self._path(bucket, info.key).unlink()
        return len(found)

    def upload(self, src: Path, bucket: str, key: str) -> None:
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)


# -- the section ------------------------------------------------------------------------------
def measure(quick: bool = False) -> Section:
    megabytes = QUICK_MB if quick else FULL_MB
    started = time.perf_counter()
    csv = churn_csv(megabytes)
    generated = time.perf_counter() - started
    size_mb = csv.stat().st_size / 1e6
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TOOLS}
    for _ in range(QUICK_ROUNDS if quick else FULL_ROUNDS):
        for tool in TOOLS:
            runs[tool].append(run_child("preprocess", tool, str(csv)))

    def median(tool: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[tool]))

    speed = {t: size_mb / median(t, "seconds") for t in TOOLS}
    rss = {t: median(t, "rss") / 1e6 for t in TOOLS}
    section = Section("preprocess", f"preprocess: a {size_mb:.0f} MB CSV → dataset version")
    speed_met = speed["sluice"] >= TARGET_VS_FLOOR * speed["floor"]
    rss_met = rss["sluice"] <= TARGET_RSS_VS_FILE * size_mb
    section.add(
        Figure(
            "throughput, CSV → dataset version (median)",
            "MB/s",
            speed["sluice"],
            peer=speed["peer"],
            floor=speed["floor"],
            better="higher",
            target=f"≥ {TARGET_VS_FLOOR}× floor",
            met=speed_met,
            note="peer: pandas.read_csv (parse only); floor: pyarrow.csv.read_csv (parse only)",
        )
    )
    section.add(
        Figure(
            "peak RSS (median, imports included)",
            "MB",
            rss["sluice"],
            peer=rss["peer"],
            floor=rss["floor"],
            better="lower",
            target=f"≤ {TARGET_RSS_VS_FILE:.0f}× file ({TARGET_RSS_VS_FILE * size_mb:.0f} MB)",
            met=rss_met,
        )
    )
    section.details = {
        "file": {"path": str(csv.relative_to(ROOT)), "mb": round(size_mb, 1)},
        "generate_seconds": round(generated, 1),
        "rows": runs["sluice"][0]["rows"],
        "accepted": runs["sluice"][0]["accepted"],
        "seconds": {t: [round(r["seconds"], 2) for r in runs[t]] for t in TOOLS},
        "rss_mb": {t: [round(r["rss"] / 1e6) for r in runs[t]] for t in TOOLS},
        "rss_after_imports_mb": {t: round(median(t, "rss_ready") / 1e6) for t in TOOLS},
        "cores": os.cpu_count(),
    }
    return section


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
