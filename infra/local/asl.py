"""Run the pipeline's Amazon States Language definition in-process, for the local stack and
``sluice demo``.

moto records Step Functions executions but cannot run our Lambda and SageMaker tasks, so the
local stack runs ``infra/statemachine/pipeline.asl.json`` itself: the same file CDK deploys,
with task handlers standing in for the services. Only the subset of ASL that definition uses is
implemented, with the service's semantics; :func:`validate` refuses anything else, so the file
cannot grow a feature that works on AWS but is silently ignored here (or the reverse).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DefinitionError",
    "Execution",
    "StateEvent",
    "TaskFailure",
    "TaskHandler",
    "UnsupportedDefinitionError",
    "load_definition",
    "run",
    "validate",
]

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
MAX_TRANSITIONS = 1000
RUNTIME = "States.Runtime"
ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"

_TOP_FIELDS = frozenset({"Comment", "StartAt", "States"})
_IO_FIELDS = frozenset({"Type", "Comment", "InputPath", "OutputPath"})
_STATE_FIELDS: Mapping[str, frozenset[str]] = {
    "Task": _IO_FIELDS
    | {"Resource", "Parameters", "ResultSelector", "ResultPath", "Retry", "Catch", "Next", "End"},
    "Pass": _IO_FIELDS | {"Parameters", "Result", "ResultPath", "Next", "End"},
    "Choice": _IO_FIELDS | {"Choices", "Default"},
    "Succeed": _IO_FIELDS,
    "Fail": frozenset({"Type", "Comment", "Error", "Cause"}),
}
_RETRY_FIELDS = frozenset(
    {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds"}
)
_CATCH_FIELDS = frozenset({"ErrorEquals", "Next", "ResultPath"})
_LAMBDA_PARAMETERS = frozenset({"FunctionName", "Payload"})
# The operand each comparison operator takes; "path" operators read it from the input.
_COMPARISONS: Mapping[str, Literal["bool", "str", "number", "path"]] = {
    "IsPresent": "bool",
    "IsNumeric": "bool",
    "IsNull": "bool",
    "IsString": "bool",
    "IsBoolean": "bool",
    "BooleanEquals": "bool",
    "StringEquals": "str",
    "StringEqualsPath": "path",
    "NumericEquals": "number",
    "NumericEqualsPath": "path",
    "NumericLessThan": "number",
    "NumericLessThanPath": "path",
    "NumericLessThanEquals": "number",
    "NumericLessThanEqualsPath": "path",
    "NumericGreaterThan": "number",
    "NumericGreaterThanPath": "path",
    "NumericGreaterThanEquals": "number",
    "NumericGreaterThanEqualsPath": "path",
}
_COMBINATORS = frozenset({"And", "Or", "Not"})
# What ``$$`` offers here: the fields of the context object the local run can honestly fill.
_CONTEXT_FIELDS = {
    "Execution": frozenset({"Name", "Input", "StartTime"}),
    "State": frozenset({"Name", "EnteredTime", "RetryCount"}),
}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_STEP = re.compile(r"\.([\w-]+)|\[(\d+)\]|\['([^']*)'\]")
_PATH_ARGUMENT = re.compile(r"\$\$?(?:\.[\w-]+|\[\d+\]|\['[^']*'\])*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_INTRINSIC_NAME = re.compile(r"States\.([A-Za-z]+)\(")
_FORMAT_TOKEN = re.compile(r"\\(.)|\{\}", re.DOTALL)


class DefinitionError(ValueError):
    """The definition file cannot be turned into a state machine (placeholders, JSON)."""


class UnsupportedDefinitionError(DefinitionError):
    """The definition uses ASL this interpreter does not implement, or is malformed.

    Attributes
    ----------
    problems : list of str
        Every problem found, each led by the path of the offending field
        (``States.Train.TimeoutSeconds``), so one run of the checks reports them all.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(
            "unsupported state machine definition:\n" + "\n".join(f"- {p}" for p in problems)
        )
        self.problems = list(problems)


