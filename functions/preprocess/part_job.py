"""The processing job that builds parts past one Lambda (docs/decisions.md, "Parts past one
Lambda"): a SageMaker Processing job runs ``python -m functions.preprocess.part_job`` with the
same part-building code the Lambda runs, then preprocess assembles the version and starts the
run from the parts it left.

SageMaker Processing's container contract, which the local runner
(infra/local/processing_runner.py) honours under another root (``SLUICE_OPT_ML``):

- ``/opt/ml/processing/input/plan/``: the build plan (``BuildPlan``), the one ``ProcessingInput``;
- ``/opt/ml/config/resourceconfig.json``: ``current_host`` and ``hosts``; instance k of n takes
  the objects whose key hashes to k (``shard``), so several instances share the files by key;
- ``/opt/ml/processing/output/report/<host>.json``: what this instance built and refused,
  uploaded when the job ends;
- ``/opt/ml/output/message``: why the instance failed (DescribeProcessingJob's ExitMessage).

Parts are written straight to their deterministic keys in the artifacts bucket, each with its
record last, exactly as the Lambda writes them: a retried or duplicated job rebuilds nothing
that is complete, and whoever assembles the version cannot tell who built a part.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

from functions.preprocess.assemble import build_parts, work_dir
from functions.preprocess.parts import GIB, Policy
from functions.shared.contract import parse_contract
from functions.shared.processing_job import failed, opt_ml, peak_rss_bytes, under_opt_ml
from functions.shared.s3_events import UploadedObject
from functions.shared.storage import ObjectInfo, ObjectStore, S3ObjectStore

PLAN_LOCAL_PATH = "/opt/ml/processing/input/plan"
REPORT_LOCAL_PATH = "/opt/ml/processing/output/report"
PLAN_FORMAT = 1


class JobLimits(BaseModel):
    """One processing instance and what it may take (docs/decisions.md, "Parts past one
    Lambda"). An instance holds one object on its volume with the part it writes (about a third
    of the CSV, zstd Parquet) and keeps 8 B of memory per distinct row of the object it reads."""

    instance_type: str = "ml.m5.xlarge"  # 4 vCPU, 16 GiB
    volume_gb: int = 100
    max_object_bytes: int = 64 * GIB
    bytes_per_instance: int = 16 * GIB  # past it another instance is asked for
    max_instances: int = 8
    max_runtime_seconds: int = 12 * 3600
    # CSV bytes parsed at a time: a quarter of the Lambda's, so that a 5 GB file's row hashes
    # (480 MB) and one batch's working set stay under 1 GiB (bench/processing.py)
    read_block_bytes: int = 1024 * 1024

    def instances(self, sizes: list[int]) -> int:
        """Instances for objects of these sizes: one per ``bytes_per_instance`` of the total,
        never more than objects (an object is never split) or ``max_instances``."""
        wanted = -(-sum(sizes) // self.bytes_per_instance)
        return max(1, min(wanted, len(sizes), self.max_instances))


class PlannedObject(BaseModel):
    key: str
    size: int
    etag: str
    version_id: str | None = None


class BuildPlan(BaseModel):
    """What a part job builds: every data object listed when the upload was processed (the
    pin is the lowest usable key's, as in the Lambda), under the contract as read then."""

    format: int = PLAN_FORMAT
    run_name: str
    dataset: str
    raw_bucket: str
    artifacts_bucket: str
    contract: str  # the contract file's text
    trigger: UploadedObject
    sources: list[PlannedObject] = Field(min_length=1)
    policy: Policy

    def objects(self) -> list[ObjectInfo]:
        return [
            ObjectInfo(self.raw_bucket, s.key, s.size, s.etag, s.version_id) for s in self.sources
        ]


class JobReport(BaseModel):
    """One instance's account of its share: ``<host>.json`` in the report output."""

    host: str
    hosts: list[str]
    taken: list[str]  # the keys this instance owned
    accepted: dict[str, str]  # key -> part id
    refused: dict[str, str]  # key -> the first rule it broke
    bytes: int
    seconds: float
    peak_rss_bytes: int  # this instance's process, at its end (ru_maxrss)


def shard(key: str, instances: int) -> int:
    """The instance that builds ``key``'s part: stable, spread by a hash of the key."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % instances


def build_share(
    plan: BuildPlan, store: ObjectStore, host: str, hosts: list[str], work: Path
) -> JobReport:
    """Build the parts of the plan's objects this host owns, under the plan's pin."""
    started = time.perf_counter()
    contract = parse_contract(plan.contract.encode(), source=f"{plan.run_name} plan")
    ordered = sorted(hosts)
    me = ordered.index(host)
    objects = plan.objects()
    mine = {o.key for o in objects if shard(o.key, len(ordered)) == me}
    parts, _ = build_parts(
        store,
        plan.raw_bucket,
        plan.artifacts_bucket,
        plan.dataset,
        contract,
        objects,
        plan.policy,
        work,
        lambda pin: None,
        lambda source, done, rows: None,
        owns=lambda source: source.key in mine,
    )
    accepted = {s.source.key: pid for pid, s in parts.accepted.items()}
    return JobReport(
        host=host,
        hosts=ordered,
        taken=sorted(mine),
        accepted={k: v for k, v in sorted(accepted.items()) if k in mine},
        refused={k: r.violations[0].rule for k, (_, r) in parts.refused.items() if k in mine},
        bytes=sum(o.size for o in objects if o.key in mine),
        seconds=round(time.perf_counter() - started, 3),
        peak_rss_bytes=peak_rss_bytes(),
    )


def read_plan(folder: Path) -> BuildPlan:
    plans = sorted(folder.glob("*.json"))
    if len(plans) != 1:
        raise ValueError(f"expected one build plan in {folder}, found {len(plans)}")
    return BuildPlan.model_validate_json(plans[0].read_bytes())


def main(store: ObjectStore | None = None) -> int:
    """The container's entry point: 0 when this instance's share was built (refused objects
    included: a refusal is a result), 1 with the reason in ``/opt/ml/output/message``."""
    root = opt_ml()
    try:
        config = json.loads((root / "config" / "resourceconfig.json").read_text())
        plan = read_plan(under_opt_ml(PLAN_LOCAL_PATH))
        if store is None:
            import boto3

            store = S3ObjectStore(boto3.client("s3"))
        with work_dir() as tmp:
            report = build_share(
                plan, store, config["current_host"], list(config["hosts"]), Path(tmp)
            )
        out = under_opt_ml(REPORT_LOCAL_PATH)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{report.host}.json").write_text(report.model_dump_json(indent=2))
        print(report.model_dump_json())
        return 0
    except Exception as exc:
        return failed(exc)


if __name__ == "__main__":
    sys.exit(main())
