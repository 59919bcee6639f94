"""The route past one Lambda: a 5 GB CSV becomes a dataset version through the processing job.

``python -m bench.processing [--gb 5] [--instances N]``. The churn CSV of bench/preprocess.py
(an id, six numeric and five categorical columns, gaps, duplicates, bad cells), generated once at
the size asked and cached under ``.build/bench/processing/``, is uploaded to a fresh dataset.
Then, as on the local stack:

1. ``process_upload`` sees an object over the Lambda cap and starts a build (it reads nothing);
2. the builds definition (infra/statemachine/builds.asl.json) runs in the local ASL interpreter:
   ``BuildParts`` through the local processing runner (infra/local/processing_runner.py), which
   runs ``functions.preprocess.part_job.main`` in a subprocess per instance under the
   Processing directory contract; ``Assemble`` through the preprocess handler's logic in a
   fresh interpreter (``assemble_build``), which writes the version and starts the run.

Objects are files (bench/preprocess.py's ``FolderStore``), as everywhere in the benches: moto's
server holds an object in memory and reads all of it for every ranged GET, which would measure
moto. The job's store is therefore handed to ``part_job.main`` by this module's ``--job`` entry,
the only difference from the deployed container's ``job_boot``.

Printed: the job's wall time, its peak RSS (``ru_maxrss`` of the instance's process, from its
report), the assemble step's time and peak RSS, and what an instance does per hour here (GB and
rows of CSV): the figures docs/decisions.md's limits are derived from.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.preprocess import CONTRACT, DATASET, FolderStore, write_churn_csv

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".build" / "bench" / "processing"
RAW, ARTIFACTS = "raw", "artifacts"
TARGET_RSS_BYTES = 1 << 30  # the target: peak RSS ≤ 1 GB for a 5 GB CSV


def csv_of(gigabytes: float) -> Path:
    """The cached churn CSV of about ``gigabytes`` GB (10⁹ bytes), generated on first use."""
    path = CACHE / f"churn-{gigabytes:g}gb.csv"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        write_churn_csv(partial, int(gigabytes * 1e9))
        partial.replace(path)
    return path


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def job_entry(store_root: str) -> int:
    """What the container's ``job_boot`` runs, over the folder store."""
    from functions.preprocess.part_job import main

    return main(store=FolderStore(Path(store_root)))


def assemble_entry(store_root: str) -> int:
    """The Assemble task in a fresh interpreter: the builds state on stdin, the outcome and this
    process's peak RSS on stdout."""
    from functions.preprocess.logic import assemble_build
    from functions.shared.pipeline_state import BuildState
    from tests.fakes import RecordingOrchestrator

    state = BuildState.model_validate_json(sys.stdin.read())
    started = time.perf_counter()
    outcome = assemble_build(
        state, store=FolderStore(Path(store_root)), orchestrator=RecordingOrchestrator()
    )
    print(
        json.dumps(
            {
                "outcome": outcome.model_dump(mode="json"),
                "seconds": round(time.perf_counter() - started, 2),
                "peak_rss_bytes": _peak_rss(),
            }
        )
    )
    return 0