class TaskFailure(Exception):  # noqa: N818  (the agreed public name; it is an outcome, not a bug)
    """A task's named error, as Step Functions sees it: what ``Retry`` and ``Catch`` match.

    Handlers raise it to fail with a specific error name (``Lambda.ServiceException``,
    ``States.TaskFailed``...); any other exception is mapped to a name by :func:`run`.
    """

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class _StatesRuntimeError(Exception):
    """``States.Runtime``: a path or function the data cannot satisfy. Never retried, never
    caught, not even by ``States.ALL``: the execution fails, as on AWS."""


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


# --------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------


def load_definition(path: Path, substitutions: Mapping[str, str]) -> dict[str, Any]:
    """Read an ASL file, fill its ``${Name}`` placeholders and validate it.

    The placeholders are what CDK's ``DefinitionBody.from_file`` substitutes on deploy; filling
    them here from the same names keeps one file for both. A placeholder without a value, or a
    value the file never uses, is refused: either means the caller and the file disagree.

    Parameters
    ----------
    path : Path
        The ``.asl.json`` file.
    substitutions : Mapping[str, str]
        Placeholder name to value. Values are inserted inside existing JSON strings, so they
        are JSON-escaped (quotes, backslashes).

    Returns
    -------
    dict
        The parsed, validated definition.

    Raises
    ------
    DefinitionError
        Naming every placeholder without a value and every unused substitution, or if the
        filled text is not a JSON object.
    UnsupportedDefinitionError
        If :func:`validate` refuses the definition.
    """
    text = path.read_text(encoding="utf-8")
    used = set(_PLACEHOLDER.findall(text))
    missing = sorted(used - substitutions.keys())
    unused = sorted(substitutions.keys() - used)
    if missing or unused:
        problems = [f"no value for placeholder ${{{name}}}" for name in missing]
        problems += [f"substitution {name!r} is not used by {path.name}" for name in unused]
        raise DefinitionError(f"{path}: " + "; ".join(problems))
    filled = _PLACEHOLDER.sub(lambda m: json.dumps(substitutions[m.group(1)])[1:-1], text)
    try:
        definition = json.loads(filled)
    except json.JSONDecodeError as exc:
        raise DefinitionError(f"{path}: not JSON after substitution: {exc}") from exc
    if not isinstance(definition, dict):
        raise DefinitionError(f"{path}: a state machine definition is a JSON object")
    validate(definition)
    return definition


def validate(definition: Mapping[str, Any]) -> None:
    """Refuse a definition that uses anything this interpreter does not implement.

    Checked: top-level, state and Retry/Catch fields against the supported subset; state types;
    every transition target; ``Next``/``End`` on Task and Pass; Choice rules (operators, operand
    types, ``Next`` only at the top level); path syntax; intrinsic function names; the
    ``lambda:invoke`` parameters.

    Raises
    ------
    UnsupportedDefinitionError
        Listing every problem found, each led by its field path.
    """
    problems: list[str] = []
    problems += [f"{key}: unsupported field" for key in definition if key not in _TOP_FIELDS]
    states = definition.get("States")
    if not isinstance(states, dict) or not states:
        problems.append("States: missing or empty")
        states = {}
    start = definition.get("StartAt")
    if start is None:
        problems.append("StartAt: missing")
    elif not isinstance(start, str) or start not in states:
        problems.append(f"StartAt: unknown state {start!r}")
    for name, state in states.items():
        problems += _state_problems(f"States.{name}", state, states)
    if problems:
        raise UnsupportedDefinitionError(problems)


