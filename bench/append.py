"""What an upload costs as its dataset's history grows: the same-sized file appended to a dataset
of ≥ 1 GB and to an empty one, in the same run (issue 20, "cost independent of history").

``python -m bench.append [--quick] [--json]``. The history is four churn CSVs of 256 MB each
(bench.preprocess's generator, ids apart), built once into a dataset by four uploads and cached
under ``.build/bench/append/`` with the times those uploads took. Each round then appends a new
10 MB file (its own seed and ids, so a new part) to the history dataset, and the same file to a
fresh dataset holding only the contract, each ``process_upload`` in its own interpreter over
bench.preprocess's ``FolderStore`` (objects are files, as S3 holds them). The figure is the
median time of the first over the median time of the second: the target is ≤ 1.5×. The history
grows by each round's 10 MB (≤ 3 % over five rounds).

``--quick`` shrinks the history to 4 × 8 MB and the appended file to 1 MB: a smoke run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.preprocess import CONTRACT, FolderStore, write_churn_csv
from bench.report import Figure, Section, run_child, run_cli

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".build" / "bench" / "append"
HISTORY_FILES = 4
FULL = {"history_mb": 256, "append_mb": 10, "rounds": 5}
QUICK = {"history_mb": 8, "append_mb": 1, "rounds": 2}
TARGET_RATIO = 1.5
HISTORY = "history"
FORMAT = 1  # bump when what preprocess writes changes, so a cached history is rebuilt
IDS_APART = 100_000_000  # each file's customer ids start this far from the last one's


def child(store_root: str, dataset: str, key: str) -> None:
    """One upload event of ``key`` processed in this fresh interpreter; prints a JSON line."""
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from functions.preprocess.logic import process_upload
    from tests.builders import upload_of
    from tests.fakes import RecordingOrchestrator

    store = FolderStore(Path(store_root))
    info = store.head("raw", key)
    assert info is not None, key
    started = time.perf_counter()
    outcome = process_upload(
        upload_of(info), store=store, orchestrator=RecordingOrchestrator(), artifacts_bucket="art"
    )
    seconds = time.perf_counter() - started
    assert outcome.status == "started", outcome.reason
    assert outcome.rows is not None
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows_read": outcome.rows.read,
                "accepted": outcome.rows.accepted,
                "dataset": dataset,
            }
        )
    )


def _csv(name: str, megabytes: int, seed: int, start: int) -> Path:
    path = CACHE / "files" / f"{name}-{megabytes}mb-seed{seed}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        write_churn_csv(partial, megabytes * 1_000_000, seed=seed, start=start)
        partial.replace(path)
    return path


def _place(root: Path, dataset: str, csv: Path) -> str:
    """The file as an object of ``dataset`` (a link: the bench measures sluice, not copying)."""
    key = f"{dataset}/data/{csv.name}"
    target = root / "raw" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(csv.resolve())
    return key


def _contract(root: Path, dataset: str) -> None:
    path = root / "raw" / dataset / "contract.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(CONTRACT))


def _history(sizes: dict[str, int]) -> tuple[Path, dict[str, Any]]:
    """The store holding the history dataset, built once per size and format."""
    root = CACHE / f"store-{sizes['history_mb']}mb-f{FORMAT}"
    done = root / "built.json"
    if done.exists():
        return root, json.loads(done.read_text())
    shutil.rmtree(root, ignore_errors=True)
    _contract(root, HISTORY)
    builds = []
    for index in range(HISTORY_FILES):
        csv = _csv("history", sizes["history_mb"], seed=100 + index, start=index * IDS_APART)
        key = _place(root, HISTORY, csv)
        builds.append(run_child("append", str(root), HISTORY, key))
    mb = sum(p.stat().st_size for p in (root / "raw" / HISTORY / "data").iterdir()) / 1e6
    built = {"mb": round(mb, 1), "uploads": builds}
    done.write_text(json.dumps(built))
    return root, built


def measure(quick: bool = False) -> Section:
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    root, built = _history(sizes)
    history_seconds = time.perf_counter() - started
    onto_history: list[dict[str, Any]] = []
    onto_empty: list[dict[str, Any]] = []
    stamp = time.strftime("%Y%m%d%H%M%S")
    appended_mb = []
    for index in range(sizes["rounds"]):
        seed = 1000 + index
        csv = _csv(f"append-{stamp}", sizes["append_mb"], seed, (50 + index) * IDS_APART)
        appended_mb.append(csv.stat().st_size / 1e6)
        empty = f"empty-{stamp}-{index}"
        _contract(root, empty)
        # alternate which goes first, so load on the machine hits both alike
        pair = [(HISTORY, onto_history), (empty, onto_empty)]
        for dataset, results in pair if index % 2 == 0 else reversed(pair):
            results.append(run_child("append", str(root), dataset, _place(root, dataset, csv)))
        shutil.rmtree(root / "art" / empty, ignore_errors=True)
        shutil.rmtree(root / "raw" / empty, ignore_errors=True)
        csv.unlink()
    history_run = float(statistics.median(r["seconds"] for r in onto_history))
    empty_run = float(statistics.median(r["seconds"] for r in onto_empty))
    ratio = history_run / empty_run
    history_mb = built["mb"] + sum(appended_mb)
    size = statistics.median(appended_mb)
    section = Section("append", f"append: a {size:.0f} MB file onto {history_mb / 1000:.2f} GB")
    section.add(
        Figure(
            f"append {size:.0f} MB onto {history_mb / 1000:.2f} GB of history ÷ onto "
            "an empty dataset (median)",
            "×",
            ratio,
            better="lower",
            target=f"≤ {TARGET_RATIO}×",
            met=ratio <= TARGET_RATIO,
            note=f"{history_run:.2f} s vs {empty_run:.2f} s",
        )
    )
    section.details = {
        "history": built,
        "history_ready_seconds": round(history_seconds, 1),
        "seconds_onto_history": [round(r["seconds"], 3) for r in onto_history],
        "seconds_onto_empty": [round(r["seconds"], 3) for r in onto_empty],
        "rows_read_onto_history": [r["rows_read"] for r in onto_history],
        "rows_read_onto_empty": [r["rows_read"] for r in onto_empty],
        "cores": os.cpu_count(),
    }
    return section


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
