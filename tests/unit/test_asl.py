"""The in-process ASL interpreter: each supported feature with AWS's semantics, refusal of
everything else, and the real pipeline definition run end to end on fake services."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from functions.shared.gate import gate_inputs
from functions.shared.orchestration import RunInput, StoppingCondition
from functions.shared.pipeline_state import PipelineState
from infra.local.asl import (
    LAMBDA_INVOKE,
    MAX_TRANSITIONS,
    DefinitionError,
    Execution,
    TaskFailure,
    TaskHandler,
    UnsupportedDefinitionError,
    load_definition,
    run,
    validate,
)

PIPELINE = Path(__file__).resolve().parents[2] / "infra" / "statemachine" / "pipeline.asl.json"
WORK = "arn:aws:states:::test:work"
START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeClock:
    """Each reading is one second after the previous one: durations become countable."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        reading = self.now
        self.now += timedelta(seconds=1)
        return reading


class Handler:
    """A task handler that raises ``errors`` in turn, then returns ``result``; records calls."""

    def __init__(self, *errors: Exception, result: Any = None) -> None:
        self.errors = list(errors)
        self.result = {"done": True} if result is None else result
        self.calls: list[dict[str, Any]] = []

    def __call__(self, parameters: dict[str, Any]) -> Any:
        self.calls.append(parameters)
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def refuse_to_wait(seconds: float) -> None:
    raise AssertionError(f"unexpected retry wait of {seconds}s")


def machine(**states: dict[str, Any]) -> dict[str, Any]:
    """A definition starting at its first state."""
    return {"StartAt": next(iter(states)), "States": states}


def task(resource: str = WORK, **fields: Any) -> dict[str, Any]:
    """A Task state; it ends the execution unless given a Next."""
    ends = {} if "Next" in fields else {"End": True}
    return {"Type": "Task", "Resource": resource, **ends, **fields}


def execute(
    definition: dict[str, Any],
    execution_input: Any = None,
    *,
    tasks: dict[str, TaskHandler] | None = None,
    sleep: Callable[[float], None] = refuse_to_wait,
) -> Execution:
    return run(
        definition,
        {} if execution_input is None else execution_input,
        tasks=tasks or {},
        execution_name="test-run",
        sleep=sleep,
        clock=FakeClock(),
    )


# --------------------------------------------------------------------------------------
# Paths, Parameters, ResultSelector, ResultPath, OutputPath
# --------------------------------------------------------------------------------------


def test_input_path_and_parameters_select_fields_indexes_and_quoted_names() -> None:
    # Given a Pass state that narrows its input and builds nested Parameters from it
    definition = machine(
        Build={
            "Type": "Pass",
            "InputPath": "$.order",
            "Parameters": {
                "first.$": "$.items[1].sku",
                "quoted.$": "$['id']",
                "whole.$": "$",
                "literal": "$.not-a-path",
                "nested": [{"id.$": "$.id"}, 7],
            },
            "End": True,
        }
    )
    order = {"id": "o-1", "items": [{"sku": "a"}, {"sku": "b"}]}

    # When it runs
    execution = execute(definition, {"order": order})

    # Then `.$` keys are resolved and stripped, other values are copied as written
    assert execution.status == "SUCCEEDED"
    assert execution.output == {
        "first": "b",
        "quoted": "o-1",
        "whole": order,
        "literal": "$.not-a-path",
        "nested": [{"id": "o-1"}, 7],
    }


def test_the_context_object_names_the_execution_the_state_and_the_retry() -> None:
    # Given a task whose Parameters read every supported context field and which fails once
    handler = Handler(TaskFailure("Custom.Flaky"))
    definition = machine(
        Work=task(
            Parameters={
                "execution.$": "$$.Execution.Name",
                "input.$": "$$.Execution.Input.x",
                "started.$": "$$.Execution.StartTime",
                "state.$": "$$.State.Name",
                "entered.$": "$$.State.EnteredTime",
                "retry.$": "$$.State.RetryCount",
            },
            Retry=[{"ErrorEquals": ["Custom.Flaky"]}],
        )
    )
    waits: list[float] = []

    # When it runs (the fake clock reads START for the execution, START + 1 s for the state)
    execute(definition, {"x": 41}, tasks={WORK: handler}, sleep=waits.append)

    # Then both attempts see the same execution and state, with the retry counted
    first = {
        "execution": "test-run",
        "input": 41,
        "started": "2026-01-02T03:04:05.000Z",
        "state": "Work",
        "entered": "2026-01-02T03:04:06.000Z",
        "retry": 0,
    }
    assert handler.calls == [first, {**first, "retry": 1}]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"InputPath": "$.absent"}, "InputPath"),
        ({"Parameters": {"value.$": "$.absent"}}, "Parameters.value.$"),
        ({"ResultSelector": {"value.$": "$.absent"}}, "ResultSelector.value.$"),
        ({"OutputPath": "$.absent"}, "OutputPath"),
    ],
)
def test_a_missing_path_fails_the_execution_with_states_runtime_past_any_catch(
    fields: dict[str, Any], field: str
) -> None:
    # Given a task reading a path its data lacks, with a catch-all and a retry-all
    definition = machine(
        Work=task(
            Retry=[{"ErrorEquals": ["States.ALL"]}],
            Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Recover"}],
            **fields,
        ),
        Recover={"Type": "Succeed"},
    )

    # When it runs
    execution = execute(definition, {"present": 1}, tasks={WORK: Handler()})

    # Then the execution fails on that state: States.Runtime is neither retried nor caught
    assert execution.status == "FAILED"
    assert execution.error == "States.Runtime"
    assert execution.cause is not None
    assert "'$.absent'" in execution.cause
    assert f"field {field!r}" in execution.cause
    assert execution.path == ["Work"]
    assert execution.history[0].attempts == 1


@pytest.mark.parametrize(
    ("result_path", "expected"),
    [
        (None, {"keep": {"x": 1}, "sub": {"v": 2}}),
        ("$", {"answer": 3}),
        ("$.keep.result", {"keep": {"x": 1, "result": {"answer": 3}}, "sub": {"v": 2}}),
        ("$.new.deep", {"keep": {"x": 1}, "sub": {"v": 2}, "new": {"deep": {"answer": 3}}}),
    ],
)
def test_result_path_places_the_result_on_the_raw_input(
    result_path: str | None, expected: dict[str, Any]
) -> None:
    # Given a task that only sees `sub` (InputPath) but places its result on the whole input
    definition = machine(Work=task(InputPath="$.sub", ResultPath=result_path))
    handler = Handler(result={"answer": 3})

    # When it runs
    execution = execute(definition, {"keep": {"x": 1}, "sub": {"v": 2}}, tasks={WORK: handler})

    # Then the task got the narrowed input, and the output is the raw input with the result set
    assert handler.calls == [{"v": 2}]
    assert execution.output == expected


