"""Faults injected into the pipeline run locally (the real definition, handlers and training
runner under moto), each with a live champion in place: training that fails, times out or
exports a model that fails the ONNX parity check; evaluate crashing; two runs racing to promote.

Every fault asserts the same three things:

- the live model is untouched: the registry's live pointer (version, sha256, generation) and
  the bytes and ETags of the champion's files (model.onnx, card, evaluation report, archive);
- the run's failure is visible with its cause: the execution's route through RecordFailure, the
  decision ``sluice status`` shows (``run_decision``), and the registry's audit trail;
- a re-run of the same dataset version without the fault succeeds (promoted or gated).

docs/reliability-parts/faults.md lists the faults and their figures.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions.evaluate import logic as evaluate_logic
from functions.promote import handler as promote_handler
from functions.shared import layout
from functions.shared.contract import parse_contract
from functions.shared.manifest import Manifest
from functions.shared.orchestration import RunInput, StoppingCondition
from functions.shared.pipeline_deps import pipeline_deps
from functions.shared.registry import LivePointer, ModelStatus
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.row_hash import read_channel_manifest
from functions.shared.runs import manifest_key, run_input
from functions.shared.storage import parse_s3_uri
from infra.cli import main
from infra.local import training_runner
from infra.local.asl import Execution
from infra.local.pipeline import run_decision
from infra.local.stack import RUNS_FILE, RunRecord
from tests.integration.conftest import Aws
from tests.integration.test_pipeline_local import (  # noqa: F401 (the autouse fixture)
    _pipeline_environment,
    _registry,
    _run,
    _upload,
)
from tests.integration.test_registry import SerializedClient

DATASET = "churn"


# -- what a fault must leave alone ---------------------------------------------------------------


@dataclass(frozen=True)
class Champion:
    """The live model as serving sees it: the pointer and the exact files it names."""

    pointer: LivePointer
    files: dict[str, tuple[str, str]]  # uri -> (ETag, sha256 of the bytes)


def _champion(aws: Aws) -> Champion:
    registry = _registry(aws)
    pointer = registry.live(DATASET)
    assert pointer is not None, "no live model"
    version = registry.get(DATASET, pointer.version)
    assert version.status is ModelStatus.LIVE
    files = _files(
        aws, [version.model_uri, version.card_uri, version.report_uri, version.artifact_uri]
    )
    # the model serving loads is the one the registry vouches for
    assert files[version.model_uri][1] == pointer.sha256
    return Champion(pointer, files)


def _files(aws: Aws, uris: Iterable[str]) -> dict[str, tuple[str, str]]:
    files = {}
    for uri in uris:
        bucket, key = parse_s3_uri(uri)
        got = aws.s3.get_object(Bucket=bucket, Key=key)
        files[uri] = (got["ETag"], hashlib.sha256(got["Body"].read()).hexdigest())
    return files


def _publish_champion(aws: Aws) -> Champion:
    assert _run(aws, _upload(aws, "jan", seed=1)).status == "SUCCEEDED"
    return _champion(aws)


def _assert_failed_visibly(
    aws: Aws, execution: Execution, run: RunInput, *, step: str, error: str, cause: str
) -> dict[str, Any]:
    """The run failed at ``step`` with ``error``, and its cause reaches everything an operator
    reads: the execution's history, the decision `sluice status` shows, the audit trail."""
    assert execution.status == "FAILED" and execution.error == "Sluice.RunFailed"
    assert execution.path[-3:] == [step, "RecordFailure", "RunFailed"], execution.path
    recorded = next(e for e in execution.history if e.name == "RecordFailure")
    assert recorded.input["failure"]["Error"] == error, recorded.input["failure"]
    assert cause in recorded.input["failure"]["Cause"]
    decision = run_decision(execution)
    assert decision is not None, "a failed run must show its decision"
    assert decision["kind"] == "run_failed" and decision["run_name"] == run.run_name
    assert any(r.startswith(f"{error}: ") and cause in r for r in decision["reasons"]), decision
    audit = [e for e in _registry(aws).audit(DATASET) if e.run_name == run.run_name]
    assert audit and audit[-1].action in ("run_failed", "rejected"), audit
    assert cause in audit[-1].reason and audit[-1].reason.startswith("run failed: ")
    return decision


