"""Run infra/statemachine/pipeline.asl.json on one machine: the same file CDK deploys, with its
Task states dispatched to the in-process Lambda handlers (evaluate in a child process per
invocation under ``sluice up``: ``isolate``) and the local SageMaker runner.

The Lambda handlers build their AWS clients from the environment, so they talk to whatever
endpoint the caller set up: moto in-process (``sluice demo``) or moto's server (``sluice up``).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from functions.batch.route import BatchJobInput
from functions.shared.orchestration import BuildInput, RunInput
from functions.shared.pipeline_state import StepFailure
from functions.shared.storage import ObjectStore
from infra.local.asl import (
    Execution,
    StateEvent,
    TaskFailure,
    TaskHandler,
    load_definition,
    run,
)
from infra.local.context import LocalLambdaContext
from infra.local.isolated import ChildExitError, HandlerError, invoke_in_child
from infra.local.processing_runner import run_processing_job
from infra.local.training_runner import run_training_job
from infra.topology import Topology

DEFINITION = Path(__file__).resolve().parents[1] / "statemachine" / "pipeline.asl.json"
BUILDS_DEFINITION = DEFINITION.with_name("builds.asl.json")
BATCH_DEFINITION = DEFINITION.with_name("batch.asl.json")
TRAINING_RESOURCE = "arn:aws:states:::sagemaker:createTrainingJob.sync"
PROCESSING_RESOURCE = "arn:aws:states:::sagemaker:createProcessingJob.sync"
EVALUATE_TARGET = "functions.evaluate.handler:lambda_handler"
PREPROCESS_TARGET = "functions.preprocess.handler:lambda_handler"
LOCAL_PROCESSING_IMAGE = "sluice-local-processing:latest"
LOCAL_CODE_URI = "file://functions/preprocess"  # the runner runs this checkout (PYTHONPATH)
LOCAL_TRAINING_IMAGE = "sluice-local-training:latest"
FAILURE_TEXT_LIMIT = 2000
"""Characters of a failure's message a person is shown in text output (a SageMaker
FailureReason is at most 1024; past this it is a stack trace or a dump). The JSON outputs carry
the whole cause."""
FAILURE_TEXT_WIDTH = 100


def use_endpoint(
    topology: Topology, endpoint: str | None, overrides: Mapping[str, str] | None = None
) -> None:
    """Point every in-process function at one AWS: their environments from the topology (then
    ``overrides``), the endpoint (``None``: boto3's default, e.g. moto patched into this
    process), and cached clients dropped so that each is built again, for this endpoint, on
    first use."""
    os.environ.update(topology.preprocess_environment())
    os.environ.update(topology.pipeline_environment())
    os.environ.update(topology.batch_environment())
    os.environ.update(topology.drift_environment())
    os.environ.update(topology.retrain_environment())
    os.environ.update(topology.inference_environment())
    os.environ.update(overrides or {})
    if endpoint is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_DEFAULT_REGION"] = topology.region
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    from functions.batch import handler as batch
    from functions.drift import handler as drift
    from functions.inference import api as inference
    from functions.preprocess import handler as preprocess
    from functions.retrain import handler as retrain
    from functions.shared.pipeline_deps import pipeline_deps

    for cached in (
        preprocess._deps,
        inference.dependencies,
        inference.observers,
        batch._deps,
        drift._deps,
        retrain._deps,
        pipeline_deps,
    ):
        cached.cache_clear()


def substitutions(topology: Topology) -> dict[str, str]:
    """Values for the definition's ``${...}`` placeholders on the local stack. CDK fills the same
    names with the deployed resources (infra/aws)."""
    return {
        "Region": topology.region,
        "TrainingImage": LOCAL_TRAINING_IMAGE,
        "TrainingRoleArn": topology.pipeline_role_arn,
        "TrainingSourceUri": "file://functions/training",
        "EvaluateFunctionArn": topology.function_arn("evaluate"),
        "PromoteFunctionArn": topology.function_arn("promote"),
        "RejectFunctionArn": topology.function_arn("reject"),
    }


def definition(topology: Topology) -> dict[str, Any]:
    return load_definition(DEFINITION, substitutions(topology))


def task_handlers(
    topology: Topology,
    store: ObjectStore,
    trainer_pids: Path | None = None,
    *,
    isolate: bool = False,
) -> dict[str, TaskHandler]:
    """Resource (or Lambda function ARN) → in-process implementation. ``trainer_pids``: where a
    running trainer's pid file goes (``run_training_job``'s ``pid_dir``). ``isolate``: evaluate
    runs in a child process per invocation (infra/local/isolated.py; the handlers must reach
    the endpoint over the network, as under ``sluice up``), its pid file beside the trainer's."""
    from functions.evaluate.handler import lambda_handler as evaluate_handler
    from functions.promote.handler import promote_handler, reject_handler

    def train(parameters: dict[str, Any]) -> Any:
        result = run_training_job(parameters, store, pid_dir=trainer_pids)
        described = result.model_dump(by_alias=True, exclude_none=True)
        if result.training_job_status != "Completed":
            # What the .sync integration reports for a failed job: TaskFailed, the
            # DescribeTrainingJob response as the cause.
            raise TaskFailure("States.TaskFailed", json.dumps(described))
        return described

    return {
        TRAINING_RESOURCE: train,
        topology.function_arn("evaluate"): (
            _child_task(
                topology, "evaluate", "functions.evaluate.handler:lambda_handler", trainer_pids
            )
            if isolate
            else _lambda_task(topology, "evaluate", evaluate_handler)
        ),
        topology.function_arn("promote"): _lambda_task(topology, "promote", promote_handler),
        topology.function_arn("reject"): _lambda_task(topology, "reject", reject_handler),
    }