def test_result_path_through_a_non_object_is_a_runtime_failure() -> None:
    # Given a ResultPath whose parent is a string in the input
    definition = machine(Work=task(ResultPath="$.name.result"))

    # When it runs
    execution = execute(definition, {"name": "text"}, tasks={WORK: Handler()})

    # Then the result cannot be placed: the execution fails
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")


def test_result_selector_and_output_path_shape_what_is_handed_on() -> None:
    # Given a task returning a large response, keeping two fields of it under `$.res`
    definition = machine(
        Work=task(
            ResultSelector={"id.$": "$.Job.Id", "first.$": "$.Items[0]", "kind": "job"},
            ResultPath="$.res",
            OutputPath="$.res",
        )
    )
    handler = Handler(result={"Job": {"Id": "j-1", "Noise": 1}, "Items": ["a", "b"]})

    # When it runs
    execution = execute(definition, {"unrelated": True}, tasks={WORK: handler})

    # Then only the selected result comes out
    assert execution.output == {"id": "j-1", "first": "a", "kind": "job"}


def test_a_pass_state_passes_its_result_or_its_input() -> None:
    # Given a Pass with a static Result, then a bare Pass that narrows its input
    definition = machine(
        Static={"Type": "Pass", "Result": {"fixed": [1, 2]}, "ResultPath": "$.r", "Next": "Bare"},
        Bare={"Type": "Pass", "InputPath": "$.r", "End": True},
    )

    # When it runs
    execution = execute(definition, {"a": 1})

    # Then the Result lands at ResultPath, and the bare Pass outputs its effective input
    assert execution.history[0].output == {"a": 1, "r": {"fixed": [1, 2]}}
    assert execution.output == {"fixed": [1, 2]}


# --------------------------------------------------------------------------------------
# Intrinsic functions
# --------------------------------------------------------------------------------------


def test_json_merge_is_shallow_and_the_second_object_wins() -> None:
    # Given two objects sharing a nested key
    definition = machine(
        Merge={
            "Type": "Pass",
            "Parameters": {"merged.$": "States.JsonMerge($.a, $.b, false)"},
            "End": True,
        }
    )

    # When they are merged
    execution = execute(definition, {"a": {"k": 1, "n": {"x": 1}}, "b": {"n": {"y": 2}}})

    # Then the nested object is replaced, not merged
    assert execution.output == {"merged": {"k": 1, "n": {"y": 2}}}


def test_format_fills_placeholders_from_paths_and_literals_and_honours_escapes() -> None:
    # Given a template with escaped quote and braces, and arguments of every scalar kind
    template = r"States.Format('{} of {}: it\'s \{ok\} {} {} {}', $.job, 3, $.ok, null, 1.5)"
    definition = machine(
        Say={"Type": "Pass", "Parameters": {"text.$": template}, "End": True},
    )

    # When it runs
    execution = execute(definition, {"job": "train-7", "ok": True})

    # Then the arguments are written as JSON scalars, strings unquoted
    assert execution.output == {"text": "train-7 of 3: it's {ok} true null 1.5"}


def test_string_and_array_intrinsics_nest() -> None:
    # Given nested calls and a JSON document held as a string
    definition = machine(
        Build={
            "Type": "Pass",
            "Parameters": {
                "array.$": "States.Array(States.StringToJson($.doc), 'x', -2, false)",
                "text.$": "States.JsonToString($.obj)",
            },
            "End": True,
        }
    )

    # When it runs
    execution = execute(definition, {"doc": '{"a": [1]}', "obj": {"b": 1, "c": [2]}})

    # Then each function applies in turn
    assert execution.output == {"array": [{"a": [1]}, "x", -2, False], "text": '{"b":1,"c":[2]}'}


@pytest.mark.parametrize(
    "expression",
    [
        "States.JsonMerge($.a, $.b, true)",
        "States.JsonMerge($.a, $.text, false)",
        "States.Format('{} {}', $.text)",
        "States.Format('{}', $.a)",
        "States.StringToJson($.text)",
    ],
)
def test_an_intrinsic_function_given_bad_arguments_fails_the_execution(expression: str) -> None:
    # Given a function call its arguments cannot satisfy
    definition = machine(Bad={"Type": "Pass", "Parameters": {"v.$": expression}, "End": True})

    # When it runs
    execution = execute(definition, {"a": {"k": 1}, "b": {}, "text": "not json"})

    # Then the execution fails with States.Runtime, naming the function
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")
    assert execution.cause is not None
    assert "States." in execution.cause


# --------------------------------------------------------------------------------------
# Retry and Catch
# --------------------------------------------------------------------------------------


def test_retry_waits_back_off_up_to_max_delay_and_count_attempts_on_one_event() -> None:
    # Given a task that fails three times, retried 4 times at 2 s x3, capped at 10 s
    handler = Handler(*(TaskFailure("Custom.Busy") for _ in range(3)))
    retry = {
        "ErrorEquals": ["Custom.Busy"],
        "IntervalSeconds": 2,
        "BackoffRate": 3,
        "MaxAttempts": 4,
        "MaxDelaySeconds": 10,
    }
    waits: list[float] = []

    # When it runs
    execution = execute(
        machine(Work=task(Retry=[retry])), tasks={WORK: handler}, sleep=waits.append
    )

    # Then it waited 2, 6, then 10 (not 18), and succeeded on the fourth attempt
    assert waits == [2.0, 6.0, 10.0]
    assert execution.status == "SUCCEEDED"
    assert [(e.name, e.attempts) for e in execution.history] == [("Work", 4)]


def test_retry_defaults_are_one_second_doubling_three_times() -> None:
    # Given a retrier with only ErrorEquals and a task that always fails
    handler = Handler(*(TaskFailure("Custom.Down", "still down") for _ in range(10)))
    waits: list[float] = []

    # When it runs
    execution = execute(
        machine(Work=task(Retry=[{"ErrorEquals": ["Custom.Down"]}])),
        tasks={WORK: handler},
        sleep=waits.append,
    )

    # Then it tried 1 + 3 times, waiting 1, 2, 4 s, and failed with the task's error
    assert waits == [1.0, 2.0, 4.0]
    assert len(handler.calls) == 4
    assert (execution.status, execution.error, execution.cause) == (
        "FAILED",
        "Custom.Down",
        "still down",
    )