def _rerun(aws: Aws, run: RunInput) -> RunInput:
    """A new run over the same dataset version, as the retrain function starts one: its
    manifest and contract read back, a new run name."""
    artifacts, raw = aws.topology.artifacts_bucket, aws.topology.raw_bucket
    manifest = Manifest.model_validate_json(
        aws.s3.get_object(Bucket=artifacts, Key=manifest_key(run.dataset, run.dataset_version))[
            "Body"
        ].read()
    )
    contract = parse_contract(
        aws.s3.get_object(Bucket=raw, Key=layout.contract_key(run.dataset))["Body"].read(),
        source=layout.contract_key(run.dataset),
    )
    again = run_input(f"{run.run_name}-rerun", manifest, contract, artifacts)
    assert again.dataset_version == run.dataset_version and again.run_name != run.run_name
    return again


def _assert_rerun_succeeds(aws: Aws, run: RunInput, champion: Champion) -> Execution:
    """Without the fault the same dataset version goes through: promoted over the champion, or
    refused by the gate with the champion still serving."""
    again = _rerun(aws, run)
    execution = _run(aws, again)
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    decision = run_decision(execution)
    assert decision is not None and decision["run_name"] == again.run_name
    live = _registry(aws).live(DATASET)
    assert live is not None
    if execution.path[-1] == "Promoted":
        assert decision["kind"] == "promoted" and live.version == decision["model_version"]
        assert live.generation == champion.pointer.generation + 1
        promoted = [e for e in _registry(aws).audit(DATASET) if e.action == "promoted"][-1]
        assert promoted.previous_live == champion.pointer.version
    else:
        assert execution.path[-2:] == ["Reject", "Refused"] and decision["kind"] == "refused"
        assert live == champion.pointer
    return execution


# -- training faults -----------------------------------------------------------------------------


def _stand_in(tmp_path: Path, name: str, source: str) -> Path:
    """A training entry point the local runner runs instead of functions/training/train.py."""
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(source))
    return script


PARITY_FAILURE = """
    import sys

    from functions.training import train as training
    from functions.training.parity import measure_parity


    def measure_and_break(pipeline, session, schema, split):
        # the real measurement, then the export made to disagree beyond the tolerance
        report = measure_parity(pipeline, session, schema, split)
        return report.model_copy(
            update={"max_abs_diff": 0.25, "max_scaled_diff": 0.25, "passed": False}
        )


    training.measure_parity = measure_and_break
    sys.exit(training.main())
"""


@dataclass(frozen=True)
class TrainingFault:
    name: str
    error: str
    cause: str
    inject: Callable[[RunInput, Path, pytest.MonkeyPatch], RunInput]


def _unknown_hyperparameter(run: RunInput, tmp: Path, mp: pytest.MonkeyPatch) -> RunInput:
    return run.model_copy(update={"hyperparameters": {**run.hyperparameters, "bogus": "1"}})


def _crashing_process(run: RunInput, tmp: Path, mp: pytest.MonkeyPatch) -> RunInput:
    # dies without leaving a failure file, as an out-of-memory kill would
    script = _stand_in(tmp, "crash", "import os\nos._exit(137)\n")
    mp.setattr(training_runner, "ENTRY_POINT", script)
    return run


def _past_max_runtime(run: RunInput, tmp: Path, mp: pytest.MonkeyPatch) -> RunInput:
    script = _stand_in(tmp, "slow", "import time\ntime.sleep(120)\n")
    mp.setattr(training_runner, "ENTRY_POINT", script)
    return run.model_copy(update={"stopping_condition": StoppingCondition(MaxRuntimeInSeconds=1)})


def _parity_failure(run: RunInput, tmp: Path, mp: pytest.MonkeyPatch) -> RunInput:
    mp.setattr(training_runner, "ENTRY_POINT", _stand_in(tmp, "parity", PARITY_FAILURE))
    return run


