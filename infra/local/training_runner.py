"""A local stand-in for a SageMaker training job: same request, same container contract, no Docker.

moto accepts CreateTrainingJob and reports it Completed without running anything, so the local
stack runs ``functions/training/train.py`` itself: it lays out the ``/opt/ml`` tree SageMaker
builds (channels downloaded from the object store, ``hyperparameters.json``), runs the script in
a subprocess (its own session, never outliving the caller: infra/local/trainers.py) with the
``SM_*`` variables, enforces MaxRuntimeInSeconds and uploads
``model.tar.gz`` where SageMaker puts it: ``{S3OutputPath}/{TrainingJobName}/output/``.
A job that fails is a result (status Failed, reason from the failure file), not an exception.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_pascal

from functions.shared.progress import PROGRESS_FILE_ENV, Progress, report_progress
from functions.shared.row_hash import ChannelManifestError
from functions.shared.storage import ObjectNotFoundError, ObjectStore, parse_s3_uri
from infra.local.channels import DataType, download_channel
from infra.local.trainers import kill_group, trainer_process

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINT = REPO_ROOT / "functions" / "training" / "train.py"
FAILURE_REASON_LIMIT = 1024
STDOUT_TAIL_CHARS = 4000
JOB_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
PROGRESS_FILE = "progress.jsonl"  # under the job's /opt/ml stand-in, never in the model
PROGRESS_POLL_SECONDS = 0.5


class TrainingRequestError(ValueError):
    """The request would be rejected by CreateTrainingJob itself (a ValidationException)."""


class TrainingJobFailedError(RuntimeError):
    """Raised only when asked to (``raise_on_failure=True``); carries the result."""

    def __init__(self, result: TrainingJobResult) -> None:
        super().__init__(f"training job {result.training_job_name} failed: {result.failure_reason}")
        self.result = result


class _Shape(BaseModel):
    """The request's parts, in SageMaker's field names; fields the local run does not need
    (AlgorithmSpecification, RoleArn, spot settings...) are accepted and ignored."""

    model_config = ConfigDict(alias_generator=to_pascal, validate_by_name=True, frozen=True)


class S3DataSource(_Shape):
    s3_uri: str = Field(pattern=r"^s3://[^/]+(/.*)?$")
    s3_data_type: DataType = Field(default="S3Prefix")


class DataSource(_Shape):
    s3_data_source: S3DataSource


class Channel(_Shape):
    channel_name: str = Field(pattern=r"^[A-Za-z0-9\.\-_]{1,64}$")
    data_source: DataSource


class OutputDataConfig(_Shape):
    s3_output_path: str = Field(pattern=r"^s3://[^/]+(/.*)?$")


class ResourceConfig(_Shape):
    instance_type: str
    instance_count: int = Field(default=1, ge=1)


class StoppingCondition(_Shape):
    max_runtime_in_seconds: int = Field(default=86_400, ge=1)


class TrainingJobRequest(_Shape):
    training_job_name: str = Field(pattern=JOB_NAME)
    hyper_parameters: dict[str, str] = Field(default_factory=dict)
    input_data_config: list[Channel] = Field(min_length=1)
    output_data_config: OutputDataConfig
    resource_config: ResourceConfig
    stopping_condition: StoppingCondition = Field(default_factory=StoppingCondition)


class ModelArtifacts(_Shape):
    s3_model_artifacts: str


class TrainingJobResult(_Shape):
    """DescribeTrainingJob's essentials; ``model_dump(by_alias=True)`` gives SageMaker's shape.
    ``StdoutTail`` is local-only: the end of what SageMaker would have sent to CloudWatch."""

    training_job_name: str
    training_job_status: Literal["Completed", "Failed"]
    failure_reason: str | None = None
    model_artifacts: ModelArtifacts | None = None
    training_time_in_seconds: int
    stdout_tail: str = ""


def run_training_job(
    request: Mapping[str, Any],
    store: ObjectStore,
    *,
    work_dir: Path | None = None,
    python: str = sys.executable,
    raise_on_failure: bool = False,
    pid_dir: Path | None = None,
) -> TrainingJobResult:
    """Run one training job described by a CreateTrainingJob request.

    ``work_dir`` is the stand-in for ``/opt/ml`` and must be empty (it is kept for inspection);
    when not given, a temporary directory is used and removed afterwards. Raises
    TrainingRequestError for a request SageMaker would refuse; a job that starts and fails
    returns status Failed (or raises TrainingJobFailedError when ``raise_on_failure``).
    ``pid_dir``: where the running trainer's pid file goes, for a restart to find it
    (infra/local/trainers.py).
    """
    try:
        job = TrainingJobRequest.model_validate(request)
    except ValidationError as exc:
        raise TrainingRequestError(f"invalid CreateTrainingJob request: {exc}") from None
    with _job_dir(work_dir, job.training_job_name) as root:
        result = _run(job, store, root, python, pid_dir)
    if raise_on_failure and result.training_job_status == "Failed":
        raise TrainingJobFailedError(result)
    return result


def _run(
    job: TrainingJobRequest, store: ObjectStore, root: Path, python: str, pid_dir: Path | None
) -> TrainingJobResult:
    started = time.monotonic()
    dirs = {
        "input": root / "input",
        "config": root / "input" / "config",
        "model": root / "model",
        "output": root / "output",
        "output_data": root / "output" / "data",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    channels: dict[str, Path] = {}
    for channel in job.input_data_config:
        target = root / "input" / "data" / channel.channel_name
        source = channel.data_source.s3_data_source
        try:
            copied = download_channel(store, source.s3_uri, target, source.s3_data_type)
        except (ChannelManifestError, ObjectNotFoundError) as exc:
            return _failed(job, started, f"ClientError: {exc}", "")
        if not copied:
            where = "listed by" if source.s3_data_type == "ManifestFile" else "found under"
            return _failed(job, started, f"ClientError: no S3 objects {where} {source.s3_uri}", "")
        channels[channel.channel_name] = target
    (dirs["config"] / "hyperparameters.json").write_text(json.dumps(job.hyper_parameters))

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "SM_MODEL_DIR": str(dirs["model"]),
        "SM_INPUT_DIR": str(dirs["input"]),
        "SM_INPUT_CONFIG_DIR": str(dirs["config"]),
        "SM_OUTPUT_DIR": str(dirs["output"]),
        "SM_OUTPUT_DATA_DIR": str(dirs["output_data"]),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps({k: _decode(v) for k, v in job.hyper_parameters.items()}),
        "SM_NUM_GPUS": "0",
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
    }
    # SageMaker's toolkit also passes each hyperparameter as "--key value".
    argv = [python, str(ENTRY_POINT)]
    for key, value in job.hyper_parameters.items():
        argv += [f"--{key}", value]
    limit = job.stopping_condition.max_runtime_in_seconds
    progress_file = root / PROGRESS_FILE
    env[PROGRESS_FILE_ENV] = str(progress_file)
    # Its own session, killed with this process, listed in pid_dir: infra/local/trainers.py
    with (
        relayed_progress(progress_file, job.training_job_name),
        trainer_process(
            argv, job=job.training_job_name, pid_dir=pid_dir, env=env, cwd=REPO_ROOT
        ) as process,
    ):
        try:
            stdout, stderr = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            stdout, stderr = process.communicate()
            reason = f"MaxRuntimeExceeded: training ran past MaxRuntimeInSeconds={limit}"
            return _failed(job, started, reason, _text(stdout) + _text(stderr))
    output = stdout + stderr
    if process.returncode != 0:
        failure_file = dirs["output"] / "failure"
        detail = (
            failure_file.read_text(encoding="utf-8").strip()
            if failure_file.exists()
            else f"train.py exited with code {process.returncode}: {_last_line(stderr)}"
        )
        return _failed(job, started, f"AlgorithmError: {detail}", output)

    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(dirs["model"].rglob("*")):
            tar.add(path, arcname=str(path.relative_to(dirs["model"])), recursive=False)
    destination = (
        f"{job.output_data_config.s3_output_path.rstrip('/')}/"
        f"{job.training_job_name}/output/model.tar.gz"
    )
    bucket, key = parse_s3_uri(destination)
    store.upload(archive, bucket, key)
    return TrainingJobResult(
        training_job_name=job.training_job_name,
        training_job_status="Completed",
        model_artifacts=ModelArtifacts(s3_model_artifacts=destination),
        training_time_in_seconds=_elapsed(started),
        stdout_tail=output[-STDOUT_TAIL_CHARS:],
    )


@contextmanager
def relayed_progress(path: Path, job_name: str | None) -> Iterator[None]:
    """While the job runs, read the records the training process appends to ``path`` and report
    each again in this process (functions/shared/progress.py), named with the job (when given;
    infra/local/isolated.py relays a Lambda child's records as they are). A record is one
    complete line; a partial last line waits for the next read. The rest is read at exit."""
    done = threading.Event()
    offset = 0

    def relay() -> None:
        nonlocal offset
        if not path.is_file():
            return
        with path.open("rb") as source:
            source.seek(offset)
            chunk = source.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        offset += len(complete)
        for line in complete.splitlines():
            try:
                record = Progress.model_validate_json(line)
            except ValidationError:
                continue  # not a record: nothing to show, and never the job's failure
            report_progress(record.model_copy(update={"run": record.run or job_name}))

    def follow() -> None:
        while not done.wait(PROGRESS_POLL_SECONDS):
            relay()

    follower = threading.Thread(target=follow, name=f"progress-{job_name or path}", daemon=True)
    follower.start()
    try:
        yield
    finally:
        done.set()
        follower.join()
        relay()


def _failed(job: TrainingJobRequest, started: float, reason: str, output: str) -> TrainingJobResult:
    if len(reason) > FAILURE_REASON_LIMIT:
        reason = reason[: FAILURE_REASON_LIMIT - 3] + "..."
    return TrainingJobResult(
        training_job_name=job.training_job_name,
        training_job_status="Failed",
        failure_reason=reason,
        training_time_in_seconds=_elapsed(started),
        stdout_tail=output[-STDOUT_TAIL_CHARS:],
    )


@contextmanager
def _job_dir(work_dir: Path | None, name: str) -> Iterator[Path]:
    if work_dir is not None:
        # A job starts on a fresh /opt/ml: leftovers could be shipped as this job's model.
        if work_dir.exists() and any(work_dir.iterdir()):
            raise TrainingRequestError(f"work_dir {work_dir} is not empty")
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix=f"sluice-training-{name}-") as tmp:
        yield Path(tmp)


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _text(stream: str | bytes | None) -> str:
    if isinstance(stream, bytes):
        return stream.decode("utf-8", errors="replace")
    return stream or ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _elapsed(started: float) -> int:
    return math.ceil(time.monotonic() - started)
