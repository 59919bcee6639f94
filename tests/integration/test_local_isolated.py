"""A handler run in a child process per invocation (infra/local/isolated.py): the event and
context go in, the result or the exception comes out, and its logs, metrics and progress reach
this process's routing, as they did when the handler ran here. Real child processes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.shared.observability import emit_emf, route_emf
from functions.shared.progress import Progress, report_progress, route_progress
from infra.local.asl import TaskFailure
from infra.local.context import LocalLambdaContext
from infra.local.isolated import ChildExitError, HandlerError, invoke_in_child

HERE = __name__


# -- handlers the child imports by name ----------------------------------------------------------


def answers(event: dict[str, Any], context: Any) -> dict[str, Any]:
    print(json.dumps({"level": "INFO", "message": "handling", "function": context.function_name}))
    emit_emf(json.dumps({"_aws": {"CloudWatchMetrics": []}, "RowsAccepted": event["rows"]}))
    report_progress(
        Progress(
            step="preprocess",
            dataset="churn",
            done=1,
            total=1,
            unit="rows",
            detail="1 of 1",
            elapsed_seconds=0.0,
        )
    )
    return {"pid": os.getpid(), "event": event, "request_id": context.aws_request_id}


def raises(event: dict[str, Any], context: Any) -> None:
    raise ValueError(f"column {event['column']!r} is not numeric")


def fails_by_name(event: dict[str, Any], context: Any) -> None:
    raise TaskFailure("Lambda.ServiceException", "the service said no")


def dies(event: dict[str, Any], context: Any) -> None:
    print("about to die", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


# -- tests -----------------------------------------------------------------------------------------


@pytest.fixture
def routed() -> Iterator[dict[str, list[Any]]]:
    seen: dict[str, list[Any]] = {"emf": [], "progress": []}
    route_emf(seen["emf"].append, echo=False)
    route_progress(seen["progress"].append)
    try:
        yield seen
    finally:
        route_emf(None, echo=True)
        route_progress(None)


CONTEXT = LocalLambdaContext(function_name="sluice-test-preprocess", aws_request_id="req-1")


def test_the_handler_runs_in_a_child_and_its_result_logs_metrics_and_progress_come_back(
    routed: dict[str, list[Any]], tmp_path: Path
) -> None:
    # Given a handler that logs, emits a metric and reports progress
    lines: list[str] = []
    # When it is invoked in a child
    result = invoke_in_child(
        f"{HERE}:answers", {"rows": 600}, CONTEXT, pid_dir=tmp_path, on_output=lines.append
    )
    # Then it ran in another process, on the same event and context, and answered
    assert result["pid"] != os.getpid()
    assert result["event"] == {"rows": 600} and result["request_id"] == "req-1"
    # and its log line, metric document and progress record reached this process's routing
    assert any('"message": "handling"' in line for line in lines), lines
    assert [json.loads(doc)["RowsAccepted"] for doc in routed["emf"]] == [600]
    assert [p.detail for p in routed["progress"]] == ["1 of 1"]
    # and the child's pid file is gone with it
    assert list(tmp_path.iterdir()) == []


def test_an_exception_comes_back_with_its_name_message_and_the_childs_traceback() -> None:
    with pytest.raises(HandlerError) as caught:
        invoke_in_child(f"{HERE}:raises", {"column": "tenure"}, CONTEXT, on_output=print)
    assert caught.value.error_type == "ValueError"
    assert caught.value.message == "column 'tenure' is not numeric"
    assert "in raises" in caught.value.child_traceback


def test_a_named_task_error_keeps_its_name_and_cause() -> None:
    with pytest.raises(HandlerError) as caught:
        invoke_in_child(f"{HERE}:fails_by_name", {}, CONTEXT, on_output=print)
    assert caught.value.error_type == "Lambda.ServiceException"
    assert caught.value.cause == "the service said no"


def test_a_child_that_dies_is_an_honest_error_naming_the_function_and_the_signal() -> None:
    lines: list[str] = []
    with pytest.raises(ChildExitError) as caught:
        invoke_in_child(f"{HERE}:dies", {}, CONTEXT, on_output=lines.append)
    message = str(caught.value)
    assert caught.value.error_type == "Runtime.ExitError"
    assert "sluice-test-preprocess" in message and "killed by SIGKILL" in message
    assert "about to die" in message  # the last thing it printed