def run(gigabytes: float, instances: int | None) -> dict[str, Any]:
    from functions.preprocess.logic import Policy, process_upload
    from functions.preprocess.part_job import JobLimits, JobReport
    from functions.shared import layout
    from functions.shared.orchestration import BuildInput, RunStart
    from functions.shared.s3_events import UploadedObject
    from functions.shared.storage import parse_s3_uri
    from infra.local.asl import run as run_definition
    from infra.local.pipeline import PROCESSING_RESOURCE, builds_definition
    from infra.local.processing_runner import run_processing_job
    from infra.topology import Topology
    from tests.fakes import RecordingOrchestrator

    csv = csv_of(gigabytes)
    store_root = CACHE / "store"
    shutil.rmtree(store_root, ignore_errors=True)
    data = store_root / RAW / DATASET / "data" / csv.name
    data.parent.mkdir(parents=True)
    os.link(csv, data)  # the object is the cached file: no 5 GB copy
    store = FolderStore(store_root)
    store.put_bytes(RAW, layout.contract_key(DATASET), json.dumps(CONTRACT).encode())

    class Builds(RecordingOrchestrator):
        build: BuildInput | None = None

        @property
        def builds(self) -> bool:
            return True

        def start_build(self, build: BuildInput) -> RunStart:
            self.build = build
            return RunStart(build.run_name, f"build:{build.run_name}", started=True)

    info = store.head(RAW, data.relative_to(store_root / RAW).as_posix())
    assert info is not None
    upload = UploadedObject(bucket=RAW, key=info.key, size=info.size, etag=info.etag)
    orchestrator = Builds()
    started = time.perf_counter()
    limits = JobLimits() if instances is None else JobLimits(max_instances=instances)
    routed = process_upload(
        upload,
        store=store,
        orchestrator=orchestrator,
        artifacts_bucket=ARTIFACTS,
        policy=Policy(max_read_bytes=0),  # smaller files (--gb) take the route too
        jobs=limits,
    )
    route_seconds = time.perf_counter() - started
    assert routed.status == "building" and orchestrator.build is not None, routed.reason
    build = orchestrator.build
    topology = Topology(stage="bench")
    timings: dict[str, Any] = {}

    def process(parameters: dict[str, Any]) -> Any:
        app = dict(parameters["AppSpecification"])
        app["ContainerEntrypoint"] = [
            "python3",
            "-m",
            "bench.processing",
            "--job",
            str(store_root),
        ]
        result = run_processing_job({**parameters, "AppSpecification": app}, store)
        timings["job"] = result.processing_seconds
        if result.processing_job_status != "Completed":
            raise RuntimeError(f"{result.failure_reason}: {result.exit_message}")
        return result.model_dump(by_alias=True, exclude_none=True)

    def assemble(payload: dict[str, Any]) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "bench.processing", "--assemble", str(store_root)],
            input=json.dumps(payload.get("Payload", payload)),
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        timings["assemble"] = answer
        return answer["outcome"]

    execution = run_definition(
        builds_definition(topology),
        json.loads(build.execution_input()),
        tasks={PROCESSING_RESOURCE: process, topology.function_arn("preprocess"): assemble},
        execution_name=build.run_name,
        sleep=lambda seconds: None,
    )
    total = time.perf_counter() - started
    if execution.status != "SUCCEEDED":
        raise RuntimeError(f"build failed: {execution.error}: {execution.cause}")
    bucket, prefix = parse_s3_uri(build.report_uri)
    reports = [
        JobReport.model_validate_json(store.get_bytes(bucket, o.key))
        for o in store.list(bucket, prefix)
    ]
    outcome = timings["assemble"]["outcome"]
    rows = outcome["rows"]
    job_seconds = max(r.seconds for r in reports)
    return {
        "file_bytes": info.size,
        "instances": build.instance_count,
        "route_seconds": round(route_seconds, 3),
        "job_wall_seconds": timings["job"],
        "job_build_seconds": job_seconds,
        "job_peak_rss_bytes": max(r.peak_rss_bytes for r in reports),
        "assemble_seconds": timings["assemble"]["seconds"],
        "assemble_peak_rss_bytes": timings["assemble"]["peak_rss_bytes"],
        "total_seconds": round(total, 1),
        "status": outcome["status"],
        "rows_read": rows["read"],
        "rows_accepted": rows["accepted"],
        "gb_per_instance_hour": round(info.size / 1e9 / job_seconds * 3600, 1),
        "rows_per_instance_hour": round(rows["read"] / job_seconds * 3600),
    }


def render(figures: dict[str, Any]) -> str:
    mb = 1 << 20
    rss = figures["job_peak_rss_bytes"]
    verdict = "met" if rss <= TARGET_RSS_BYTES else "MISSED"
    return "\n".join(
        [
            f"file                {figures['file_bytes'] / 1e9:.2f} GB, "
            f"{figures['rows_read']:,} rows ({figures['rows_accepted']:,} accepted)",
            f"route               {figures['route_seconds']} s (preprocess: plan, no read)",
            f"processing job      {figures['job_wall_seconds']} s wall on "
            f"{figures['instances']} instance(s); the part built in "
            f"{figures['job_build_seconds']:.1f} s",
            f"job peak RSS        {rss / mb:,.0f} MiB (target ≤ 1 GiB: {verdict})",
            f"assemble            {figures['assemble_seconds']} s, peak RSS "
            f"{figures['assemble_peak_rss_bytes'] / mb:,.0f} MiB; {figures['status']}",
            f"upload → version    {figures['total_seconds']} s",
            f"per instance-hour   {figures['gb_per_instance_hour']} GB of CSV, "
            f"{figures['rows_per_instance_hour']:,} rows (this machine's core)",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=5.0, help="CSV size, 10⁹ bytes (default 5)")
    parser.add_argument("--instances", type=int, default=None, help="at most this many")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--assemble", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        return job_entry(args.job)
    if args.assemble:
        return assemble_entry(args.assemble)
    figures = run(args.gb, args.instances)
    print(json.dumps(figures, indent=2) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