def _state_problems(where: str, state: Any, states: Mapping[str, Any]) -> list[str]:
    if not isinstance(state, dict):
        return [f"{where}: a state is a JSON object"]
    kind = state.get("Type")
    if not isinstance(kind, str) or kind not in _STATE_FIELDS:
        return [f"{where}.Type: unsupported state type {kind!r}"]
    problems = [
        f"{where}.{key}: unsupported field" for key in state if key not in _STATE_FIELDS[kind]
    ]
    problems += _target_problems(where, "Next", state, states)
    if kind in ("Task", "Pass") and ("Next" in state) == (state.get("End") is True):
        problems.append(f"{where}: needs exactly one of Next or End: true")
    for field in ("InputPath", "OutputPath"):
        if field in state:
            problems += _path_problems(f"{where}.{field}", state[field], context=False)
    if "ResultPath" in state:
        problems += _result_path_problems(f"{where}.ResultPath", state["ResultPath"])
    for field in ("Parameters", "ResultSelector"):
        if field in state:
            problems += _template_problems(f"{where}.{field}", state[field])
    if kind == "Task":
        problems += _task_problems(where, state, states)
    elif kind == "Choice":
        problems += _choice_problems(where, state, states)
    elif kind == "Fail":
        problems += [
            f"{where}.{field}: must be a string"
            for field in ("Error", "Cause")
            if field in state and not isinstance(state[field], str)
        ]
    return problems


def _target_problems(where: str, field: str, holder: Mapping[str, Any], states: Any) -> list[str]:
    if field not in holder:
        return []
    target = holder[field]
    if not isinstance(target, str) or target not in states:
        return [f"{where}.{field}: unknown state {target!r}"]
    return []


def _task_problems(where: str, state: Mapping[str, Any], states: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    resource = state.get("Resource")
    if not isinstance(resource, str):
        problems.append(f"{where}.Resource: missing")
    elif resource == LAMBDA_INVOKE:
        parameters = state.get("Parameters")
        keys = (
            {key.removesuffix(".$") for key in parameters}
            if isinstance(parameters, dict)
            else set()
        )
        problems += [
            f"{where}.Parameters.{key}: unsupported for lambda:invoke"
            for key in sorted(keys - _LAMBDA_PARAMETERS)
        ]
        problems += [
            f"{where}.Parameters.{key}: required for lambda:invoke"
            for key in sorted(_LAMBDA_PARAMETERS - keys)
        ]
    for field, allowed in (("Retry", _RETRY_FIELDS), ("Catch", _CATCH_FIELDS)):
        entries = state.get(field, [])
        if not isinstance(entries, list):
            problems.append(f"{where}.{field}: must be a list")
            continue
        for index, entry in enumerate(entries):
            at = f"{where}.{field}[{index}]"
            if not isinstance(entry, dict):
                problems.append(f"{at}: must be an object")
                continue
            problems += [f"{at}.{key}: unsupported field" for key in entry if key not in allowed]
            errors = entry.get("ErrorEquals")
            if not (
                isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors)
            ):
                problems.append(f"{at}.ErrorEquals: must be a non-empty list of error names")
            if field == "Retry":
                problems += [
                    f"{at}.{key}: must be a number"
                    for key in sorted(_RETRY_FIELDS - {"ErrorEquals"})
                    if key in entry and not _is_number(entry[key])
                ]
            if field == "Catch":
                if "Next" not in entry:
                    problems.append(f"{at}.Next: missing")
                problems += _target_problems(at, "Next", entry, states)
                if "ResultPath" in entry:
                    problems += _result_path_problems(f"{at}.ResultPath", entry["ResultPath"])
    return problems


def _choice_problems(where: str, state: Mapping[str, Any], states: Mapping[str, Any]) -> list[str]:
    problems = _target_problems(where, "Default", state, states)
    choices = state.get("Choices")
    if not isinstance(choices, list) or not choices:
        return [*problems, f"{where}.Choices: must be a non-empty list"]
    for index, rule in enumerate(choices):
        problems += _rule_problems(f"{where}.Choices[{index}]", rule, states, top=True)
    return problems