TRAINING_FAULTS = [
    TrainingFault(
        "exits-non-zero-with-reason",
        "States.TaskFailed",
        "AlgorithmError: TrainingError: unknown hyperparameter 'bogus'",
        _unknown_hyperparameter,
    ),
    TrainingFault(
        "killed-without-reason",
        "States.TaskFailed",
        "AlgorithmError: train.py exited with code 137",
        _crashing_process,
    ),
    TrainingFault(
        "times-out",
        "States.TaskFailed",
        "MaxRuntimeExceeded: training ran past MaxRuntimeInSeconds=1",
        _past_max_runtime,
    ),
    TrainingFault(
        "fails-onnx-parity",
        "States.TaskFailed",
        "AlgorithmError: ParityError: the ONNX export of",
        _parity_failure,
    ),
]


@pytest.mark.parametrize("fault", TRAINING_FAULTS, ids=[f.name for f in TRAINING_FAULTS])
def test_a_training_fault_leaves_the_champion_and_a_rerun_succeeds(
    aws: Aws, tmp_path: Path, fault: TrainingFault
) -> None:
    # Given a live champion
    champion = _publish_champion(aws)
    run = _upload(aws, "feb", seed=2)
    versions_before = len(_registry(aws).versions(DATASET))

    # When the next run's training job hits the fault
    with pytest.MonkeyPatch.context() as mp:
        faulty = fault.inject(run, tmp_path, mp)
        execution = _run(aws, faulty)

    # Then the run failed at Train, with the job's FailureReason visible
    decision = _assert_failed_visibly(
        aws, execution, faulty, step="Train", error=fault.error, cause=fault.cause
    )
    assert decision["model_version"] is None and decision["live_version"] == 1
    # and nothing was registered, no model archive was uploaded, the champion is untouched
    registry = _registry(aws)
    assert len(registry.versions(DATASET)) == versions_before
    assert registry.audit(DATASET)[-1].action == "run_failed"
    prefix = layout.model_prefix(DATASET, faulty.training_job_name)
    listed = aws.s3.list_objects_v2(Bucket=aws.topology.artifacts_bucket, Prefix=prefix)
    assert listed["KeyCount"] == 0
    assert _champion(aws) == champion

    # And a re-run of the same dataset version without the fault succeeds
    _assert_rerun_succeeds(aws, run, champion)


def test_the_timeout_stops_training_at_the_limit(aws: Aws, tmp_path: Path) -> None:
    # The stand-in sleeps 120 s: the run must end about when MaxRuntimeInSeconds says
    _publish_champion(aws)
    run = _upload(aws, "feb", seed=2)
    with pytest.MonkeyPatch.context() as mp:
        execution = _run(aws, _past_max_runtime(run, tmp_path, mp))
    train = next(e for e in execution.history if e.name == "Train")
    assert execution.status == "FAILED" and train.duration_seconds < 15, train.duration_seconds


# -- evaluate faults -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluateFault:
    name: str
    error: str
    cause: str
    inject: Callable[[Aws, RunInput, pytest.MonkeyPatch], Callable[[], None]]  # returns a repair
    registers: bool  # whether the crash comes after the candidate was registered


