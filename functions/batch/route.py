"""Batch files past the Lambda (docs/decisions.md, "Batch files past one Lambda"): the port that
starts a SageMaker Processing job to score one file (on AWS: an execution of
infra/statemachine/batch.asl.json), and what that job is asked.

The function starts the job only after the checks it can make cheaply pass (a live model, a
contract that parses, carried columns that do not clash), and pins the live model then: the job
scores with the version that was live when the file arrived, as the Lambda path does.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.shared.orchestration import TRAINING_JOB_NAME, RunStart
from functions.shared.pipeline_state import StepFailure

REQUEST_FORMAT = 1


class BatchJobLimits(BaseModel):
    """The processing instance a batch file past the Lambda is scored on. One instance: a CSV
    is one byte stream, read in order. ``max_file_bytes``: what it scores inside
    ``max_runtime_seconds`` at half the throughput bench/batch.py measures on one core (15 MB
    of CSV a second), the margin the Lambda's cap keeps too; a larger file is refused."""

    model_config = ConfigDict(frozen=True)

    instance_type: str = "ml.m5.xlarge"  # 4 vCPU, 16 GiB
    volume_gb: int = Field(default=30, ge=1)  # nothing is downloaded: the code and the request
    max_runtime_seconds: int = Field(default=12 * 3600, ge=1)
    scored_bytes_per_second: int = 15_000_000

    @property
    def max_file_bytes(self) -> int:
        return self.scored_bytes_per_second * self.max_runtime_seconds // 2  # 324 GB


class BatchJobRequest(BaseModel):
    """What the job scores: one object, as it was when its event arrived, with the model that
    was live then (``request.json`` under ``layout.batch_job_prefix``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = REQUEST_FORMAT
    job_name: str
    dataset: str
    raw_bucket: str
    artifacts_bucket: str
    key: str
    size: int = Field(ge=0)
    etag: str
    model_version: int = Field(ge=1)
    model_uri: str
    card_uri: str
    model_sha256: str
    chunk_rows: int = Field(ge=1)


class BatchJobInput(BaseModel):
    """The batch jobs state machine's input. Deterministic for one event: the execution and the
    job are named by the upload's identity, so a redelivered event finds its job started."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_name: str  # the execution's name
    dataset: str
    job_name: str = Field(pattern=TRAINING_JOB_NAME)
    request_uri: str  # the folder holding request.json: the job's one ProcessingInput
    instance_type: str
    volume_gb: int = Field(ge=1)
    max_runtime_seconds: int = Field(ge=1)

    def execution_input(self) -> str:
        return json.dumps(self.model_dump(mode="json"))


class BatchJobState(BatchJobInput):
    """The machine's state when its Catch calls the batch function: the input and the failure."""

    failure: StepFailure


class BatchRoute(ABC):
    """Where batch files past the Lambda are scored."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether a job of that name was started (running or ended)."""

    @abstractmethod
    def start(self, job: BatchJobInput) -> RunStart: ...


class StepFunctionsBatchRoute(BatchRoute):
    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._sfn = client
        self._arn = state_machine_arn

    def _execution_arn(self, name: str) -> str:
        return self._arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def exists(self, name: str) -> bool:
        # StartExecution of a running execution's name and input answers with the first, as if
        # it had started it: callers ask first, so that a redelivery is not counted twice
        try:
            self._sfn.describe_execution(executionArn=self._execution_arn(name))
        except self._sfn.exceptions.ExecutionDoesNotExist:
            return False
        return True

    def start(self, job: BatchJobInput) -> RunStart:
        try:
            started = self._sfn.start_execution(
                stateMachineArn=self._arn, name=job.run_name, input=job.execution_input()
            )
        except self._sfn.exceptions.ExecutionAlreadyExists:
            return RunStart(job.run_name, self._execution_arn(job.run_name), started=False)
        return RunStart(job.run_name, started["executionArn"], started=True)