def _rule_problems(where: str, rule: Any, states: Mapping[str, Any], *, top: bool) -> list[str]:
    if not isinstance(rule, dict):
        return [f"{where}: a choice rule is a JSON object"]
    problems: list[str] = []
    if top and "Next" not in rule:
        problems.append(f"{where}.Next: missing")
    elif top:
        problems += _target_problems(where, "Next", rule, states)
    elif "Next" in rule:
        problems.append(f"{where}.Next: only top-level choice rules have Next")
    known = _COMBINATORS | _COMPARISONS.keys() | {"Variable", "Next"}
    problems += [f"{where}.{key}: unsupported choice operator" for key in rule if key not in known]
    operators = [key for key in rule if key in _COMBINATORS or key in _COMPARISONS]
    if len(operators) != 1:
        return [*problems, f"{where}: needs exactly one operator, found {operators}"]
    operator, operand = operators[0], rule[operators[0]]
    if operator in _COMBINATORS:
        if "Variable" in rule:
            problems.append(f"{where}.Variable: not allowed with {operator}")
        if operator == "Not":
            return problems + _rule_problems(f"{where}.Not", operand, states, top=False)
        if not isinstance(operand, list) or not operand:
            return [*problems, f"{where}.{operator}: must be a non-empty list"]
        for index, inner in enumerate(operand):
            problems += _rule_problems(f"{where}.{operator}[{index}]", inner, states, top=False)
        return problems
    if "Variable" not in rule:
        problems.append(f"{where}.Variable: missing")
    else:
        problems += _path_problems(f"{where}.Variable", rule["Variable"], context=False)
    kind = _COMPARISONS[operator]
    if kind == "path":
        problems += _path_problems(f"{where}.{operator}", operand, context=False)
    elif not _is_kind(operand, kind):
        problems.append(f"{where}.{operator}: operand must be a {kind}")
    return problems


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return _is_number(value)


def _path_problems(where: str, text: Any, *, context: bool) -> list[str]:
    if not isinstance(text, str):
        return [f"{where}: {text!r} is not a path"]
    try:
        path = _parse_path(text)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    if path.context and not context:
        return [f"{where}: the context object ($$) is only supported in Parameters/ResultSelector"]
    if path.context:
        steps = path.steps
        if len(steps) < 2 or steps[1] not in _CONTEXT_FIELDS.get(str(steps[0]), ()):
            return [f"{where}: unsupported context field {text!r}"]
    return []


def _result_path_problems(where: str, text: Any) -> list[str]:
    if text is None:
        return []
    problems = _path_problems(where, text, context=False)
    if not problems and not all(isinstance(step, str) for step in _parse_path(text).steps):
        problems.append(f"{where}: only object fields can be set ($.a.b), not array items")
    return problems


def _template_problems(where: str, template: Any) -> list[str]:
    problems: list[str] = []
    for at, expression in _expressions(where, template):
        if not isinstance(expression, str):
            problems.append(f"{at}: a .$ field takes a path or an intrinsic function")
        elif expression.startswith("States."):
            try:
                call = _parse_intrinsic(expression)
            except ValueError as exc:
                problems.append(f"{at}: {exc}")
                continue
            problems += _call_problems(at, call)
        else:
            problems += _path_problems(at, expression, context=True)
    return problems


def _expressions(where: str, template: Any) -> Iterator[tuple[str, Any]]:
    """Every ``.$`` value of a Parameters/ResultSelector template, with its field path."""
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$"):
                yield f"{where}.{key}", value
            else:
                yield from _expressions(f"{where}.{key}", value)
    elif isinstance(template, list):
        for index, value in enumerate(template):
            yield from _expressions(f"{where}[{index}]", value)


def _call_problems(where: str, call: _Call) -> list[str]:
    problems: list[str] = []
    if call.name not in _INTRINSICS and call.name != "Format":
        problems.append(f"{where}: unsupported intrinsic function States.{call.name}")
    elif call.name == "Format" and not (
        call.args and isinstance(call.args[0], _Literal) and call.args[0].raw is not None
    ):
        problems.append(f"{where}: States.Format's template must be a string literal")
    for argument in call.args:
        if isinstance(argument, _Call):
            problems += _call_problems(where, argument)
        elif isinstance(argument, _Path):
            problems += _path_problems(where, argument.text, context=True)
    return problems


# --------------------------------------------------------------------------------------
# Paths and intrinsic functions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    """A reference path: ``$``, ``$.a.b``, ``$.a[0]``, ``$['a']``, or the same under ``$$``."""

    text: str
    context: bool
    steps: tuple[str | int, ...]


