"""The data a pipeline execution carries from state to state, as the pipeline functions see it.

infra/statemachine/pipeline.asl.json starts from ``RunInput`` and adds one field per step
(``ResultPath``): ``script`` (PrepareTraining), ``training`` (Train's ResultSelector),
``evaluation`` (Evaluate's ResultSelector), ``failure`` (any Catch), ``spot_fallback`` (Train's
quota Catch, before an on-demand retry), ``outcome`` (Promote or Reject). The evaluate, promote
and reject functions receive the whole state as their payload and parse it with
``PipelineState``, so a definition that stops providing a field fails loudly at the function's
boundary, naming the field.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from functions.shared.gate import GateInputs
from functions.shared.orchestration import BuildInput, RunInput


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingOutcome(_State):
    job_name: str
    model_artifacts: str  # s3://.../output/model.tar.gz
    training_seconds: int | None = None


class EvaluationOutcome(_State):
    model_version: int = Field(ge=1)
    champion_version: int | None
    report_uri: str
    gate: GateInputs


class StepFailure(_State):
    """What a Catch puts on the state: the error name and its cause (often JSON)."""

    Error: str
    Cause: str = ""

    @property
    def message(self) -> str:
        """The readable part of ``Cause``: a Lambda error's ``errorMessage`` (with its
        ``errorType`` when that is not already the error's name), a failed ``.sync`` training
        job's ``FailureReason``; the cause as written when it is neither."""
        try:
            cause = json.loads(self.Cause)
        except ValueError:
            return self.Cause
        if not isinstance(cause, dict):
            return self.Cause
        message, kind = cause.get("errorMessage"), cause.get("errorType")
        if isinstance(message, str):
            return f"{kind}: {message}" if isinstance(kind, str) and kind != self.Error else message
        reason = cause.get("FailureReason")
        said = cause.get("ExitMessage")  # a processing job's own words (/opt/ml/output/message)
        if isinstance(reason, str) and isinstance(said, str) and said.strip():
            return f"{reason}: {said.strip()}"
        return reason if isinstance(reason, str) else self.Cause


class PipelineState(RunInput):
    model_config = ConfigDict(extra="forbid", frozen=True)

    script: dict[str, str] | None = None
    training: TrainingOutcome | None = None
    evaluation: EvaluationOutcome | None = None
    failure: StepFailure | None = None
    # set when a spot job was refused for a quota and the run trained again on demand
    spot_fallback: StepFailure | None = None
    outcome: dict[str, JsonValue] | None = None
    notify_failure: StepFailure | None = None

    @property
    def actor(self) -> str:
        return f"pipeline:{self.run_name}"


class BuildState(BuildInput):
    """The builds state machine's state when it calls preprocess to assemble: its input, and
    the processing job's failure when its Catch caught one (the job's description on success
    is dropped: the parts are what it left)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure: StepFailure | None = None
