"""Batch predictions throughput and peak memory: a ~200 MB CSV scored by the live model.

``python -m bench.batch [--quick]``. The session's multiclass test model (numeric and
categorical features, trained here once, a few seconds) is made live in an in-memory registry;
a CSV of its test rows, repeated to ~200 MB with a unique id per row, is generated once and
cached under ``.build/bench/batch/``. Each run is a fresh interpreter, so its peak RSS (VmHWM,
imports included) is its own:

- **sluice**: ``score_batch`` on that file, exactly as the Lambda runs it, over a filesystem
  store that streams like S3 (the input read as a stream, the parts staged in files and renamed
  into place when committed: nothing of the input or output stays in memory), 50 000 rows a
  chunk;
- **floor**: ``pyarrow.csv.read_csv(path)`` with its defaults (type inference, every core): the
  parse alone, into memory.

Rows/s and MB/s are the file's rows and size (10⁶ bytes) over the seconds ``score_batch`` takes
(imports and model load excluded: a cold start is bench/coldstart.py's); MB per CPU-second is
the size over the CPU time it takes, every thread counted, which others' load on a shared
machine does not change much. The median of the rounds is reported.
``functions/batch/logic.py`` derives ``MAX_FILE_BYTES`` from that figure
(``bytes_per_cpu_second`` in the details): a 3008 MB Lambda has about 1.7 vCPU.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from bench.preprocess import FolderStore
from bench.report import Figure, Section, run_child, run_cli
from functions.shared.storage import StagedObject

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".build" / "bench" / "batch"
FULL_MB, QUICK_MB = 200, 20
FULL_ROUNDS, QUICK_ROUNDS = 2, 1
GENERATOR = 1  # bump when the generated file changes, so cached copies are not reused
TARGET_RSS_MB = 1_000  # the function has 3008 MB; a file of any size must fit in a third


class StreamingFolderStore(FolderStore):
    """``FolderStore`` with the streaming reads and staged writes the batch function uses."""

    def open_read(
        self, bucket: str, key: str, *, start: int = 0, if_match: str | None = None
    ) -> BinaryIO:
        self.require_etag(bucket, key, if_match)
        stream = self._path(bucket, key).open("rb")
        stream.seek(start)
        return stream

    def read_range(
        self, bucket: str, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        self.require_etag(bucket, key, if_match)
        with self._path(bucket, key).open("rb") as source:
            source.seek(start)
            return source.read(max(0, end - start))

    def stage(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/json"
    ) -> StagedObject:
        staging = self.root / "_staged"
        staging.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=staging)
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
        return StagedObject(bucket, key, name)

    def commit(self, staged: StagedObject) -> None:
        path = self._path(staged.bucket, staged.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.upload_id, path)

    def abort(self, staged: StagedObject) -> None:
        Path(staged.upload_id).unlink(missing_ok=True)


# -- the model and the file ------------------------------------------------------------------
def prepared(megabytes: int) -> tuple[Path, Path]:
    """The cached model folder (``model.onnx``, ``model_card.json``) and CSV of about
    ``megabytes`` MB."""
    from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE

    model_dir = CACHE / f"model-v{GENERATOR}"
    csv = CACHE / f"multiclass-{megabytes}mb-v{GENERATOR}.csv"
    if model_dir.exists() and csv.exists():
        return model_dir, csv
    from tests.models import train_model

    model = train_model(Path(tempfile.mkdtemp(prefix="sluice-bench-batch-")), "multiclass")
    if not model_dir.exists():
        partial_dir = CACHE / f"model.{os.getpid()}.part"
        partial_dir.mkdir(parents=True, exist_ok=True)
        (partial_dir / MODEL_FILE).write_bytes(model.onnx)
        (partial_dir / MODEL_CARD_FILE).write_bytes(model.card_json)
        partial_dir.replace(model_dir)
    if not csv.exists():
        partial = csv.with_suffix(f".{os.getpid()}.part")
        _write_csv(model, partial, megabytes * 1_000_000)
        partial.replace(csv)  # atomic: a killed run never leaves a short file under the name
    return model_dir, csv


def _write_csv(model: Any, path: Path, target_bytes: int) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    features = model.split("test")[[f.name for f in model.card.features]]
    block = pa.Table.from_pandas(features, preserve_index=False)
    with path.open("wb") as sink:
        writer: pacsv.CSVWriter | None = None
        start = 0
        while sink.tell() < target_bytes:
            ids = pa.array([f"C{i:09d}" for i in range(start, start + block.num_rows)])
            table = block.add_column(0, "customer_id", ids)
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema)
            writer.write_table(table)
            start += block.num_rows
        assert writer is not None
        writer.close()


# -- one run in its own interpreter ----------------------------------------------------------
def child(tool: str, model_path: str, csv: str) -> None:
    """Entry point of the child process: one run of ``tool``; prints a JSON line."""
    path = Path(csv)
    go = _floor(path) if tool == "floor" else _sluice(Path(model_path), path)
    rss_ready = _peak_rss()
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    detail = go()
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "rss": _peak_rss(), "rss_ready": rss_ready, **detail}
        )
    )


def _cpu_seconds() -> float:
    """User + system CPU time of this process, every thread: on a machine others load, wall
    time measures them; CPU time measures the work."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss() -> int:
    """VmHWM: the peak RSS of this process since its exec (``ru_maxrss`` would carry over the
    parent's at fork)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _floor(path: Path) -> Any:
    import pyarrow.csv as pacsv

    def go() -> dict[str, Any]:
        return {"rows": pacsv.read_csv(path).num_rows}

    return go


def _sluice(model_dir: Path, path: Path) -> Any:
    """Only what the batch function imports, plus a one-pointer registry: neither the training
    stack that made the model nor pandas (which pyarrow would import lazily, and the function's
    layer lacks) is loaded, so the RSS is the function's."""
    from datetime import UTC, datetime

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from functions.batch.logic import score_batch
    from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
    from functions.shared.registry import LivePointer

    # it hides pandas, scikit-learn and scipy, as the function's layer lacks them (and fails if
    # one was imported already)
    from tests.integration.batch_memory_child import OneLiveModel

    work = Path(tempfile.mkdtemp(prefix="sluice-bench-batch-"))
    store = StreamingFolderStore(work)
    card = ModelCard.model_validate_json((model_dir / MODEL_CARD_FILE).read_bytes())
    for name in (MODEL_FILE, MODEL_CARD_FILE):
        store.put_bytes("artifacts", f"models/{name}", (model_dir / name).read_bytes())
    registry = OneLiveModel(
        LivePointer(
            dataset=card.dataset,
            version=1,
            sha256=card.onnx.sha256,
            model_uri=f"s3://artifacts/models/{MODEL_FILE}",
            card_uri=f"s3://artifacts/models/{MODEL_CARD_FILE}",
            generation=1,
            updated_at=datetime.now(UTC),
        )
    )
    key = f"{card.dataset}/batch/{path.name}"
    (work / "raw" / key).parent.mkdir(parents=True, exist_ok=True)
    (work / "raw" / key).symlink_to(path.resolve())

    def go() -> dict[str, Any]:
        try:
            outcome = score_batch(
                store, registry, raw_bucket="raw", artifacts_bucket="artifacts", key=key
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        assert outcome.status == "scored", outcome.reason
        return {"rows": outcome.rows, "parts": len(outcome.parts)}

    return go


# -- the section ------------------------------------------------------------------------------
def measure(quick: bool = False) -> Section:
    from functions.batch.logic import MAX_FILE_BYTES, SCORED_BYTES_PER_SECOND, SCORING_SECONDS

    megabytes = QUICK_MB if quick else FULL_MB
    model_path, csv = prepared(megabytes)
    size_mb = csv.stat().st_size / 1e6
    runs: dict[str, list[dict[str, Any]]] = {"floor": [], "sluice": []}
    for _ in range(QUICK_ROUNDS if quick else FULL_ROUNDS):
        for tool in runs:
            runs[tool].append(run_child("batch", tool, str(model_path), str(csv)))

    def median(tool: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[tool]))

    rows = runs["sluice"][0]["rows"]
    seconds = median("sluice", "seconds")
    cpu = median("sluice", "cpu")
    speed = {t: size_mb / median(t, "seconds") for t in runs}
    rss_mb = median("sluice", "rss") / 1e6
    section = Section("batch", f"batch predictions: a {size_mb:.0f} MB CSV scored, streamed")
    section.add(
        Figure("throughput, rows scored (median)", "rows/s", rows / seconds, better="higher")
    )
    section.add(
        Figure(
            "throughput, CSV → prediction parts (median)",
            "MB/s",
            speed["sluice"],
            floor=speed["floor"],
            better="higher",
            note="floor: pyarrow.csv.read_csv (parse only, into memory)",
        )
    )
    section.add(
        Figure(
            "throughput per CPU-second, every thread (median)",
            "MB/s",
            size_mb / cpu,
            better="higher",
            note="the function's cap is derived from this one: it holds under others' load",
        )
    )
    section.add(
        Figure(
            "peak RSS (median, imports included)",
            "MB",
            rss_mb,
            better="lower",
            target=f"≤ {TARGET_RSS_MB} MB whatever the file's size",
            met=rss_mb <= TARGET_RSS_MB,
        )
    )
    section.details = {
        "file": {"path": str(csv.relative_to(ROOT)), "mb": round(size_mb, 1), "rows": rows},
        "parts": runs["sluice"][0]["parts"],
        "seconds": {t: [round(r["seconds"], 2) for r in runs[t]] for t in runs},
        "rss_mb": {t: [round(r["rss"] / 1e6) for r in runs[t]] for t in runs},
        "rss_after_imports_mb": round(median("sluice", "rss_ready") / 1e6),
        "cpu_seconds": [round(r["cpu"], 2) for r in runs["sluice"]],
        "load_average": os.getloadavg(),
        # what functions/batch/logic.py derives MAX_FILE_BYTES from
        "bytes_per_cpu_second": int(size_mb / cpu * 1e6),
        "scored_bytes_per_second_assumed": SCORED_BYTES_PER_SECOND,
        "scoring_seconds": SCORING_SECONDS,
        "max_file_bytes": MAX_FILE_BYTES,
        "cores": os.cpu_count(),
    }
    return section


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