@cache
def _parse_path(text: str) -> _Path:
    if not text.startswith("$"):
        raise ValueError(f"{text!r} is not a path")
    context = text.startswith("$$")
    rest, position, steps = text[2 if context else 1 :], 0, []
    while position < len(rest):
        match = _PATH_STEP.match(rest, position)
        if match is None:
            raise ValueError(f"{text!r} is not a supported path ($, $.a.b, $.a[0], $['a'])")
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else name if name is not None else quoted)
        position = match.end()
    return _Path(text, context, tuple(steps))


_MISSING: Any = object()


def _lookup(data: Any, steps: Sequence[str | int]) -> Any:
    """The value at ``steps``, or ``_MISSING``: absence is a value for ``IsPresent``."""
    for step in steps:
        if isinstance(step, int):
            if not isinstance(data, list) or step >= len(data):
                return _MISSING
        elif not isinstance(data, dict) or step not in data:
            return _MISSING
        data = data[step]
    return data


def _select(text: str, data: Any, context: Any, field: str) -> Any:
    path = _parse_path(text)
    value = _lookup(context if path.context else data, path.steps)
    if value is _MISSING:
        raise _StatesRuntimeError(
            f"the JSONPath {text!r} specified for the field {field!r} could not be found in "
            f"the input {json.dumps(data)}"
        )
    return value


@dataclass(frozen=True)
class _Literal:
    value: Any
    raw: str | None = None  # a quoted string as written: States.Format needs its escapes


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Literal | _Path | _Call, ...]


@cache
def _parse_intrinsic(text: str) -> _Call:
    parser = _IntrinsicParser(text)
    call = parser.call()
    parser.skip_spaces()
    if parser.position != len(text):
        raise ValueError(f"unexpected text after the function call in {text!r}")
    return call