def test_max_attempts_zero_never_retries() -> None:
    # Given a matching retrier that allows no attempts
    handler = Handler(TaskFailure("Custom.Down"))
    definition = machine(Work=task(Retry=[{"ErrorEquals": ["Custom.Down"], "MaxAttempts": 0}]))

    # When it runs
    execution = execute(definition, tasks={WORK: handler})

    # Then the first failure is final (refuse_to_wait would have raised on a wait)
    assert (execution.status, execution.error) == ("FAILED", "Custom.Down")
    assert len(handler.calls) == 1


def test_each_retrier_counts_its_own_attempts() -> None:
    # Given errors A and B alternating, each with its own one-retry retrier
    handler = Handler(TaskFailure("A"), TaskFailure("B"), TaskFailure("A"), TaskFailure("B"))
    retriers = [
        {"ErrorEquals": ["A"], "MaxAttempts": 1, "IntervalSeconds": 3},
        {"ErrorEquals": ["B"], "MaxAttempts": 1, "IntervalSeconds": 5},
    ]
    waits: list[float] = []

    # When it runs
    execution = execute(
        machine(Work=task(Retry=retriers)), tasks={WORK: handler}, sleep=waits.append
    )

    # Then A and B were each retried once, and A's second failure ended it
    assert waits == [3.0, 5.0]
    assert (execution.error, execution.history[0].attempts) == ("A", 3)


def test_only_the_first_matching_retrier_applies() -> None:
    # Given a one-retry retrier for A before a generous retry-all
    handler = Handler(*(TaskFailure("A") for _ in range(5)))
    retriers = [
        {"ErrorEquals": ["A"], "MaxAttempts": 1},
        {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5},
    ]
    waits: list[float] = []

    # When A keeps failing
    execution = execute(
        machine(Work=task(Retry=retriers)), tasks={WORK: handler}, sleep=waits.append
    )

    # Then once the first retrier is spent the error is final: retry-all is not consulted
    assert waits == [1.0]
    assert execution.error == "A"


def test_an_error_no_retrier_names_is_not_retried_but_can_be_caught() -> None:
    # Given a retrier for another error and a catcher for this one
    definition = machine(
        Work=task(
            Retry=[{"ErrorEquals": ["Custom.Other"]}],
            Catch=[{"ErrorEquals": ["Custom.Broken"], "Next": "Recover"}],
        ),
        Recover={"Type": "Succeed"},
    )

    # When the task fails
    execution = execute(definition, tasks={WORK: Handler(TaskFailure("Custom.Broken", "why"))})

    # Then no wait happened and the catcher's target ran with the error as its input
    assert execution.path == ["Work", "Recover"]
    assert execution.output == {"Error": "Custom.Broken", "Cause": "why"}


def test_states_task_failed_matches_any_task_error() -> None:
    # Given a retrier on States.TaskFailed
    handler = Handler(TaskFailure("Custom.Anything"))
    waits: list[float] = []

    # When the task fails with an unrelated name
    execution = execute(
        machine(Work=task(Retry=[{"ErrorEquals": ["States.TaskFailed"]}])),
        tasks={WORK: handler},
        sleep=waits.append,
    )

    # Then it was retried and succeeded
    assert waits == [1.0]
    assert execution.status == "SUCCEEDED"


def test_catch_places_the_error_on_the_raw_input_and_the_first_matching_catcher_wins() -> None:
    # Given two catchers matching the error, the first with a ResultPath
    definition = machine(
        Work=task(
            InputPath="$.sub",
            Catch=[
                {"ErrorEquals": ["Other", "Custom.Broken"], "ResultPath": "$.failure", "Next": "A"},
                {"ErrorEquals": ["States.ALL"], "Next": "B"},
            ],
        ),
        A={"Type": "Succeed"},
        B={"Type": "Succeed"},
    )

    # When the task fails
    execution = execute(
        definition, {"sub": {"v": 1}}, tasks={WORK: Handler(TaskFailure("Custom.Broken", "c"))}
    )

    # Then the first catcher routes, with the error beside the raw input
    failure = {"Error": "Custom.Broken", "Cause": "c"}
    assert execution.path == ["Work", "A"]
    assert execution.output == {"sub": {"v": 1}, "failure": failure}
    assert (execution.history[0].error, execution.history[0].cause) == ("Custom.Broken", "c")
    assert execution.history[0].output == execution.output


# --------------------------------------------------------------------------------------
# Task dispatch
# --------------------------------------------------------------------------------------


def lambda_task(function: str, **fields: Any) -> dict[str, Any]:
    return task(LAMBDA_INVOKE, Parameters={"FunctionName": function, "Payload.$": "$"}, **fields)


def test_lambda_invoke_passes_the_payload_and_wraps_the_result() -> None:
    # Given a lambda:invoke task keyed by its function ARN
    function = "arn:aws:lambda:us-east-1:123456789012:function:f"
    handler = Handler(result={"score": 0.9})

    # When it runs
    execution = execute(machine(Call=lambda_task(function)), {"in": 1}, tasks={function: handler})

    # Then the handler got only the Payload, and the result is the integration's envelope
    assert handler.calls == [{"in": 1}]
    assert execution.output == {
        "Payload": {"score": 0.9},
        "StatusCode": 200,
        "ExecutedVersion": "$LATEST",
    }


def test_a_lambda_exception_becomes_its_class_name_with_the_runtime_cause() -> None:
    # Given a Lambda raising a plain exception, caught by its class name
    definition = machine(
        Call=lambda_task("f", Catch=[{"ErrorEquals": ["KeyError"], "Next": "Handled"}]),
        Handled={"Type": "Succeed"},
    )

    # When it runs
    execution = execute(definition, tasks={"f": Handler(KeyError("model_version"))})

    # Then the error is the class name and the cause the runtime's JSON error document
    assert execution.path == ["Call", "Handled"]
    assert execution.output is not None
    assert execution.output["Error"] == "KeyError"
    assert json.loads(execution.output["Cause"]) == {
        "errorMessage": "'model_version'",
        "errorType": "KeyError",
    }