def _test_split_vanished(aws: Aws, run: RunInput, mp: pytest.MonkeyPatch) -> Callable[[], None]:
    """The test split's files are gone (the channel manifest that lists them stays)."""
    bucket, key = parse_s3_uri(run.test_uri)
    _, listed = read_channel_manifest(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    dataset = key.split("/", 1)[0]
    saved = {}
    for item in (f"{dataset}/{k}" for k in listed):
        saved[item] = aws.s3.get_object(Bucket=bucket, Key=item)["Body"].read()
        aws.s3.delete_object(Bucket=bucket, Key=item)
    assert saved

    def repair() -> None:
        for key, body in saved.items():
            aws.s3.put_object(Bucket=bucket, Key=key, Body=body)

    return repair


def _crash_mid_evaluation(aws: Aws, run: RunInput, mp: pytest.MonkeyPatch) -> Callable[[], None]:
    # after the challenger's files were published and both models scored, before the gate
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected: evaluate crashed mid-run")

    mp.setattr(evaluate_logic, "gate_inputs", crash)
    return lambda: None


def _crash_after_registering(aws: Aws, run: RunInput, mp: pytest.MonkeyPatch) -> Callable[[], None]:
    # the candidate is registered, then the function dies before returning its result
    registry = pipeline_deps().registry
    real = registry.register

    def register_then_crash(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise RuntimeError("injected: evaluate crashed after registering")

    mp.setattr(registry, "register", register_then_crash)
    return lambda: None


EVALUATE_FAULTS = [
    EvaluateFault(
        "test-split-vanished",
        "EvaluationError",
        "does not exist",
        _test_split_vanished,
        registers=False,
    ),
    EvaluateFault(
        "crash-before-gate",
        "RuntimeError",
        "injected: evaluate crashed mid-run",
        _crash_mid_evaluation,
        registers=False,
    ),
    EvaluateFault(
        "crash-after-register",
        "RuntimeError",
        "injected: evaluate crashed after registering",
        _crash_after_registering,
        registers=True,
    ),
]


@pytest.mark.parametrize("fault", EVALUATE_FAULTS, ids=[f.name for f in EVALUATE_FAULTS])
def test_an_evaluate_crash_leaves_the_champion_and_a_rerun_succeeds(
    aws: Aws, fault: EvaluateFault
) -> None:
    champion = _publish_champion(aws)
    run = _upload(aws, "feb", seed=2)
    with pytest.MonkeyPatch.context() as mp:
        repair = fault.inject(aws, run, mp)
        execution = _run(aws, run)
    repair()

    decision = _assert_failed_visibly(
        aws, execution, run, step="Evaluate", error=fault.error, cause=fault.cause
    )
    assert decision["live_version"] == 1
    registry = _registry(aws)
    versions = registry.versions(DATASET)
    if fault.registers:
        # the version it registered is rejected with the cause, not left a promotable candidate
        assert [(v.version, v.status) for v in versions] == [
            (1, ModelStatus.LIVE),
            (2, ModelStatus.REJECTED),
        ]
        assert versions[1].run_name == run.run_name and fault.cause in versions[1].status_reason
        assert decision["model_version"] == 2
    else:
        assert decision["model_version"] is None
        assert [v.version for v in versions] == [1]
    assert _champion(aws) == champion

    _assert_rerun_succeeds(aws, run, champion)


# -- the registry write racing another run -------------------------------------------------------


@pytest.fixture
def serialized_registry(aws: Aws) -> Iterator[None]:
    """The pipeline's registry client answering one request at a time, as DynamoDB isolates
    each request (moto does not: see test_registry.SerializedClient). The adapter's
    read-then-write sequences still interleave freely between the two runs."""
    registry = pipeline_deps().registry
    assert isinstance(registry, DynamoDBRegistry)
    real = registry._db
    registry._db = SerializedClient(real)
    yield
    registry._db = real


def test_two_runs_promoting_at_once_have_one_winner_and_the_loser_is_recorded(
    aws: Aws, serialized_registry: None
) -> None:
    # Given a live champion and two runs that both beat it (tolerance wide open)
    champion = _publish_champion(aws)
    runs = [
        _upload(aws, month, seed=seed).model_copy(update={"tolerance": 1.0})
        for month, seed in (("feb", 2), ("mar", 3))
    ]
    # When both reach Promote, both evaluated against version 1, and promote together
    barrier = threading.Barrier(len(runs), timeout=300)
    real_promote = promote_handler.promote_handler

    def promote_together(event: dict[str, Any], context: Any) -> Any:
        barrier.wait()
        return real_promote(event, context)

    executions: dict[str, Execution | BaseException] = {}

    def execute(run: RunInput) -> None:
        try:
            executions[run.run_name] = _run(aws, run)
        except BaseException as error:  # reported below, not lost on the thread
            executions[run.run_name] = error

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(promote_handler, "promote_handler", promote_together)
        threads = [threading.Thread(target=execute, args=(run,)) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    results = [executions[run.run_name] for run in runs]
    assert all(isinstance(r, Execution) for r in results), results
    done = [r for r in results if isinstance(r, Execution)]

    # Then exactly one promoted; the other failed at Promote with the conflict as its cause
    assert sorted(e.path[-1] for e in done) == ["Promoted", "RunFailed"], [e.path for e in done]
    winner = next(e for e in done if e.path[-1] == "Promoted")
    loser_execution = next(e for e in done if e.path[-1] == "RunFailed")
    loser = next(r for r in runs if r.run_name == loser_execution.name)
    for execution in done:
        evaluated = next(e for e in execution.history if e.name == "Promote").input
        assert evaluated["evaluation"]["champion_version"] == champion.pointer.version
    winner_decision = run_decision(winner)
    assert winner_decision is not None and winner_decision["kind"] == "promoted"
    won = winner_decision["model_version"]
    decision = _assert_failed_visibly(
        aws,
        loser_execution,
        loser,
        step="Promote",
        error="PromotionConflictError",
        cause=f"expected live version {champion.pointer.version}, found {won}",
    )
    assert decision["live_version"] == won
    # and the registry tells one story: one promotion over version 1, the loser's model rejected
    registry = _registry(aws)
    lost = decision["model_version"]
    assert registry.get(DATASET, lost).status is ModelStatus.REJECTED
    assert "PromotionConflictError" in registry.get(DATASET, lost).status_reason
    promotions = [
        (e.version, e.previous_live) for e in registry.audit(DATASET) if e.action == "promoted"
    ]
    assert promotions == [(1, None), (won, 1)]
    live = registry.live(DATASET)
    assert live is not None and (live.version, live.generation) == (won, 2)
    # the previous champion's files are as they were (retired, not rewritten)
    assert _files(aws, champion.files) == champion.files

    # And the loser's dataset version, run again, is gated normally against the winner
    _assert_rerun_succeeds(aws, loser, _champion(aws))


def test_a_failed_runs_decision_is_what_status_shows(aws: Aws) -> None:
    # The decision RecordFailure hands on is the one the local stack keeps for `sluice status`
    _publish_champion(aws)
    broken = _upload(aws, "feb", seed=2).model_copy(update={"hyperparameters": {"bogus": "1"}})
    execution = _run(aws, broken)
    assert execution.output is None  # RunFailed: a Fail state has no output
    decision = run_decision(execution)
    assert decision is not None
    assert json.loads(json.dumps(decision))["reasons"][0].startswith("States.TaskFailed: ")


def test_a_training_failures_cause_is_what_status_prints(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run whose training job fails, recorded as the local stack records its runs
    _publish_champion(aws)
    broken = _upload(aws, "feb", seed=2).model_copy(update={"hyperparameters": {"bogus": "1"}})
    execution = _run(aws, broken)
    record = RunRecord.of(execution, dataset=DATASET, started_at="2026-11-22T12:00:00Z", seconds=1)
    (tmp_path / RUNS_FILE).write_text(json.dumps(record.__dict__) + "\n")
    cause = "AlgorithmError: TrainingError: unknown hyperparameter 'bogus'"

    # When a person asks for the status, as text and as JSON
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert main(["status", "--state-dir", str(tmp_path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)

    # Then the failing state, its error and the job's FailureReason are printed, not the
    # RunFailed state's pointer to them
    assert "failed at Train: States.TaskFailed" in text
    assert cause in " ".join(text.split())  # wrapped lines, words kept whole
    assert "RecordFailure step holds" not in text
    failure = document["runs"][0]["failure"]
    assert failure["state"] == "Train" and failure["error"] == "States.TaskFailed"
    assert failure["message"].startswith(cause)
    assert json.loads(failure["cause"])["FailureReason"] == failure["message"]  # verbatim
