"""The end of a run: promote the challenger the gate passed, or record why nothing changed.

Promote moves the live pointer with the registry's conditional write, expecting the live
version evaluate compared against: if an operator or another run changed it since, the write is
refused (``PromotionConflictError``), the Catch routes the run to RecordFailure, and the newer
live model stays. Both functions are idempotent, because Step Functions retries them.

After the pointer moved, promote puts the dataset's retraining alarms (functions/shared/alarms.py):
a dataset no deployment declared is watched from its first live model on, with no redeploy.
Every promotion puts them (``PutMetricAlarm`` is an upsert), so a failed put is mended by the
next. A failure never fails the step: the model is live, and failing would report a change that
was not undone (as for the notification); the handler logs and counts it
(``RetrainAlarmsNotPut``), and an operational alarm pages on the count.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from functions.shared.alarms import RetrainAlarms
from functions.shared.errors import SluiceError
from functions.shared.notify import Decision, Notifier
from functions.shared.pipeline_state import PipelineState, StepFailure
from functions.shared.registry import (
    InvalidTransitionError,
    ModelRegistry,
    ModelStatus,
    PromotionConflictError,
)


class PipelineStateError(SluiceError):
    """The payload lacks what this step needs (the definition and the functions disagree)."""


class RunOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["promoted", "refused", "run_failed"]
    dataset: str
    run_name: str
    model_version: int | None
    live_version: int | None
    reasons: list[str]
    notify_error: str | None = None  # set when the decision could not be published
    alarms: list[str] = []  # the retraining alarms promote put (created or brought up to date)
    alarms_error: str | None = None  # set when they could not be put
    # The model shipped is not the best candidate: a better one's ONNX export failed parity.
    parity_fallback: str | None = None


def promote(
    state: PipelineState,
    *,
    registry: ModelRegistry,
    notifier: Notifier,
    alarms: RetrainAlarms,
) -> RunOutcome:
    evaluation = state.evaluation
    if evaluation is None:
        raise PipelineStateError("promote needs the 'evaluation' result")
    gate = evaluation.gate
    reasons = gate.decide().reasons
    try:
        pointer = registry.promote(
            state.dataset,
            evaluation.model_version,
            expected_live=evaluation.champion_version,
            actor=state.actor,
            reason="gate passed: " + "; ".join(reasons),
        )
    except (PromotionConflictError, InvalidTransitionError):
        live = registry.live(state.dataset)
        mine = registry.get(state.dataset, evaluation.model_version)
        if live is None or live.version != mine.version or mine.run_name != state.run_name:
            raise
        pointer = live  # a retry of a promotion that already happened
    # A run in flight when its dataset was retired still promotes (the API answers 410 while
    # retired); its alarms are not put back over the ones `sluice retire` deleted.
    retired = registry.retirement(state.dataset) is not None
    alarm_names, alarms_error = ([], None) if retired else _put_alarms(alarms, state.dataset)
    notify_error = _publish(
        notifier,
        Decision(
            kind="promoted",
            dataset=state.dataset,
            run_name=state.run_name,
            summary=f"version {pointer.version} is live ({gate.metric} {gate.challenger})",
            model_version=pointer.version,
            previous_live=evaluation.champion_version,
            reasons=reasons,
        ),
    )
    return RunOutcome(
        kind="promoted",
        dataset=state.dataset,
        run_name=state.run_name,
        model_version=pointer.version,
        live_version=pointer.version,
        reasons=reasons,
        notify_error=notify_error,
        alarms=alarm_names,
        alarms_error=alarms_error,
        parity_fallback=_parity_fallback(registry, state.dataset, pointer.version),
    )


def reject(state: PipelineState, *, registry: ModelRegistry, notifier: Notifier) -> RunOutcome:
    """The gate's refusal, or a failed run (``state.failure`` set): mark the candidate rejected
    when one was registered, audit the run, notify. The live model is never touched."""
    evaluation = state.evaluation
    if state.failure is not None:
        kind: Literal["refused", "run_failed"] = "run_failed"
        reasons = [f"{state.failure.Error}: {describe_failure(state.failure)}"]
    elif evaluation is not None:
        kind = "refused"
        reasons = evaluation.gate.decide().reasons
    else:
        raise PipelineStateError("reject needs the 'evaluation' result or a 'failure'")

    version = (
        evaluation.model_version
        if evaluation is not None
        else _registered_by(registry, state.dataset, state.run_name)
    )
    reason = ("run failed: " if kind == "run_failed" else "gate refused: ") + "; ".join(reasons)
    if version is not None and registry.get(state.dataset, version).status in (
        ModelStatus.CANDIDATE,
        ModelStatus.REJECTED,
    ):
        registry.reject(state.dataset, version, actor=state.actor, reason=reason)
    else:
        registry.record_failure(state.dataset, state.run_name, actor=state.actor, reason=reason)
    live = registry.live(state.dataset)
    kept = f"version {live.version} keeps serving" if live else "no model is live"
    notify_error = _publish(
        notifier,
        Decision(
            kind=kind,
            dataset=state.dataset,
            run_name=state.run_name,
            summary=f"{'refused' if kind == 'refused' else 'run failed'}; {kept}",
            model_version=version,
            previous_live=live.version if live else None,
            reasons=reasons,
        ),
    )
    return RunOutcome(
        kind=kind,
        dataset=state.dataset,
        run_name=state.run_name,
        model_version=version,
        live_version=live.version if live else None,
        reasons=reasons,
        notify_error=notify_error,
        parity_fallback=_parity_fallback(registry, state.dataset, version),
    )


def _parity_fallback(registry: ModelRegistry, dataset: str, version: int | None) -> str | None:
    """The card's parity fallback note, as evaluate copied it into the version's summary."""
    if version is None:
        return None
    note = registry.get(dataset, version).summary.get("parity_fallback")
    return note if isinstance(note, str) else None


def _registered_by(registry: ModelRegistry, dataset: str, run_name: str) -> int | None:
    """The version a failed run registered although no evaluation result came back (evaluate
    died after registering): rejecting it keeps a model whose gate decision never reached the
    state machine from waiting as a candidate an operator could promote without ``--force``."""
    mine = [v.version for v in registry.versions(dataset) if v.run_name == run_name]
    return mine[-1] if mine else None


def _put_alarms(alarms: RetrainAlarms, dataset: str) -> tuple[list[str], str | None]:
    """Best effort, after the registry write (see the module's docstring)."""
    try:
        return alarms.ensure(dataset), None
    except Exception as exc:  # any transport or permission error of CloudWatch
        return [], f"{type(exc).__name__}: {exc}"


def _publish(notifier: Notifier, decision: Decision) -> str | None:
    """Best effort, after the registry write: the decision is already durable (registry and
    audit trail), and failing the step here would send a run whose model went live to
    RecordFailure, reporting a change it did not undo. The handler logs and counts failures."""
    try:
        notifier.publish(decision)
    except Exception as exc:  # any transport error of the notifier
        return f"{type(exc).__name__}: {exc}"
    return None


def describe_failure(failure: StepFailure) -> str:
    """The readable part of a Catch's Cause (see ``StepFailure.message``)."""
    return failure.message