def test_other_exceptions_are_task_failed_and_task_failures_keep_their_names() -> None:
    # Given a service task raising a plain exception, then a Lambda raising a TaskFailure
    definition = machine(
        Work=task(Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "Call"}]),
        Call=lambda_task("f"),
    )

    # When it runs
    execution = execute(
        definition,
        tasks={
            WORK: Handler(RuntimeError("disk full")),
            "f": Handler(TaskFailure("Lambda.X", "y")),
        },
    )

    # Then the first error is States.TaskFailed with the message, the second keeps its name
    assert execution.history[0].error == "States.TaskFailed"
    assert execution.history[0].cause == "disk full"
    assert (execution.error, execution.cause) == ("Lambda.X", "y")


@pytest.mark.parametrize(
    ("state", "named"),
    [(task(), WORK), (lambda_task("fn-arn"), "fn-arn")],
)
def test_a_resource_without_a_handler_fails_the_execution(
    state: dict[str, Any], named: str
) -> None:
    # Given no handler for the task, and a catch-all
    state["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": "Recover"}]
    definition = machine(Work=state, Recover={"Type": "Succeed"})

    # When it runs
    execution = execute(definition, tasks={"something-else": Handler()})

    # Then the execution fails naming what had no handler
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")
    assert execution.cause is not None
    assert repr(named) in execution.cause


def test_a_handler_cannot_change_the_data_the_execution_holds() -> None:
    # Given a handler that mutates its input and a state that keeps that input
    def vandal(parameters: dict[str, Any]) -> Any:
        parameters["items"].append("vandalised")
        return {}

    definition = machine(Work=task(Parameters={"items.$": "$.items"}, ResultPath=None))

    # When it runs
    execution = execute(definition, {"items": [1]}, tasks={WORK: vandal})

    # Then the execution's data is untouched
    assert execution.output == {"items": [1]}
    assert execution.history[0].input == {"items": [1]}


# --------------------------------------------------------------------------------------
# Choice, Succeed, Fail
# --------------------------------------------------------------------------------------


def routes(rule: dict[str, Any], data: dict[str, Any]) -> bool:
    """Whether a Choice with this one rule sends ``data`` to the rule's Next."""
    definition = machine(
        Decide={"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"},
        Yes={"Type": "Succeed"},
        No={"Type": "Succeed"},
    )
    execution = execute(definition, data)
    assert execution.status == "SUCCEEDED", execution.cause
    return execution.path[-1] == "Yes"


def rule(operator: str, operand: Any, variable: str = "$.a") -> dict[str, Any]:
    return {"Variable": variable, operator: operand}


@pytest.mark.parametrize(
    ("choice", "data", "expected"),
    [
        (rule("IsPresent", True), {"a": None}, True),
        (rule("IsPresent", True), {}, False),
        (rule("IsPresent", False), {}, True),
        (rule("IsPresent", True, "$.a[1]"), {"a": [0]}, False),
        (rule("IsNumeric", True), {"a": 1}, True),
        (rule("IsNumeric", True), {"a": -1.5}, True),
        (rule("IsNumeric", True), {"a": True}, False),
        (rule("IsNumeric", True), {"a": None}, False),
        (rule("IsNumeric", True), {"a": "1"}, False),
        (rule("IsNumeric", False), {"a": "1"}, True),
        (rule("IsNull", True), {"a": None}, True),
        (rule("IsNull", True), {"a": 0}, False),
        (rule("IsString", True), {"a": "x"}, True),
        (rule("IsString", True), {"a": 1}, False),
        (rule("IsBoolean", True), {"a": False}, True),
        (rule("IsBoolean", True), {"a": 0}, False),
        (rule("BooleanEquals", True), {"a": True}, True),
        (rule("BooleanEquals", True), {"a": 1}, False),
        (rule("BooleanEquals", False), {"a": False}, True),
        (rule("StringEquals", "x"), {"a": "x"}, True),
        (rule("StringEquals", "1"), {"a": 1}, False),
        (rule("StringEqualsPath", "$.b"), {"a": "x", "b": "x"}, True),
        (rule("StringEqualsPath", "$.b"), {"a": "x", "b": "y"}, False),
        (rule("NumericEquals", 2), {"a": 2.0}, True),
        (rule("NumericEquals", 2), {"a": "2"}, False),
        (rule("NumericLessThan", 2), {"a": 1}, True),
        (rule("NumericLessThan", 2), {"a": 2}, False),
        (rule("NumericLessThanEquals", 2), {"a": 2}, True),
        (rule("NumericGreaterThan", 2), {"a": 2}, False),
        (rule("NumericGreaterThan", 2), {"a": 2.5}, True),
        (rule("NumericGreaterThanEquals", 2), {"a": 2}, True),
        (rule("NumericGreaterThanEquals", 2), {"a": 1.999}, False),
        (rule("NumericEqualsPath", "$.b"), {"a": 3, "b": 3}, True),
        (rule("NumericLessThanPath", "$.b"), {"a": 1, "b": 3}, True),
        (rule("NumericLessThanEqualsPath", "$.b"), {"a": 4, "b": 3}, False),
        (rule("NumericGreaterThanPath", "$.b"), {"a": 4, "b": 3}, True),
        (rule("NumericGreaterThanEqualsPath", "$.b"), {"a": 3, "b": 3}, True),
        (rule("NumericGreaterThanEqualsPath", "$.b"), {"a": 3, "b": None}, False),
        (rule("NumericLessThanEqualsPath", "$.b"), {"a": True, "b": 3}, False),
        ({"And": [rule("IsNull", False), rule("NumericEquals", 1)]}, {"a": 1}, True),
        ({"And": [rule("IsNull", False), rule("NumericEquals", 1)]}, {"a": 2}, False),
        ({"Or": [rule("IsNull", True), rule("NumericEquals", 1)]}, {"a": 1}, True),
        ({"Or": [rule("IsNull", True), rule("NumericEquals", 1)]}, {"a": 2}, False),
        ({"Not": rule("IsNull", True)}, {"a": 2}, True),
    ],
)
def test_choice_operators_follow_aws_semantics(
    choice: dict[str, Any], data: dict[str, Any], expected: bool
) -> None:
    # Given one rule and an input; When the Choice runs; Then it routes as AWS would
    assert routes(choice, data) is expected


@pytest.mark.parametrize(
    "choice",
    [
        rule("IsNumeric", True),
        rule("IsNull", False),
        rule("NumericEquals", 1),
        rule("StringEquals", "x"),
        rule("NumericLessThanPath", "$.absent", variable="$.b"),
    ],
)
def test_comparing_a_missing_path_fails_the_execution(choice: dict[str, Any]) -> None:
    # Given a rule reading a path the input lacks
    definition = machine(
        Decide={"Type": "Choice", "Choices": [{**choice, "Next": "Yes"}], "Default": "Yes"},
        Yes={"Type": "Succeed"},
    )

    # When it runs
    execution = execute(definition, {"b": 1})

    # Then the Default is not taken: the execution fails with States.Runtime
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")