def _lambda_task(
    topology: Topology, function: str, handler: Callable[[dict[str, Any], Any], Any]
) -> TaskHandler:
    def invoke(payload: dict[str, Any]) -> Any:
        # A real invocation serialises the payload: the handler never shares our objects.
        return handler(
            json.loads(json.dumps(payload)), LocalLambdaContext.for_function(topology, function)
        )

    return invoke


def _child_task(
    topology: Topology, function: str, target: str, pid_dir: Path | None
) -> TaskHandler:
    def invoke(payload: dict[str, Any]) -> Any:
        context = LocalLambdaContext.for_function(topology, function)
        try:
            return invoke_in_child(target, payload, context, pid_dir=pid_dir)
        except HandlerError as error:
            # What run() makes of the same exception raised in-process
            raise TaskFailure(
                error.error_type,
                error.cause
                if error.cause is not None
                else json.dumps({"errorMessage": error.message, "errorType": error.error_type}),
            ) from error
        except ChildExitError as error:
            cause = {"errorMessage": str(error), "errorType": error.error_type}
            raise TaskFailure(error.error_type, json.dumps(cause)) from error

    return invoke


def _processing_substitutions(topology: Topology) -> dict[str, str]:
    """The placeholders every processing-job definition has, on the local stack: the job runs
    this checkout's code (infra/local/processing_runner.py), so the code input names it."""
    return {
        "Region": topology.region,
        "ProcessingImage": LOCAL_PROCESSING_IMAGE,
        "ProcessingRoleArn": topology.processing_role_arn,
        "ProcessingCodeUri": LOCAL_CODE_URI,
        "ProcessingCodePath": "/opt/ml/processing/input/code",
    }


def builds_substitutions(topology: Topology) -> dict[str, str]:
    """The builds definition's placeholders on the local stack."""
    return {
        **_processing_substitutions(topology),
        "PreprocessFunctionArn": topology.function_arn("preprocess"),
    }


def builds_definition(topology: Topology) -> dict[str, Any]:
    return load_definition(BUILDS_DEFINITION, builds_substitutions(topology))


def batch_substitutions(topology: Topology) -> dict[str, str]:
    """The batch jobs definition's placeholders on the local stack."""
    return {
        **_processing_substitutions(topology),
        "BatchFunctionArn": topology.function_arn("batch"),
    }


def batch_definition(topology: Topology) -> dict[str, Any]:
    return load_definition(BATCH_DEFINITION, batch_substitutions(topology))


def _processing_task(store: ObjectStore, trainer_pids: Path | None) -> TaskHandler:
    """``createProcessingJob.sync`` by the local processing runner: its description when the
    job completes, the ``.sync`` integration's TaskFailed (the description as its cause) when
    it fails."""

    def process(parameters: dict[str, Any]) -> Any:
        result = run_processing_job(parameters, store, pid_dir=trainer_pids)
        described = result.model_dump(by_alias=True, exclude_none=True)
        if result.processing_job_status != "Completed":
            raise TaskFailure("States.TaskFailed", json.dumps(described))
        return described

    return process


def build_task_handlers(
    topology: Topology,
    store: ObjectStore,
    trainer_pids: Path | None = None,
    *,
    isolate: bool = False,
) -> dict[str, TaskHandler]:
    """The builds definition's tasks: the local processing runner and preprocess (in a child
    process per invocation when ``isolate``)."""
    from functions.preprocess.handler import lambda_handler as preprocess_handler

    target = PREPROCESS_TARGET
    return {
        PROCESSING_RESOURCE: _processing_task(store, trainer_pids),
        topology.function_arn("preprocess"): (
            _child_task(topology, "preprocess", target, trainer_pids)
            if isolate
            else _lambda_task(topology, "preprocess", preprocess_handler)
        ),
    }


def run_build(
    topology: Topology,
    build: BuildInput,
    store: ObjectStore,
    *,
    trainer_pids: Path | None = None,
    on_state: Callable[[StateEvent], None] | None = None,
    isolate: bool = False,
) -> Execution:
    """Execute one build (processing job, then assemble) to the end; see ``run_pipeline``."""
    return run(
        builds_definition(topology),
        json.loads(build.execution_input()),
        tasks=build_task_handlers(topology, store, trainer_pids, isolate=isolate),
        execution_name=build.run_name,
        sleep=lambda seconds: None,
        on_state=on_state,
    )


