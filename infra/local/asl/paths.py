"""Reference paths and intrinsic functions of the local ASL interpreter: parsing ``$.a[0]`` and
``States.Name(...)``, reading a path from a state's input or the context object, filling
``Parameters``/``ResultSelector`` templates and applying ``ResultPath``.

What :mod:`infra.local.asl.validation` checks a definition with and
:mod:`infra.local.asl.execute` runs it with; a path or function the data cannot satisfy raises
``_StatesRuntimeError`` (``States.Runtime``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

_PATH_STEP = re.compile(r"\.([\w-]+)|\[(\d+)\]|\['([^']*)'\]")
_PATH_ARGUMENT = re.compile(r"\$\$?(?:\.[\w-]+|\[\d+\]|\['[^']*'\])*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_INTRINSIC_NAME = re.compile(r"States\.([A-Za-z]+)\(")
_FORMAT_TOKEN = re.compile(r"\\(.)|\{\}", re.DOTALL)


class _StatesRuntimeError(Exception):
    """``States.Runtime``: a path or function the data cannot satisfy. Never retried, never
    caught, not even by ``States.ALL``: the execution fails, as on AWS."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