def test_and_or_short_circuit_so_a_presence_guard_protects_later_comparisons() -> None:
    # Given comparisons on a missing path behind guards that settle the result first
    guarded_and = {"And": [rule("IsPresent", True), rule("NumericEquals", 1)]}
    guarded_or = {"Or": [rule("IsPresent", False), rule("NumericEquals", 1)]}

    # When they are evaluated on an input without `a`; Then neither reaches the missing path
    assert routes(guarded_and, {}) is False
    assert routes(guarded_or, {}) is True


def test_choice_takes_the_first_matching_rule_and_applies_input_and_output_paths() -> None:
    # Given two matching rules on a narrowed input
    definition = machine(
        Decide={
            "Type": "Choice",
            "InputPath": "$.sub",
            "OutputPath": "$.v",
            "Choices": [
                {"Variable": "$.v", "NumericGreaterThan": 0, "Next": "First"},
                {"Variable": "$.v", "NumericGreaterThan": 1, "Next": "Second"},
            ],
        },
        First={"Type": "Succeed"},
        Second={"Type": "Succeed"},
    )

    # When it runs
    execution = execute(definition, {"sub": {"v": 5}})

    # Then the first rule wins and the output is the selected value
    assert execution.path == ["Decide", "First"]
    assert execution.output == 5


def test_no_matching_rule_and_no_default_fails_with_no_choice_matched() -> None:
    # Given a Choice without Default
    definition = machine(
        Decide={"Type": "Choice", "Choices": [{**rule("NumericEquals", 1), "Next": "Yes"}]},
        Yes={"Type": "Succeed"},
    )

    # When nothing matches
    execution = execute(definition, {"a": 2})

    # Then the execution fails with States.NoChoiceMatched
    assert (execution.status, execution.error) == ("FAILED", "States.NoChoiceMatched")


def test_a_fail_state_fails_the_execution_with_its_error_and_cause() -> None:
    # Given a Fail state after a Pass
    definition = machine(
        Step={"Type": "Pass", "Next": "Stop"},
        Stop={"Type": "Fail", "Error": "Custom.Stopped", "Cause": "on purpose"},
    )

    # When it runs
    execution = execute(definition, {"a": 1})

    # Then the execution failed with the state's error, and has no output
    assert (execution.status, execution.error, execution.cause) == (
        "FAILED",
        "Custom.Stopped",
        "on purpose",
    )
    assert execution.output is None


def test_succeed_applies_its_paths_to_the_output() -> None:
    # Given a Succeed state that narrows its input
    definition = machine(Done={"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"})

    # When it runs; Then the output is the narrowed value
    assert execute(definition, {"a": {"b": [1]}}).output == [1]


# --------------------------------------------------------------------------------------
# History and limits
# --------------------------------------------------------------------------------------


def test_history_records_each_state_with_its_input_output_times_and_attempts() -> None:
    # Given a Pass then a task failing once before succeeding
    definition = machine(
        Mark={"Type": "Pass", "Result": 1, "ResultPath": "$.mark", "Next": "Work"},
        Work=task(Retry=[{"ErrorEquals": ["Custom.Once"]}], ResultPath="$.work"),
    )
    handler = Handler(TaskFailure("Custom.Once"), result={"r": 2})

    # When it runs (the fake clock ticks one second per reading)
    execution = execute(definition, {"in": 0}, tasks={WORK: handler}, sleep=lambda s: None)

    # Then each state has one event, in order, with its raw input and its output
    mark, work = execution.history
    assert execution.path == ["Mark", "Work"]
    assert (mark.type, mark.input, mark.output, mark.attempts) == (
        "Pass",
        {"in": 0},
        {"in": 0, "mark": 1},
        1,
    )
    assert (work.type, work.input, work.attempts, work.error) == ("Task", mark.output, 2, None)
    assert work.output == {"in": 0, "mark": 1, "work": {"r": 2}}
    assert execution.started_at == START
    assert (mark.entered_at, mark.duration_seconds) == (START + timedelta(seconds=1), 1.0)
    assert execution.stopped_at == START + timedelta(seconds=5)
    assert execution.input == {"in": 0}


def test_a_definition_that_loops_is_stopped_at_the_transition_guard() -> None:
    # Given two Pass states sending each other back and forth
    definition = machine(
        Ping={"Type": "Pass", "Next": "Pong"},
        Pong={"Type": "Pass", "Next": "Ping"},
    )

    # When it runs
    execution = execute(definition)

    # Then it fails after MAX_TRANSITIONS states
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")
    assert len(execution.history) == MAX_TRANSITIONS


def test_run_refuses_input_that_is_not_json() -> None:
    # Given a NaN in the input (StartExecution would refuse it)
    definition = machine(Done={"Type": "Succeed"})

    # When / Then
    with pytest.raises(ValueError, match="not JSON"):
        execute(definition, {"x": float("nan")})


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def valid() -> dict[str, Any]:
    return machine(
        Work=task(
            Retry=[{"ErrorEquals": ["States.ALL"]}],
            Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Done"}],
            Next="Decide",
        ),
        Decide={
            "Type": "Choice",
            "Choices": [{"Variable": "$.a", "IsPresent": True, "Next": "Done"}],
            "Default": "Done",
        },
        Done={"Type": "Succeed"},
    )


