"""Checking a state machine definition: what the local ASL interpreter implements, and nothing
else, so ``pipeline.asl.json`` cannot grow a feature that works on AWS but is silently ignored
here (or the reverse). Also reads the definition file and fills its ``${Name}`` placeholders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from infra.local.asl.paths import (
    _INTRINSICS,
    _Call,
    _is_number,
    _Literal,
    _parse_intrinsic,
    _parse_path,
    _Path,
)

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"

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
