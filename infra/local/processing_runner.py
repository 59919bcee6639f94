"""A local stand-in for a SageMaker Processing job: same request, same container contract, no
Docker (as infra/local/training_runner.py is for training).

moto accepts CreateProcessingJob and runs nothing, so the local stack runs the container's
command itself, once per instance (``algo-1`` ... ``algo-n``, all at once), each in a subprocess
that never outlives the caller (infra/local/trainers.py) with its own stand-in for ``/opt/ml``:

- each ``ProcessingInput`` is downloaded to its ``LocalPath`` (``FullyReplicated``: all of it;
  ``ShardedByS3Key``: instance k of n gets every n-th object by key);
- ``/opt/ml/config/resourceconfig.json`` names the instance and all hosts;
- the command (``ContainerEntrypoint`` + ``ContainerArguments``; ``python3`` is this
  interpreter) runs with the request's ``Environment``, ``PYTHONPATH`` at the repository (on
  AWS, the code input) and ``SLUICE_OPT_ML`` at the stand-in (the job resolves ``/opt/ml``
  paths under it: functions/preprocess/part_job.py);
- when every instance has ended, each ``ProcessingOutput``'s ``LocalPath`` of each instance is
  uploaded under its ``S3Uri``; a job that fails uploads nothing, as ``EndOfJob`` does;
- ``MaxRuntimeInSeconds`` is enforced; a failed instance's ``/opt/ml/output/message`` is the
  job's ``ExitMessage`` (concatenated over instances, first 1 KB).

A job that fails is a result (status Failed, with the reason), not an exception.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_pascal

from functions.shared.storage import ObjectStore, parse_s3_uri
from infra.local.trainers import kill_group, trainer_process

REPO_ROOT = Path(__file__).resolve().parents[2]
OPT_ML = PurePosixPath("/opt/ml")
JOB_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
MESSAGE_LIMIT = 1024
OUTPUT_TAIL_CHARS = 4000


class ProcessingRequestError(ValueError):
    """The request would be rejected by CreateProcessingJob itself (a ValidationException)."""


class _Shape(BaseModel):
    """The request's parts in SageMaker's field names; what the local run does not need
    (RoleArn, ImageUri, instance type...) is accepted and ignored."""

    model_config = ConfigDict(alias_generator=to_pascal, validate_by_name=True, frozen=True)


def _container_path(path: str) -> str:
    if not PurePosixPath(path).is_relative_to(OPT_ML / "processing") or ".." in path:
        raise ValueError(f"{path} is not under /opt/ml/processing/")
    return path


class S3Input(_Shape):
    # file://: the local stack's code input, this checkout, which the runner puts on
    # PYTHONPATH instead of copying (infra/local/pipeline.py LOCAL_CODE_URI)
    s3_uri: str = Field(pattern=r"^(s3://[^/]+(/.*)?|file://.+)$")
    local_path: str
    s3_data_type: Literal["S3Prefix"] = "S3Prefix"
    s3_input_mode: Literal["File"] = "File"
    s3_data_distribution_type: Literal["FullyReplicated", "ShardedByS3Key"] = "FullyReplicated"

    def model_post_init(self, _: Any) -> None:
        _container_path(self.local_path)


class ProcessingInput(_Shape):
    input_name: str
    s3_input: S3Input


class S3Output(_Shape):
    s3_uri: str = Field(pattern=r"^s3://[^/]+(/.*)?$")
    local_path: str
    s3_upload_mode: Literal["EndOfJob"] = "EndOfJob"

    def model_post_init(self, _: Any) -> None:
        _container_path(self.local_path)


class ProcessingOutput(_Shape):
    output_name: str
    s3_output: S3Output


class ProcessingOutputConfig(_Shape):
    outputs: list[ProcessingOutput] = Field(default_factory=list)


class ClusterConfig(_Shape):
    instance_count: int = Field(ge=1, le=100)
    instance_type: str
    volume_size_in_gb: int = Field(ge=1, alias="VolumeSizeInGB")


class ProcessingResources(_Shape):
    cluster_config: ClusterConfig


class StoppingCondition(_Shape):
    max_runtime_in_seconds: int = Field(default=86_400, ge=1, le=777_600)


class AppSpecification(_Shape):
    image_uri: str
    container_entrypoint: list[str] = Field(min_length=1)
    container_arguments: list[str] = Field(default_factory=list)


class ProcessingJobRequest(_Shape):
    processing_job_name: str = Field(pattern=JOB_NAME)
    processing_inputs: list[ProcessingInput] = Field(default_factory=list)
    processing_output_config: ProcessingOutputConfig = Field(default_factory=ProcessingOutputConfig)
    processing_resources: ProcessingResources
    stopping_condition: StoppingCondition = Field(default_factory=StoppingCondition)
    app_specification: AppSpecification
    environment: dict[str, str] = Field(default_factory=dict)


class ProcessingJobResult(_Shape):
    """DescribeProcessingJob's essentials; ``model_dump(by_alias=True)`` gives SageMaker's
    shape. ``OutputTail`` is local-only: the end of what the instances printed."""

    processing_job_name: str
    processing_job_status: Literal["Completed", "Failed"]
    failure_reason: str | None = None
    exit_message: str | None = None
    processing_seconds: int
    output_tail: str = ""


def run_processing_job(
    request: Mapping[str, Any],
    store: ObjectStore,
    *,
    work_dir: Path | None = None,
    python: str = sys.executable,
    pid_dir: Path | None = None,
) -> ProcessingJobResult:
    """Run one processing job described by a CreateProcessingJob request. ``work_dir`` (kept
    for inspection) holds one ``/opt/ml`` stand-in per instance; a temporary folder otherwise.
    Raises ProcessingRequestError for a request SageMaker would refuse."""
    try:
        job = ProcessingJobRequest.model_validate(request)
    except (ValidationError, ValueError) as exc:
        raise ProcessingRequestError(f"invalid CreateProcessingJob request: {exc}") from None
    with _job_dir(work_dir, job.processing_job_name) as root:
        return _run(job, store, root, python, pid_dir)


def _run(
    job: ProcessingJobRequest, store: ObjectStore, root: Path, python: str, pid_dir: Path | None
) -> ProcessingJobResult:
    started = time.monotonic()
    count = job.processing_resources.cluster_config.instance_count
    hosts = [f"algo-{i + 1}" for i in range(count)]
    roots = {host: root / host for host in hosts}
    for index, host in enumerate(hosts):
        config = roots[host] / "config"
        config.mkdir(parents=True)
        (config / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": hosts})
        )
        for put in job.processing_inputs:
            copied = _download_input(store, put.s3_input, roots[host], index, count)
            if not copied and put.s3_input.s3_data_distribution_type == "FullyReplicated":
                reason = f"ClientError: no S3 objects found under {put.s3_input.s3_uri}"
                return _result(job, started, "Failed", reason, None, "")
    outputs = _run_instances(job, roots, python, pid_dir)
    tail = "".join(text for _, text, _ in outputs.values())[-OUTPUT_TAIL_CHARS:]
    failed = {host: code for host, (code, _, _) in outputs.items() if code != 0}
    if failed:
        said = " ".join(message for code, _, message in outputs.values() if code and message)
        first = min(failed)
        code = failed[first]
        reason = (
            f"MaxRuntimeExceeded: ran past MaxRuntimeInSeconds="
            f"{job.stopping_condition.max_runtime_in_seconds}"
            if code is None
            else f"AlgorithmError: {first} exited with code {code}"
        )
        return _result(job, started, "Failed", reason, said[:MESSAGE_LIMIT] or None, tail)
    for out in job.processing_output_config.outputs:
        bucket, prefix = parse_s3_uri(out.s3_output.s3_uri.rstrip("/") + "/")
        for host in hosts:
            folder = _local(roots[host], out.s3_output.local_path)
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                store.upload(path, bucket, f"{prefix}{path.relative_to(folder).as_posix()}")
    return _result(job, started, "Completed", None, None, tail)


def _run_instances(
    job: ProcessingJobRequest, roots: dict[str, Path], python: str, pid_dir: Path | None
) -> dict[str, tuple[int | None, str, str]]:
    """Every instance at once; host -> (exit code, None when stopped at the limit; output; its
    message file)."""
    app = job.app_specification
    argv = [python if part in ("python", "python3") else part for part in app.container_entrypoint]
    argv += app.container_arguments
    limit = job.stopping_condition.max_runtime_in_seconds
    results: dict[str, tuple[int | None, str, str]] = {}
    with ExitStack() as stack:
        running = {}
        for host, opt_ml in roots.items():
            env = {
                **os.environ,
                **job.environment,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
                ),
                "SLUICE_OPT_ML": str(opt_ml),
            }
            name = f"{job.processing_job_name}-{host}"
            running[host] = stack.enter_context(
                trainer_process(argv, job=name, pid_dir=pid_dir, env=env, cwd=REPO_ROOT)
            )
        deadline = time.monotonic() + limit
        waiters = {
            host: threading.Thread(target=_wait, args=(process, deadline, host, results))
            for host, process in running.items()
        }
        for waiter in waiters.values():
            waiter.start()
        for waiter in waiters.values():
            waiter.join()
    for host, opt_ml in roots.items():
        message = opt_ml / "output" / "message"
        code, text, _ = results[host]
        said = message.read_text("utf-8", errors="replace").strip() if message.exists() else ""
        results[host] = (code, text, said)
    return results


def _wait(
    process: subprocess.Popen[str],
    deadline: float,
    host: str,
    results: dict[str, tuple[int | None, str, str]],
) -> None:
    try:
        stdout, stderr = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
        results[host] = (process.returncode, (stdout or "") + (stderr or ""), "")
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        stdout, stderr = process.communicate()
        results[host] = (None, (stdout or "") + (stderr or ""), "")


def _download_input(
    store: ObjectStore, source: S3Input, opt_ml: Path, index: int, count: int
) -> int:
    target = _local(opt_ml, source.local_path)
    target.mkdir(parents=True, exist_ok=True)
    if source.s3_uri.startswith("file://"):
        return 1  # this checkout, on PYTHONPATH
    bucket, prefix = parse_s3_uri(source.s3_uri)
    objects = [o for o in store.list(bucket, prefix) if not o.key.endswith("/")]
    if source.s3_data_distribution_type == "ShardedByS3Key":
        objects = objects[index::count]
    copied = 0
    for info in objects:
        # an object named by the uri itself lands under its file name, as SageMaker puts it
        tail = info.key[len(prefix) :].lstrip("/") or PurePosixPath(info.key).name
        relative = PurePosixPath(tail)
        if ".." in relative.parts:
            continue
        dest = target.joinpath(*relative.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.download(bucket, info.key, dest)
        copied += 1
    return copied


def _local(opt_ml: Path, container_path: str) -> Path:
    return opt_ml / PurePosixPath(container_path).relative_to(OPT_ML)


def _result(
    job: ProcessingJobRequest,
    started: float,
    status: Literal["Completed", "Failed"],
    reason: str | None,
    message: str | None,
    tail: str,
) -> ProcessingJobResult:
    return ProcessingJobResult(
        processing_job_name=job.processing_job_name,
        processing_job_status=status,
        failure_reason=reason[:MESSAGE_LIMIT] if reason else None,
        exit_message=message,
        processing_seconds=math.ceil(time.monotonic() - started),
        output_tail=tail,
    )


@contextmanager
def _job_dir(work_dir: Path | None, name: str) -> Iterator[Path]:
    if work_dir is not None:
        if work_dir.exists() and any(work_dir.iterdir()):
            raise ProcessingRequestError(f"work_dir {work_dir} is not empty")
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix=f"sluice-processing-{name}-") as tmp:
        yield Path(tmp)