def test_the_reference_definition_is_valid() -> None:
    # Given a definition using only supported features
    # When / Then validation accepts it
    validate(valid())


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.pop("StartAt"), "StartAt: missing"),
        (lambda d: d.update(StartAt="Nowhere"), "StartAt: unknown state 'Nowhere'"),
        (lambda d: d.update(TimeoutSeconds=60), "TimeoutSeconds: unsupported field"),
        (lambda d: d["States"].update(Fan={"Type": "Map"}), "States.Fan.Type: unsupported state"),
        (lambda d: d["States"]["Work"].update(Next="Nowhere"), "States.Work.Next: unknown state"),
        (
            lambda d: d["States"]["Work"].update(TimeoutSeconds=5),
            "States.Work.TimeoutSeconds: unsupported field",
        ),
        (lambda d: d["States"]["Work"].update(End=True), "States.Work: needs exactly one of Next"),
        (lambda d: d["States"]["Work"].pop("Resource"), "States.Work.Resource: missing"),
        (
            lambda d: d["States"]["Work"]["Retry"][0].update(JitterStrategy="FULL"),
            "States.Work.Retry[0].JitterStrategy: unsupported field",
        ),
        (
            lambda d: d["States"]["Work"]["Retry"][0].update(MaxAttempts="3"),
            "States.Work.Retry[0].MaxAttempts: must be a number",
        ),
        (
            lambda d: d["States"]["Work"]["Catch"][0].update(Next="Nowhere"),
            "States.Work.Catch[0].Next: unknown state",
        ),
        (
            lambda d: d["States"]["Work"].update(InputPath="$$.Execution.Input"),
            "States.Work.InputPath: the context object",
        ),
        (
            lambda d: d["States"]["Work"].update(Parameters={"x.$": "$$.Execution.Id"}),
            "States.Work.Parameters.x.$: unsupported context field",
        ),
        (
            lambda d: d["States"]["Work"].update(Parameters={"x.$": "$.items[*]"}),
            "States.Work.Parameters.x.$: '$.items[*]' is not a supported path",
        ),
        (
            lambda d: d["States"]["Work"].update(ResultSelector={"x.$": "States.UUID()"}),
            "States.Work.ResultSelector.x.$: unsupported intrinsic function States.UUID",
        ),
        (
            lambda d: d["States"]["Work"].update(Parameters={"x.$": "States.Format($.t, 1)"}),
            "template must be a string literal",
        ),
        (
            lambda d: d["States"]["Work"].update(ResultPath="$.a[0]"),
            "States.Work.ResultPath: only object fields",
        ),
        (
            lambda d: d["States"]["Work"].update(Resource=LAMBDA_INVOKE, Parameters={"F": 1}),
            "States.Work.Parameters.FunctionName: required for lambda:invoke",
        ),
        (
            lambda d: d["States"]["Done"].update(Type="Wait"),
            "States.Done.Type: unsupported state type 'Wait'",
        ),
        (
            lambda d: d["States"]["Decide"]["Choices"][0].update(StringMatches="a*"),
            "States.Decide.Choices[0].StringMatches: unsupported choice operator",
        ),
        (
            lambda d: d["States"]["Decide"]["Choices"][0].pop("Next"),
            "States.Decide.Choices[0].Next: missing",
        ),
        (
            lambda d: d["States"]["Decide"]["Choices"].append(
                {"Not": {"Variable": "$.a", "IsNull": True, "Next": "Done"}, "Next": "Done"}
            ),
            "States.Decide.Choices[1].Not.Next: only top-level choice rules have Next",
        ),
        (
            lambda d: d["States"]["Decide"]["Choices"].append(
                {"Variable": "$.a", "NumericEquals": "1", "Next": "Done"}
            ),
            "States.Decide.Choices[1].NumericEquals: operand must be a number",
        ),
        (lambda d: d["States"]["Decide"].update(Default="Gone"), "States.Decide.Default: unknown"),
    ],
)
def test_validate_refuses_what_is_not_implemented_naming_the_field(
    change: Callable[[dict[str, Any]], Any], problem: str
) -> None:
    # Given the reference definition with one unsupported change
    definition = valid()
    change(definition)

    # When it is validated
    with pytest.raises(UnsupportedDefinitionError) as refused:
        validate(definition)

    # Then the problem is named by its path
    assert any(p.startswith(problem) or problem in p for p in refused.value.problems), (
        refused.value.problems
    )


def test_validate_reports_every_problem_at_once() -> None:
    # Given three independent problems
    definition = valid()
    definition["States"]["Work"]["TimeoutSeconds"] = 5
    definition["States"]["Done"]["Type"] = "Wait"
    definition["States"]["Decide"]["Default"] = "Gone"

    # When it is validated
    with pytest.raises(UnsupportedDefinitionError) as refused:
        validate(definition)

    # Then all of them are listed
    assert len(refused.value.problems) == 3
    assert "States.Work.TimeoutSeconds" in str(refused.value)


def test_run_refuses_an_unsupported_definition_before_running_anything() -> None:
    # Given an unknown intrinsic and a handler that must not be called
    handler = Handler()
    definition = machine(Work=task(Parameters={"id.$": "States.UUID()"}))

    # When / Then
    with pytest.raises(UnsupportedDefinitionError, match=r"States\.UUID"):
        execute(definition, tasks={WORK: handler})
    assert handler.calls == []


# --------------------------------------------------------------------------------------
# The pipeline definition
# --------------------------------------------------------------------------------------

REGION = "eu-west-1"
TRAIN = "arn:aws:states:::sagemaker:createTrainingJob.sync"
EVALUATE = f"arn:aws:lambda:{REGION}:123456789012:function:sluice-evaluate-test"
PROMOTE = f"arn:aws:lambda:{REGION}:123456789012:function:sluice-promote-test"
REJECT = f"arn:aws:lambda:{REGION}:123456789012:function:sluice-reject-test"
SUBSTITUTIONS = {
    "Region": REGION,
    "TrainingImage": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/sluice-training:1",
    "TrainingRoleArn": "arn:aws:iam::123456789012:role/sluice-training-test",
    "TrainingSourceUri": "s3://sluice-artifacts/code/training.tar.gz",
    "EvaluateFunctionArn": EVALUATE,
    "PromoteFunctionArn": PROMOTE,
    "RejectFunctionArn": REJECT,
}
RUN = RunInput(
    run_name="churn-6f1d2c",
    training_job_name="churn-6f1d2c",
    dataset="churn",
    dataset_version="ab12cd34",
    artifacts_bucket="sluice-artifacts",
    train_uri="s3://sluice-artifacts/churn/datasets/ab12cd34/train/",
    validation_uri="s3://sluice-artifacts/churn/datasets/ab12cd34/validation/",
    test_uri="s3://sluice-artifacts/churn/datasets/ab12cd34/test/",
    output_uri="s3://sluice-artifacts/churn/models/",
    checkpoint_uri="s3://sluice-artifacts/churn/checkpoints/churn-6f1d2c/",
    task="classification",
    metric="f1_macro",
    threshold=0.6,
    tolerance=0.01,
    instance_type="ml.m5.large",
    spot=True,
    stopping_condition=StoppingCondition(MaxRuntimeInSeconds=3600, MaxWaitTimeInSeconds=7200),
    hyperparameters={"max_depth": "6", "n_estimators": "200"},
)


