"""Running a validated state machine definition in-process: the states, ``Retry`` and ``Catch``,
the Choice rules, the task integrations (``lambda:invoke`` and handler-backed resources) and
the execution's history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from infra.local.asl.paths import (
    _MISSING,
    _apply_result_path,
    _as_json,
    _fill,
    _is_number,
    _lookup,
    _parse_path,
    _select,
    _StatesRuntimeError,
)
from infra.local.asl.validation import _COMPARISONS, LAMBDA_INVOKE, validate

MAX_TRANSITIONS = 1000
RUNTIME = "States.Runtime"
ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"


class TaskFailure(Exception):  # noqa: N818  (the agreed public name; it is an outcome, not a bug)
    """A task's named error, as Step Functions sees it: what ``Retry`` and ``Catch`` match.

    Handlers raise it to fail with a specific error name (``Lambda.ServiceException``,
    ``States.TaskFailed``...); any other exception is mapped to a name by :func:`run`.
    """

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


TaskHandler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class StateEvent:
    """One state entered, as the execution history shows it.

    ``input`` is the state's raw input (the StateEntered event); ``output`` is what it handed
    on: to the next state, to a catcher's target, or as the execution's output. A task that was
    retried is still one event, with ``attempts`` counting every try.
    """

    name: str
    type: str
    entered_at: datetime
    duration_seconds: float
    input: Any
    output: Any | None
    error: str | None
    cause: str | None
    attempts: int


@dataclass(frozen=True)
class Execution:
    """A finished execution: its status, output or error, and its history."""

    name: str
    status: Literal["SUCCEEDED", "FAILED"]
    input: Any
    output: Any | None
    error: str | None
    cause: str | None
    history: list[StateEvent]
    started_at: datetime
    stopped_at: datetime

    @property
    def path(self) -> list[str]:
        """The names of the states entered, in order: what a test asserts a route on."""
        return [event.name for event in self.history]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as the context object spells times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _Outcome:
    """How one state ended: where the execution goes next (``None``: it ends), with what."""

    output: Any | None
    next: str | None
    error: str | None = None
    cause: str | None = None
    failed: bool = False
    attempts: int = 1


@dataclass(frozen=True)
class _Scope:
    """What every state of one execution shares: its identity, its input and the services."""

    name: str
    input: Any
    started_at: datetime
    tasks: Mapping[str, TaskHandler]
    sleep: Callable[[float], None]

    def context(self, state: str, entered_at: datetime, retry_count: int) -> dict[str, Any]:
        return {
            "Execution": {
                "Name": self.name,
                "Input": self.input,
                "StartTime": _timestamp(self.started_at),
            },
            "State": {
                "Name": state,
                "EnteredTime": _timestamp(entered_at),
                "RetryCount": retry_count,
            },
        }


def run(
    definition: Mapping[str, Any],
    execution_input: Any,
    *,
    tasks: Mapping[str, TaskHandler],
    execution_name: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = _utc_now,
    on_state: Callable[[StateEvent], None] | None = None,
) -> Execution:
    """Run a state machine to its end, in-process, with ``tasks`` standing in for services.

    Parameters
    ----------
    definition : Mapping
        A definition :func:`validate` accepts (it is checked again here).
    execution_input : Any
        The execution's JSON input.
    tasks : Mapping[str, TaskHandler]
        Handlers keyed by the Task state's ``Resource``, except ``lambda:invoke`` tasks, keyed
        by their resolved ``FunctionName``. A handler receives the resolved ``Parameters`` (the
        ``Payload`` for Lambda, whose return value is wrapped as the integration wraps it).
        Exceptions become errors ``Retry``/``Catch`` can match: a :class:`TaskFailure` keeps its
        error and cause; from Lambda, the exception's class name, with the runtime's JSON cause;
        from any other resource, ``States.TaskFailed``.
    execution_name : str
        ``$$.Execution.Name``.
    sleep : Callable[[float], None]
        Waits between retries; tests pass a recorder.
    clock : Callable[[], datetime]
        The time stamps of the execution, its states and the context object.
    on_state : Callable[[StateEvent], None], optional
        Called with each state's history event as the state ends (the local stack's console).

    Returns
    -------
    Execution
        Never raises for a failing execution: a Fail state, an uncaught error and
        ``States.Runtime`` all return status ``FAILED`` with the error and cause.

    Raises
    ------
    UnsupportedDefinitionError
        If the definition uses ASL this interpreter does not implement.
    ValueError
        If ``execution_input`` is not JSON (StartExecution would refuse it).
    """
    validate(definition)
    try:
        machine_input = _as_json(execution_input, "the execution input")
    except _StatesRuntimeError as exc:
        raise ValueError(str(exc)) from exc
    started_at = clock()
    scope = _Scope(execution_name, machine_input, started_at, tasks, sleep)
    states: Mapping[str, Any] = definition["States"]
    history: list[StateEvent] = []
    name: str = definition["StartAt"]
    data = machine_input
    while True:
        if len(history) == MAX_TRANSITIONS:
            outcome = _Outcome(
                None,
                None,
                RUNTIME,
                f"more than {MAX_TRANSITIONS} state transitions: the definition loops",
                failed=True,
            )
            break
        state = states[name]
        entered_at = clock()
        try:
            outcome = _run_state(name, state, data, scope, entered_at)
        except _StatesRuntimeError as exc:
            outcome = _runtime_failure(name, exc, attempts=1)
        history.append(
            StateEvent(
                name=name,
                type=state["Type"],
                entered_at=entered_at,
                duration_seconds=(clock() - entered_at).total_seconds(),
                input=data,
                output=outcome.output,
                error=outcome.error,
                cause=outcome.cause,
                attempts=outcome.attempts,
            )
        )
        if on_state is not None:
            on_state(history[-1])
        if outcome.failed or outcome.next is None:
            break
        name, data = outcome.next, outcome.output
    return Execution(
        name=execution_name,
        status="FAILED" if outcome.failed else "SUCCEEDED",
        input=machine_input,
        output=None if outcome.failed else outcome.output,
        error=outcome.error if outcome.failed else None,
        cause=outcome.cause if outcome.failed else None,
        history=history,
        started_at=started_at,
        stopped_at=clock(),
    )


def _runtime_failure(state: str, exc: _StatesRuntimeError, *, attempts: int) -> _Outcome:
    cause = f"An error occurred while executing the state {state!r}: {exc}"
    return _Outcome(None, None, RUNTIME, cause, failed=True, attempts=attempts)


def _run_state(
    name: str, state: Mapping[str, Any], data: Any, scope: _Scope, entered_at: datetime
) -> _Outcome:
    kind = state["Type"]
    if kind == "Task":
        return _run_task(name, state, data, scope, entered_at)
    if kind == "Fail":
        return _Outcome(None, None, state.get("Error"), state.get("Cause"), failed=True)
    effective = _select(state.get("InputPath", "$"), data, None, "InputPath")
    if kind == "Pass":
        if "Result" in state:
            result = state["Result"]
        elif "Parameters" in state:
            result = _fill(
                state["Parameters"], effective, scope.context(name, entered_at, 0), "Parameters"
            )
        else:
            result = effective
        output = _apply_result_path(data, result, state.get("ResultPath", "$"))
        return _Outcome(_output_path(state, output), state.get("Next"))
    if kind == "Choice":
        for rule in state["Choices"]:
            if _matches(rule, effective):
                return _Outcome(_output_path(state, effective), rule["Next"])
        if "Default" in state:
            return _Outcome(_output_path(state, effective), state["Default"])
        return _Outcome(
            None, None, NO_CHOICE_MATCHED, f"no choice rule of {name!r} matched", failed=True
        )
    return _Outcome(_output_path(state, effective), None)  # Succeed


def _output_path(state: Mapping[str, Any], output: Any) -> Any:
    return _select(state.get("OutputPath", "$"), output, None, "OutputPath")


def _run_task(
    name: str, state: Mapping[str, Any], data: Any, scope: _Scope, entered_at: datetime
) -> _Outcome:
    retriers: list[dict[str, Any]] = state.get("Retry", [])
    retries = [0] * len(retriers)  # each retrier counts its own attempts
    attempt = 0
    while True:
        attempt += 1
        context = scope.context(name, entered_at, retry_count=attempt - 1)
        try:
            effective = _select(state.get("InputPath", "$"), data, context, "InputPath")
            if "Parameters" in state:
                effective = _fill(state["Parameters"], effective, context, "Parameters")
            result = _invoke(state["Resource"], effective, scope.tasks)
            if "ResultSelector" in state:
                result = _fill(state["ResultSelector"], result, context, "ResultSelector")
            output = _apply_result_path(data, result, state.get("ResultPath", "$"))
            return _Outcome(_output_path(state, output), state.get("Next"), attempts=attempt)
        except _StatesRuntimeError as exc:
            return _runtime_failure(name, exc, attempts=attempt)
        except TaskFailure as failure:
            error, cause = failure.error, failure.cause
        index = next((i for i, r in enumerate(retriers) if _handles(r, error)), None)
        if index is not None and retries[index] < retriers[index].get("MaxAttempts", 3):
            scope.sleep(_retry_delay(retriers[index], retries[index]))
            retries[index] += 1
            continue
        catcher = next((c for c in state.get("Catch", []) if _handles(c, error)), None)
        if catcher is None:
            return _Outcome(None, None, error, cause, failed=True, attempts=attempt)
        try:
            output = _apply_result_path(
                data, {"Error": error, "Cause": cause}, catcher.get("ResultPath", "$")
            )
        except _StatesRuntimeError as exc:
            return _runtime_failure(name, exc, attempts=attempt)
        return _Outcome(output, catcher["Next"], error, cause, attempts=attempt)


def _handles(entry: Mapping[str, Any], error: str) -> bool:
    """Whether a retrier or catcher matches ``error``. ``States.ALL`` and ``States.TaskFailed``
    match every task error. ``States.Runtime`` never gets here: it travels as
    ``_StatesRuntimeError``, which no retrier or catcher sees."""
    return any(name in (error, ALL, TASK_FAILED) for name in entry["ErrorEquals"])


def _retry_delay(retrier: Mapping[str, Any], retries_so_far: int) -> float:
    delay = float(
        retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** retries_so_far
    )
    cap = retrier.get("MaxDelaySeconds")
    return delay if cap is None else min(delay, float(cap))


def _invoke(resource: str, parameters: Any, tasks: Mapping[str, TaskHandler]) -> Any:
    if resource != LAMBDA_INVOKE:
        handler = tasks.get(resource)
        if handler is None:
            raise _StatesRuntimeError(f"no task handler for resource {resource!r}")
        try:
            return _as_json(handler(_as_json(parameters, "the task input")), "the task result")
        except (TaskFailure, _StatesRuntimeError):
            raise
        except Exception as exc:
            raise TaskFailure(TASK_FAILED, str(exc)) from exc
    function = parameters["FunctionName"]
    handler = tasks.get(function)
    if handler is None:
        raise _StatesRuntimeError(f"no task handler for {resource} function {function!r}")
    try:
        payload = handler(_as_json(parameters["Payload"], "the Lambda payload"))
    except TaskFailure:
        raise
    except Exception as exc:
        error = type(exc).__name__
        raise TaskFailure(
            error, json.dumps({"errorMessage": str(exc), "errorType": error})
        ) from exc
    result = {"Payload": payload, "StatusCode": 200, "ExecutedVersion": "$LATEST"}
    return _as_json(result, "the Lambda result")


def _matches(rule: Mapping[str, Any], data: Any) -> bool:
    """Evaluate one Choice rule. ``And``/``Or`` short-circuit, so a guard such as
    ``IsPresent`` protects the comparisons after it from a missing path."""
    if "And" in rule:
        return all(_matches(inner, data) for inner in rule["And"])
    if "Or" in rule:
        return any(_matches(inner, data) for inner in rule["Or"])
    if "Not" in rule:
        return not _matches(rule["Not"], data)
    operator = next(key for key in rule if key in _COMPARISONS)
    operand = rule[operator]
    value = _lookup(data, _parse_path(rule["Variable"]).steps)
    if operator == "IsPresent":
        return (value is not _MISSING) is operand
    if value is _MISSING:
        raise _StatesRuntimeError(
            f"Invalid path {rule['Variable']!r}: the choice state's condition path references "
            "an invalid value"
        )
    if operator.endswith("Path"):
        operand = _select(operand, data, None, operator)
        operator = operator.removesuffix("Path")
    return _COMPARE[operator](value, operand)


def _numeric(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """Numeric comparisons are false, not errors, when either side is not a number."""
    return lambda value, operand: (
        _is_number(value) and _is_number(operand) and compare(value, operand)
    )


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "IsNumeric": lambda value, want: _is_number(value) is want,
    "IsNull": lambda value, want: (value is None) is want,
    "IsString": lambda value, want: isinstance(value, str) is want,
    "IsBoolean": lambda value, want: isinstance(value, bool) is want,
    "BooleanEquals": lambda value, operand: isinstance(value, bool) and value is operand,
    "StringEquals": lambda value, operand: isinstance(value, str) and value == operand,
    "NumericEquals": _numeric(lambda a, b: a == b),
    "NumericLessThan": _numeric(lambda a, b: a < b),
    "NumericLessThanEquals": _numeric(lambda a, b: a <= b),
    "NumericGreaterThan": _numeric(lambda a, b: a > b),
    "NumericGreaterThanEquals": _numeric(lambda a, b: a >= b),
}
