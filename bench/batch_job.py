"""Batch files past one Lambda: a CSV scored by the processing job the batch function starts.

``python -m bench.batch_job [--mb 1000] [--json]``. bench/batch.py's model (the test multiclass
model) and CSV (its test rows repeated with a unique id, generated once at the size asked and
cached under ``.build/bench/batch/``) are used. Then, as on the local stack:

1. ``score_batch`` sees a file over the function's cap and, with a route, writes the job's
   request and starts it (it scores nothing);
2. the batch jobs definition (infra/statemachine/batch.asl.json) runs in the local ASL
   interpreter: ``ScoreFile`` through the local processing runner
   (infra/local/processing_runner.py), which runs ``functions.batch.job.main`` in a subprocess
   under the Processing directory contract.

Objects are files (bench/batch.py's ``StreamingFolderStore``: streamed reads, staged parts
renamed into place when committed), for the reason bench/processing.py gives (moto's server
reads all of an object for every ranged GET); the job's store is handed to ``job.main`` by this
module's ``--job`` entry, the only difference from the deployed container's ``job_boot``.

Printed: the job's wall time, its peak RSS (VmHWM of the job's process), rows and MB per second,
and what one instance scores per hour here (GB and rows of CSV): the figures
``functions.batch.route.BatchJobLimits`` is checked against.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.batch import CACHE, StreamingFolderStore, prepared

RAW, ARTIFACTS = "raw", "artifacts"
STORE = CACHE / "job-store"


def job_entry(store_root: str) -> int:
    """What the container's ``job_boot`` runs, over the folder store; prints its peak RSS."""
    from functions.batch.job import main

    code = main(store=StreamingFolderStore(Path(store_root)))
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_bytes": int(line.split()[1]) * 1024}))
    return code


def run(megabytes: int) -> dict[str, Any]:
    from functions.batch.logic import score_batch
    from functions.batch.route import BatchJobInput, BatchRoute
    from functions.shared import layout
    from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
    from functions.shared.orchestration import RunStart
    from functions.shared.registry import LivePointer
    from infra.local.asl import run as run_definition
    from infra.local.pipeline import PROCESSING_RESOURCE, batch_definition
    from infra.local.processing_runner import run_processing_job
    from infra.topology import Topology
    from tests.fakes import InMemoryRegistry

    model_dir, csv = prepared(megabytes)
    shutil.rmtree(STORE, ignore_errors=True)
    store = StreamingFolderStore(STORE)
    card = ModelCard.model_validate_json((model_dir / MODEL_CARD_FILE).read_bytes())
    for name in (MODEL_FILE, MODEL_CARD_FILE):
        store.put_bytes(ARTIFACTS, f"models/{name}", (model_dir / name).read_bytes())
    key = f"{card.dataset}/batch/{csv.name}"
    (STORE / RAW / key).parent.mkdir(parents=True)
    os.link(csv, STORE / RAW / key)  # the object is the cached file: no copy
    pointer = LivePointer(
        dataset=card.dataset,
        version=1,
        sha256=card.onnx.sha256,
        model_uri=f"s3://{ARTIFACTS}/models/{MODEL_FILE}",
        card_uri=f"s3://{ARTIFACTS}/models/{MODEL_CARD_FILE}",
        generation=1,
        updated_at=datetime.now(UTC),
    )

    class OneLiveModel(InMemoryRegistry):
        def live(self, dataset: str) -> LivePointer | None:
            return pointer if dataset == pointer.dataset else None

    class Route(BatchRoute):
        job: BatchJobInput | None = None

        def exists(self, name: str) -> bool:
            return False

        def start(self, job: BatchJobInput) -> RunStart:
            self.job = job
            return RunStart(job.run_name, f"batch:{job.run_name}", started=True)

    route = Route()
    started = time.perf_counter()
    routed = score_batch(
        store,
        OneLiveModel(),
        raw_bucket=RAW,
        artifacts_bucket=ARTIFACTS,
        key=key,
        max_file_bytes=0,  # any size takes the route
        route=route,
        identity=f"bench|{csv.name}",
    )
    route_seconds = time.perf_counter() - started
    assert routed.status == "routed" and route.job is not None, routed.reason
    topology = Topology(stage="bench")
    said: dict[str, Any] = {}

    def process(parameters: dict[str, Any]) -> Any:
        app = dict(parameters["AppSpecification"])
        app["ContainerEntrypoint"] = ["python3", "-m", "bench.batch_job", "--job", str(STORE)]
        result = run_processing_job({**parameters, "AppSpecification": app}, store)
        said["wall"] = result.processing_seconds
        said["printed"] = result.output_tail
        if result.processing_job_status != "Completed":
            raise RuntimeError(f"{result.failure_reason}: {result.exit_message}")
        return result.model_dump(by_alias=True, exclude_none=True)

    execution = run_definition(
        batch_definition(topology),
        json.loads(route.job.execution_input()),
        tasks={PROCESSING_RESOURCE: process},
        execution_name=route.job.run_name,
        sleep=lambda seconds: None,
    )
    if execution.status != "SUCCEEDED":
        raise RuntimeError(f"batch job failed: {execution.error}: {execution.cause}")
    # the end of what the job printed: its peak RSS is the last line (its outcome, which lists
    # every part, may be longer than the tail the runner keeps)
    rss = json.loads(said["printed"].strip().splitlines()[-1])["peak_rss_bytes"]
    prefix = layout.predictions_prefix(card.dataset, key, 1)
    outcome = json.loads(store.get_bytes(ARTIFACTS, f"{prefix}_manifest.json"))
    assert outcome["status"] == "scored", outcome
    size = csv.stat().st_size
    seconds = outcome["seconds"]
    shutil.rmtree(STORE, ignore_errors=True)
    return {
        "file_bytes": size,
        "rows": outcome["rows"],
        "parts": len(outcome["parts"]),
        "route_seconds": round(route_seconds, 3),
        "job_wall_seconds": said["wall"],
        "job_scoring_seconds": seconds,
        "job_peak_rss_bytes": rss,
        "rows_per_second": round(outcome["rows"] / seconds),
        "mb_per_second": round(size / 1e6 / seconds, 1),
        "gb_per_instance_hour": round(size / 1e9 / seconds * 3600, 1),
        "rows_per_instance_hour": round(outcome["rows"] / seconds * 3600),
    }


def render(figures: dict[str, Any]) -> str:
    mb = 1 << 20
    return (
        f"batch job: {figures['file_bytes'] / 1e6:,.0f} MB CSV, {figures['rows']:,} rows, "
        f"{figures['parts']} parts; routed in {figures['route_seconds']} s; job "
        f"{figures['job_wall_seconds']} s wall ({figures['job_scoring_seconds']} s scoring: "
        f"{figures['rows_per_second']:,} rows/s, {figures['mb_per_second']} MB/s), peak RSS "
        f"{figures['job_peak_rss_bytes'] / mb:,.0f} MiB; one instance here: "
        f"{figures['gb_per_instance_hour']} GB, {figures['rows_per_instance_hour']:,} rows an hour"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000, help="CSV size, 10⁶ bytes (default 1000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        return job_entry(args.job)
    figures = run(args.mb)
    print(json.dumps(figures, indent=2) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