class FakePipelineServices:
    """SageMaker's .sync training and the three pipeline Lambdas, recording what they got."""

    def __init__(
        self,
        challenger: float | None = 0.8,
        *,
        train_errors: tuple[Exception, ...] = (),
        evaluate_errors: tuple[Exception, ...] = (),
    ) -> None:
        self.gate = gate_inputs("f1_macro", challenger, 0.78, threshold=0.6, tolerance=0.01)
        self.train = Handler(*train_errors, result=self.described_job())
        self.evaluate = Handler(
            *evaluate_errors,
            result={
                "model_version": 3,
                "champion_version": 2,
                "report_uri": "s3://sluice-artifacts/churn/reports/3.json",
                "gate": self.gate.model_dump(),
            },
        )
        self.promote = Handler(result={"promoted": True})
        self.reject = Handler(result={"promoted": False})

    @staticmethod
    def described_job() -> dict[str, Any]:
        return {
            "TrainingJobName": RUN.training_job_name,
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {
                "S3ModelArtifacts": f"{RUN.output_uri}{RUN.training_job_name}/output/model.tar.gz"
            },
            "TrainingTimeInSeconds": 412,
        }

    def handlers(self) -> dict[str, TaskHandler]:
        return {
            TRAIN: self.train,
            EVALUATE: self.evaluate,
            PROMOTE: self.promote,
            REJECT: self.reject,
        }


def run_pipeline(
    services: FakePipelineServices,
    waits: list[float] | None = None,
    run_input: dict[str, Any] | None = None,
) -> Execution:
    return run(
        load_definition(PIPELINE, SUBSTITUTIONS),
        json.loads(RUN.execution_input()) if run_input is None else run_input,
        tasks=services.handlers(),
        execution_name=RUN.run_name,
        sleep=refuse_to_wait if waits is None else waits.append,
        clock=FakeClock(),
    )


def test_the_pipeline_definition_loads_and_validates_with_all_its_placeholders() -> None:
    # Given values that need JSON escaping
    tricky = {**SUBSTITUTIONS, "TrainingImage": 'image"with\\quote'}

    # When it is loaded
    definition = load_definition(PIPELINE, tricky)

    # Then the values arrive intact inside their JSON strings
    train = definition["States"]["Train"]
    assert train["Parameters"]["AlgorithmSpecification"]["TrainingImage"] == 'image"with\\quote'
    assert definition["States"]["Evaluate"]["Parameters"]["FunctionName"] == EVALUATE
    assert "${" not in json.dumps(definition["States"])


def test_a_missing_or_an_extra_substitution_is_refused_by_name() -> None:
    # Given one placeholder without a value and one value no placeholder uses
    substitutions = {k: v for k, v in SUBSTITUTIONS.items() if k != "Region"}
    substitutions["Regoin"] = REGION

    # When it is loaded
    with pytest.raises(DefinitionError) as refused:
        load_definition(PIPELINE, substitutions)

    # Then both are named
    assert "${Region}" in str(refused.value)
    assert "'Regoin'" in str(refused.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s["Train"].update(TimeoutSeconds=86400), "States.Train.TimeoutSeconds"),
        (
            lambda s: s.update(Fan={"Type": "Map", "ItemsPath": "$.x", "End": True}),
            "States.Fan.Type",
        ),
        (lambda s: s["Gate"]["Choices"][0].update(Comment="why"), "States.Gate.Choices[0].Comment"),
    ],
)
def test_the_pipeline_with_an_unsupported_addition_is_refused_naming_it(
    change: Callable[[dict[str, Any]], Any], named: str
) -> None:
    # Given a copy of the real definition with something this interpreter does not implement
    definition = copy.deepcopy(load_definition(PIPELINE, SUBSTITUTIONS))
    change(definition["States"])

    # When / Then validation refuses it, naming the field
    with pytest.raises(UnsupportedDefinitionError, match=re.escape(named)):
        validate(definition)


def test_a_passing_gate_promotes_after_training_with_the_run_settings() -> None:
    # Given services where the challenger beats threshold and champion
    services = FakePipelineServices(challenger=0.8)

    # When the pipeline runs
    execution = run_pipeline(services)

    # Then it promoted and succeeded
    assert execution.status == "SUCCEEDED"
    assert execution.path[-2:] == ["Promote", "Promoted"]
    assert execution.output is not None
    assert execution.output["outcome"] == {"decision": {"promoted": True}}
    # ... training got the script-mode keys merged into the hyperparameters, and the run's limits
    (request,) = services.train.calls
    assert request["HyperParameters"] == {
        "max_depth": "6",
        "n_estimators": "200",
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": SUBSTITUTIONS["TrainingSourceUri"],
        "sagemaker_region": REGION,
    }
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    assert request["TrainingJobName"] == RUN.training_job_name
    assert request["EnableManagedSpotTraining"] is True
    # ... and promote saw the training and evaluation results on the state
    (state,) = services.promote.calls
    assert state["training"] == {
        "job_name": RUN.training_job_name,
        "model_artifacts": f"{RUN.output_uri}{RUN.training_job_name}/output/model.tar.gz",
        "training_seconds": 412,
    }
    assert state["evaluation"]["gate"] == services.gate.model_dump()
    assert services.reject.calls == []


@pytest.mark.parametrize(
    ("data_type", "suffix"),
    [("S3Prefix", "{}/"), ("ManifestFile", "channels/{}.manifest")],
)
def test_training_reads_its_channels_as_the_run_input_says(data_type: str, suffix: str) -> None:
    # Given a run over a format-1 version (split folders) or a format-2 one (channel manifests)
    base = "s3://sluice-artifacts/churn/versions/ab12cd34/"
    uris = {f"{s}_uri": base + suffix.format(s) for s in ("train", "validation", "test")}
    run = RUN.model_copy(update={"data_type": data_type, **uris})
    services = FakePipelineServices()

    # When the pipeline runs
    execution = run_pipeline(services, run_input=json.loads(run.execution_input()))

    # Then both channels of the training job are read that way
    assert execution.status == "SUCCEEDED"
    (request,) = services.train.calls
    sources = [c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]]
    assert sources == [
        {
            "S3Uri": uris[f"{s}_uri"],
            "S3DataType": data_type,
            "S3DataDistributionType": ("FullyReplicated"),
        }
        for s in ("train", "validation")
    ]