def run_batch_job(
    topology: Topology,
    job: BatchJobInput,
    store: ObjectStore,
    *,
    trainer_pids: Path | None = None,
    on_state: Callable[[StateEvent], None] | None = None,
) -> Execution:
    """Execute one batch job (the processing job, the failure report if it fails) to the end.
    The batch function runs in this process: it only writes the failed file's report."""
    from functions.batch.handler import lambda_handler as batch_handler

    return run(
        batch_definition(topology),
        json.loads(job.execution_input()),
        tasks={
            PROCESSING_RESOURCE: _processing_task(store, trainer_pids),
            topology.function_arn("batch"): _lambda_task(topology, "batch", batch_handler),
        },
        execution_name=job.run_name,
        sleep=lambda seconds: None,
        on_state=on_state,
    )


def run_decision(execution: Execution) -> dict[str, Any] | None:
    """The run's decision as promote or reject returned it (kind, versions, reasons): what
    ``sluice status`` shows. A run that ended in Promoted or Refused carries it in its output; a
    failed run ends in RunFailed, whose cause is fixed text, so its decision (with the failed
    step's error and cause in ``reasons``) is the one RecordFailure handed on. ``None`` when no
    decision was recorded (RecordFailure itself failed: its error is in the history)."""
    output = execution.output if isinstance(execution.output, dict) else {}
    outcome = output.get("outcome")
    if outcome is None:
        for event in reversed(execution.history):
            if event.name == "RecordFailure" and isinstance(event.output, dict):
                outcome = event.output.get("outcome")
                break
    decision = outcome.get("decision") if isinstance(outcome, dict) else None
    return decision if isinstance(decision, dict) else None


def run_failure(execution: Execution) -> dict[str, str] | None:
    """Where and why a failed run failed: the failing state, its error, its cause verbatim, and
    the cause's readable message (``StepFailure.message``). The execution's own error is the
    RunFailed state's fixed text, so this reads the failure the Catch handed RecordFailure; an
    execution that failed without reaching it (RecordFailure itself failed) gives its own."""
    if execution.status != "FAILED":
        return None
    failure: StepFailure | None = None
    state = execution.path[-1] if execution.path else ""
    for index in range(len(execution.history) - 1, -1, -1):
        event = execution.history[index]
        caught = event.input.get("failure") if isinstance(event.input, dict) else None
        if event.name == "RecordFailure" and isinstance(caught, dict):
            failure = StepFailure(
                Error=str(caught.get("Error", "")), Cause=str(caught.get("Cause") or "")
            )
            state = execution.history[index - 1].name if index > 0 else ""
            break
    if failure is None:
        if execution.error is None:
            return None
        failure = StepFailure(Error=execution.error, Cause=execution.cause or "")
    return {
        "state": state,
        "error": failure.Error,
        "cause": failure.Cause,
        "message": failure.message,
    }


def failure_lines(failure: Mapping[str, Any], *, indent: str, full_text_in: str) -> list[str]:
    """A run's failure for a person: the state and error, then the message wrapped (words and
    line breaks kept, long tokens such as URIs left whole). A message past
    ``FAILURE_TEXT_LIMIT`` is cut at a word and says how much more ``full_text_in`` holds."""
    lines = [f"{indent}failed at {failure.get('state') or '?'}: {failure.get('error')}"]
    text = str(failure.get("message") or failure.get("cause") or "(no cause given)")
    shown = text
    if len(text) > FAILURE_TEXT_LIMIT:
        shown = text[:FAILURE_TEXT_LIMIT]
        space = shown.rfind(" ")
        if space > FAILURE_TEXT_LIMIT // 2:
            shown = shown[:space]
    body = indent + "  "
    for paragraph in shown.splitlines() or [""]:
        lines += textwrap.wrap(
            paragraph,
            width=FAILURE_TEXT_WIDTH,
            initial_indent=body,
            subsequent_indent=body,
            break_long_words=False,
            break_on_hyphens=False,
        ) or [body.rstrip()]
    if len(shown) < len(text):
        lines.append(f"{body}(… {len(text) - len(shown)} more characters in {full_text_in})")
    return lines


def run_pipeline(
    topology: Topology,
    run_input: RunInput,
    store: ObjectStore,
    *,
    sleep: Callable[[float], None] | None = None,
    trainer_pids: Path | None = None,
    on_state: Callable[[StateEvent], None] | None = None,
    isolate: bool = False,
) -> Execution:
    """Execute one run to the end. The handlers' environment must already be set.
    ``on_state`` sees each state's history event as the state ends; ``isolate``: see
    ``task_handlers``.

    Retry waits are skipped unless ``sleep`` is given: locally a retry only helps against
    transient faults of the loopback endpoint, and a demo should not sit idle.
    """
    missing = [k for k in topology.pipeline_environment() if k not in os.environ]
    if missing:
        raise RuntimeError(f"the pipeline functions' environment lacks {missing}")
    return run(
        definition(topology),
        json.loads(run_input.execution_input()),
        tasks=task_handlers(topology, store, trainer_pids, isolate=isolate),
        execution_name=run_input.run_name,
        sleep=sleep or (lambda seconds: None),
        on_state=on_state,
    )