class _IntrinsicParser:
    """Recursive descent over ``States.Name(arg, ...)``; arguments are paths, single-quoted
    strings (``\\`` escapes the next character), numbers, true/false/null or nested calls."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at offset {self.position} of {self.text!r}")

    def skip_spaces(self) -> None:
        while self.text[self.position : self.position + 1].isspace():
            self.position += 1

    def call(self) -> _Call:
        match = _INTRINSIC_NAME.match(self.text, self.position)
        if match is None:
            raise self.fail("expected States.Name(")
        self.position = match.end()
        args: list[_Literal | _Path | _Call] = []
        self.skip_spaces()
        while not self.text.startswith(")", self.position):
            if args:
                if not self.text.startswith(",", self.position):
                    raise self.fail("expected ',' or ')'")
                self.position += 1
            args.append(self.argument())
            self.skip_spaces()
        self.position += 1
        return _Call(match.group(1), tuple(args))

    def argument(self) -> _Literal | _Path | _Call:
        self.skip_spaces()
        rest = self.text[self.position :]
        if rest.startswith("'"):
            return self.string()
        if rest.startswith("States."):
            return self.call()
        for word, value in (("true", True), ("false", False), ("null", None)):
            if rest.startswith(word):
                self.position += len(word)
                return _Literal(value)
        for pattern in (_PATH_ARGUMENT, _NUMBER):
            match = pattern.match(self.text, self.position)
            if match is not None:
                self.position = match.end()
                if pattern is _PATH_ARGUMENT:
                    return _parse_path(match.group())
                return _Literal(json.loads(match.group()))
        raise self.fail("expected an argument")

    def string(self) -> _Literal:
        start = self.position + 1
        position = start
        while position < len(self.text) and self.text[position] != "'":
            position += 2 if self.text[position] == "\\" else 1
        if position >= len(self.text):
            raise self.fail("unterminated string")
        raw = self.text[start:position]
        self.position = position + 1
        return _Literal(re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL), raw)


def _evaluate(call: _Call, data: Any, context: Any, field: str) -> Any:
    values = [_argument(arg, data, context, field) for arg in call.args]
    if call.name == "Format":
        template = call.args[0] if call.args else None
        if not isinstance(template, _Literal) or template.raw is None:
            raise _StatesRuntimeError(f"{field}: States.Format's template must be a string")
        return _format(template.raw, values[1:], field)
    function = _INTRINSICS.get(call.name)
    if function is None:
        raise _StatesRuntimeError(f"{field}: unsupported intrinsic function States.{call.name}")
    try:
        return function(values)
    except (TypeError, ValueError) as exc:
        raise _StatesRuntimeError(f"{field}: States.{call.name}: {exc}") from exc


def _argument(argument: _Literal | _Path | _Call, data: Any, context: Any, field: str) -> Any:
    if isinstance(argument, _Call):
        return _evaluate(argument, data, context, field)
    if isinstance(argument, _Path):
        return _select(argument.text, data, context, field)
    return argument.value


def _format(template: str, values: Sequence[Any], field: str) -> str:
    pieces: list[str] = []
    remaining = iter(values)
    position = 0
    for match in _FORMAT_TOKEN.finditer(template):
        pieces.append(template[position : match.start()])
        position = match.end()
        if match.group(1) is not None:
            pieces.append(match.group(1))
            continue
        value = next(remaining, _MISSING)
        if value is _MISSING:
            raise _StatesRuntimeError(f"{field}: States.Format has more {{}} than arguments")
        if isinstance(value, dict | list):
            raise _StatesRuntimeError(f"{field}: States.Format cannot insert {value!r}")
        pieces.append(value if isinstance(value, str) else json.dumps(value))
    if next(remaining, _MISSING) is not _MISSING:
        raise _StatesRuntimeError(f"{field}: States.Format has more arguments than {{}}")
    pieces.append(template[position:])
    return "".join(pieces)


def _json_merge(args: Sequence[Any]) -> dict[str, Any]:
    if len(args) != 3 or not all(isinstance(a, dict) for a in args[:2]) or args[2] is not False:
        raise ValueError("takes two objects and false (only the shallow merge exists)")
    return {**args[0], **args[1]}


def _string_to_json(args: Sequence[Any]) -> Any:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ValueError("takes one string")
    return json.loads(args[0])


def _json_to_string(args: Sequence[Any]) -> str:
    if len(args) != 1:
        raise ValueError("takes one argument")
    return json.dumps(args[0], separators=(",", ":"))


_INTRINSICS: Mapping[str, Callable[[Sequence[Any]], Any]] = {
    "JsonMerge": _json_merge,
    "StringToJson": _string_to_json,
    "JsonToString": _json_to_string,
    "Array": list,
}


def _fill(template: Any, data: Any, context: Any, where: str) -> Any:
    """Resolve a Parameters/ResultSelector template: ``key.$`` fields become ``key``, valued
    by their path or intrinsic function; everything else is copied as written."""
    if isinstance(template, dict):
        filled: dict[str, Any] = {}
        for key, value in template.items():
            at = f"{where}.{key}"
            if not key.endswith(".$"):
                filled[key] = _fill(value, data, context, at)
            elif value.startswith("States."):
                filled[key[:-2]] = _evaluate(_parse_intrinsic(value), data, context, at)
            else:
                filled[key[:-2]] = _select(value, data, context, at)
        return filled
    if isinstance(template, list):
        return [_fill(value, data, context, f"{where}[{i}]") for i, value in enumerate(template)]
    return template


def _put(target: Any, steps: Sequence[str | int], value: Any, text: str) -> Any:
    """``target`` with ``value`` set at ``steps``, creating objects on the way; copies instead
    of mutating, so no earlier state's input or output (kept in the history) changes."""
    if not steps:
        return value
    if not isinstance(target, dict):
        raise _StatesRuntimeError(f"ResultPath {text!r} cannot be applied: {target!r} is no object")
    head = steps[0]
    return {**target, head: _put(target.get(head, {}), steps[1:], value, text)}


def _apply_result_path(raw_input: Any, result: Any, result_path: str | None) -> Any:
    if result_path is None:
        return raw_input
    return _put(raw_input, _parse_path(result_path).steps, result, result_path)


def _as_json(value: Any, what: str) -> Any:
    """A JSON copy of ``value``: the wire between states and services carries JSON only, and a
    handler must not be able to change (or hand back) objects the execution still holds."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise _StatesRuntimeError(f"{what} is not JSON: {exc}") from exc


# --------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as the context object spells times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