def test_an_input_without_a_channel_type_fails_at_train_so_every_input_carries_one() -> None:
    # Given an input written before data_type existed: Train's "$.data_type" is then a missing
    # path, States.Runtime, which no Catch takes (on AWS such an execution keeps the definition
    # it started with; the local stack rebuilds every input from RunInput, which dumps defaults)
    legacy = json.loads(RUN.execution_input())
    assert legacy.pop("data_type") == "S3Prefix"
    services = FakePipelineServices()

    # When it runs on today's definition
    execution = run_pipeline(services, run_input=legacy)

    # Then it fails at Train without a training job
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")
    assert "$.data_type" in (execution.cause or "")
    assert services.train.calls == []
    # ... and an input read back through RunInput carries the default again
    assert json.loads(RunInput.model_validate(legacy).execution_input())["data_type"] == "S3Prefix"


def test_a_refusing_gate_rejects_and_the_run_still_succeeds() -> None:
    # Given a challenger below the threshold
    services = FakePipelineServices(challenger=0.5)

    # When the pipeline runs
    execution = run_pipeline(services)

    # Then it was rejected, a success for the pipeline
    assert execution.status == "SUCCEEDED"
    assert execution.path[-3:] == ["Gate", "Reject", "Refused"]
    assert services.promote.calls == []


def test_a_failed_training_job_is_recorded_and_fails_the_run() -> None:
    # Given a training job that fails (the .sync integration reports States.TaskFailed)
    services = FakePipelineServices(
        train_errors=(TaskFailure("States.TaskFailed", '{"FailureReason": "OOM"}'),)
    )

    # When the pipeline runs
    execution = run_pipeline(services)

    # Then it went straight to RecordFailure, which told reject what failed
    assert execution.path == ["PrepareTraining", "Train", "RecordFailure", "RunFailed"]
    assert (execution.status, execution.error) == ("FAILED", "Sluice.RunFailed")
    (state,) = services.reject.calls
    assert state["failure"] == {"Error": "States.TaskFailed", "Cause": '{"FailureReason": "OOM"}'}
    assert services.evaluate.calls == []


QUOTA = TaskFailure(
    "SageMaker.ResourceLimitExceededException",
    "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 0 Instances",
)


def test_a_spot_job_refused_for_quota_trains_again_on_demand_and_promotes() -> None:
    # Given a new account: no spot quota for the instance, so CreateTrainingJob is refused once
    services = FakePipelineServices(train_errors=(QUOTA,))

    # When the pipeline runs
    execution = run_pipeline(services)

    # Then the same job trained again on demand, without spot's wait limit, and was promoted
    assert execution.path[:6] == [
        "PrepareTraining",
        "Train",
        "SpotRefused",
        "OnDemandLimits",
        "OnDemand",
        "Train",
    ]
    assert execution.status == "SUCCEEDED" and execution.path[-1] == "Promoted"
    spot, on_demand = services.train.calls
    assert spot["EnableManagedSpotTraining"] is True
    assert on_demand["EnableManagedSpotTraining"] is False
    assert on_demand["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert on_demand["TrainingJobName"] == spot["TrainingJobName"]  # the refused job never existed
    # ... and promote saw why the run is on demand, with no failure on the state
    (state,) = services.promote.calls
    assert state["spot_fallback"]["Error"] == QUOTA.error
    assert "failure" not in state
    PipelineState.model_validate(state)


def test_an_on_demand_job_refused_for_quota_is_recorded_once_without_a_loop() -> None:
    # Given no quota for the instance at all, spot or on demand
    services = FakePipelineServices(train_errors=(QUOTA, QUOTA))

    # When the pipeline runs
    execution = run_pipeline(services)

    # Then it tried spot, then on demand, then recorded the quota error and failed
    assert execution.path[-5:] == [
        "Train",
        "SpotRefused",
        "QuotaRefused",
        "RecordFailure",
        "RunFailed",
    ]
    assert len(services.train.calls) == 2
    assert (execution.status, execution.error) == ("FAILED", "Sluice.RunFailed")
    (state,) = services.reject.calls
    assert state["failure"] == {"Error": QUOTA.error, "Cause": QUOTA.cause}
    PipelineState.model_validate(state)


def test_a_run_that_asked_for_on_demand_is_not_retried_after_a_quota_refusal() -> None:
    # Given a contract that turned spot off, and no on-demand quota
    services = FakePipelineServices(train_errors=(QUOTA,))
    run_input = json.loads(RUN.execution_input())
    run_input["spot"] = False
    run_input["stopping_condition"] = {"MaxRuntimeInSeconds": 3600}

    # When the pipeline runs
    execution = run(
        load_definition(PIPELINE, SUBSTITUTIONS),
        run_input,
        tasks=services.handlers(),
        execution_name=RUN.run_name,
        sleep=refuse_to_wait,
        clock=FakeClock(),
    )

    # Then the refusal is recorded at once
    assert execution.path == [
        "PrepareTraining",
        "Train",
        "SpotRefused",
        "QuotaRefused",
        "RecordFailure",
        "RunFailed",
    ]
    assert len(services.train.calls) == 1


def test_an_evaluate_exception_is_recorded_without_retrying() -> None:
    # Given an evaluate function raising an ordinary exception
    services = FakePipelineServices(evaluate_errors=(ValueError("no test split"),))

    # When the pipeline runs (refuse_to_wait fails the test on any retry wait)
    execution = run_pipeline(services)

    # Then the error, named after the exception, reached RecordFailure
    assert execution.path[-3:] == ["Evaluate", "RecordFailure", "RunFailed"]
    assert execution.status == "FAILED"
    (state,) = services.reject.calls
    assert state["failure"]["Error"] == "ValueError"
    assert json.loads(state["failure"]["Cause"])["errorMessage"] == "no test split"


def test_a_lambda_service_exception_is_retried_three_times_then_recorded() -> None:
    # Given the Lambda service failing every invocation of evaluate
    error = TaskFailure("Lambda.ServiceException", "service unavailable")
    services = FakePipelineServices(evaluate_errors=(error,) * 4)
    waits: list[float] = []

    # When the pipeline runs
    execution = run_pipeline(services, waits)

    # Then evaluate was tried 1 + 3 times (2, 4, 8 s apart) before the catcher took over
    assert waits == [2.0, 4.0, 8.0]
    assert len(services.evaluate.calls) == 4
    evaluate = execution.history[execution.path.index("Evaluate")]
    assert (evaluate.attempts, evaluate.error) == (4, "Lambda.ServiceException")
    assert execution.path[-2:] == ["RecordFailure", "RunFailed"]
    assert services.reject.calls[0]["failure"]["Error"] == "Lambda.ServiceException"
