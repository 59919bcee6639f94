"""A Lambda handler run in a child process per invocation, as Lambda runs each in a sandbox.

``sluice up`` is one long-lived process. Preprocess (pandas, pyarrow) and evaluate (pandas,
onnxruntime) run in it, and each run left about 3.5 MiB of native memory behind that no
``malloc_trim`` returned (docs/reliability.md §9). ``invoke_in_child`` runs such a handler in a
fresh interpreter that exits after the one invocation, so whatever it allocated goes back to the
system with it, as training's subprocess already does:

- **in**: the event (JSON, as a real invocation serialises it) and the context's fields, in a
  request file; the child inherits the stack's environment (endpoint, the functions' settings);
- **out**: the handler's result, or its exception's type, message and traceback, in a result
  file. An exception comes back as :class:`HandlerError`, whose ``error_type`` is the original
  class's name (what Step Functions matches); a child that ends without writing a result
  (killed, crashed) comes back as :class:`ChildExitError`, with how it ended;
- **logs**: the child's stdout and stderr (its JSON logs, warnings, tracebacks) are copied line
  by line, as they come, to the stream the functions' logger writes to in this process
  (``<state dir>/logs/`` under ``sluice up``); its EMF metric documents and progress records go
  to files that this process reads and hands to its own routing (``emit_emf``,
  ``report_progress``), so alarms, the console and ``sluice status`` see them as before;
- **guards**: started as the trainer is (infra/local/trainers.py): its own session, killed with
  the stack, its pid file under ``pid_dir`` while it runs, so that a restart ends a stale one.

The child: ``python -m infra.local.isolated REQUEST RESULT``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from functions.shared.progress import PROGRESS_FILE_ENV
from infra.local.trainers import trainer_process
from infra.local.training_runner import REPO_ROOT, relayed_progress

EMF_FILE_ENV = "SLUICE_EMF_FILE"
"""Set for the child: the file its EMF documents are appended to, one a line."""
OUTPUT_TAIL_LINES = 5


class InvocationRequest(BaseModel):
    """What the child is asked: ``target`` is ``module:attribute`` of the handler."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str
    event: Any
    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str


class InvocationResult(BaseModel):
    """What the child answers: the handler's result, or the exception it raised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result: Any = None
    error_type: str | None = None
    message: str = ""
    cause: str | None = None  # an exception's own ``cause`` (a TaskFailure's), verbatim
    traceback: str = ""


class HandlerError(Exception):
    """The handler raised in its child: ``error_type`` is the exception's class name."""

    def __init__(self, function: str, answer: InvocationResult) -> None:
        error_type = answer.error_type or "Exception"
        super().__init__(f"{function}: {error_type}: {answer.message}\n{answer.traceback}".rstrip())
        self.function, self.error_type, self.message = function, error_type, answer.message
        self.cause, self.child_traceback = answer.cause, answer.traceback


class ChildExitError(Exception):
    """The child ended without a result: ``error_type`` is Lambda's name for that."""

    error_type = "Runtime.ExitError"

    def __init__(self, function: str, pid: int, returncode: int, output_tail: str) -> None:
        how = (
            f"killed by {signal.Signals(-returncode).name}"
            if returncode < 0 and -returncode in signal.valid_signals()
            else f"exited with code {returncode}"
        )
        super().__init__(
            f"{function}: its process {pid} {how} without a result"
            + (f"; last output: {output_tail}" if output_tail else "")
        )
        self.function, self.returncode = function, returncode


def invoke_in_child(
    target: str,
    event: Any,
    context: Any,
    *,
    pid_dir: Path | None = None,
    on_output: Callable[[str], None] | None = None,
) -> Any:
    """Run the handler ``target`` (``module:attribute``) on ``event`` in a child process and
    return its result. ``context`` is read for the fields a Lambda context carries.
    ``on_output`` gets each line the child prints (default: the functions' log stream).

    Raises
    ------
    HandlerError
        The handler raised.
    ChildExitError
        The child ended without a result (a signal, a crash, an exit).
    """
    request = InvocationRequest(
        target=target,
        event=json.loads(json.dumps(event)),  # a real invocation serialises the payload
        function_name=context.function_name,
        memory_limit_in_mb=context.memory_limit_in_mb,
        invoked_function_arn=context.invoked_function_arn,
        aws_request_id=context.aws_request_id or str(uuid.uuid4()),
    )
    function = request.function_name
    copy_line = on_output or _function_log_writer()
    with tempfile.TemporaryDirectory(prefix="sluice-invoke-") as tmp:
        root = Path(tmp)
        request_file, result_file = root / "request.json", root / "result.json"
        progress_file, emf_file = root / "progress.jsonl", root / "emf.jsonl"
        request_file.write_text(request.model_dump_json())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            PROGRESS_FILE_ENV: str(progress_file),
            EMF_FILE_ENV: str(emf_file),
        }
        argv = [sys.executable, "-m", __name__, str(request_file), str(result_file)]
        tail: list[str] = []
        with (
            relayed_progress(progress_file, None),
            _relayed_emf(emf_file),
            trainer_process(
                argv,
                job=f"{function}-{request.aws_request_id}",
                pid_dir=pid_dir,
                env=env,
                cwd=REPO_ROOT,
                stderr=subprocess.STDOUT,  # one stream, in the order it was written
            ) as process,
        ):
            assert process.stdout is not None
            for line in process.stdout:
                copy_line(line)
                tail = [*tail[-(OUTPUT_TAIL_LINES - 1) :], line.rstrip()]
            returncode = process.wait()
        try:
            answer = InvocationResult.model_validate_json(result_file.read_bytes())
        except (OSError, ValidationError):
            raise ChildExitError(
                function, process.pid, returncode, " | ".join(filter(None, tail))
            ) from None
    if answer.error_type is not None:
        raise HandlerError(function, answer)
    return answer.result


def _function_log_writer() -> Callable[[str], None]:
    """Write to the stream the functions' logger writes to here (stdout unless routed)."""
    from functions.shared.observability import logger

    stream: IO[str] = getattr(logger.registered_handler, "stream", None) or sys.stdout

    def write(line: str) -> None:
        stream.write(line)
        stream.flush()

    return write


@contextmanager
def _relayed_emf(path: Path) -> Iterator[None]:
    """At the invocation's end, hand each EMF document the child wrote to ``emit_emf`` here.
    Metrics are read by the alarm evaluator each minute: the end of an invocation is soon
    enough, and a document is never split."""
    try:
        yield
    finally:
        from functions.shared.observability import emit_emf

        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    emit_emf(line)


def _append_to(path: Path) -> Callable[[str], None]:
    lock = threading.Lock()

    def append(line: str) -> None:
        with lock, path.open("a", encoding="utf-8") as sink:
            sink.write(line.rstrip("\n") + "\n")

    return append


def child_main(request_file: Path, result_file: Path) -> None:
    """In the child: run the one invocation and write its result (or exception)."""
    from functions.shared.observability import route_emf
    from functions.shared.progress import Progress, route_progress
    from infra.local.context import LocalLambdaContext

    request = InvocationRequest.model_validate_json(request_file.read_bytes())
    if os.environ.get(EMF_FILE_ENV):
        route_emf(_append_to(Path(os.environ[EMF_FILE_ENV])), echo=False)
    if os.environ.get(PROGRESS_FILE_ENV):
        write_progress = _append_to(Path(os.environ[PROGRESS_FILE_ENV]))

        def progress_sink(progress: Progress) -> None:
            write_progress(progress.model_dump_json())

        route_progress(progress_sink)
    module, _, attribute = request.target.partition(":")
    handler = getattr(importlib.import_module(module), attribute)
    context = LocalLambdaContext(
        function_name=request.function_name,
        memory_limit_in_mb=request.memory_limit_in_mb,
        invoked_function_arn=request.invoked_function_arn,
        aws_request_id=request.aws_request_id,
    )
    try:
        answer = InvocationResult(result=json.loads(json.dumps(handler(request.event, context))))
    except Exception as exc:
        # A named task error (asl.TaskFailure: ``error`` and ``cause``) keeps its name and cause
        error, cause = getattr(exc, "error", None), getattr(exc, "cause", None)
        named = isinstance(error, str) and isinstance(cause, str)
        answer = InvocationResult(
            error_type=error if named else type(exc).__name__,
            message=str(exc),
            cause=cause if named else None,
            traceback=traceback.format_exc(),
        )
    result_file.write_text(answer.model_dump_json())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m infra.local.isolated REQUEST_FILE RESULT_FILE")
    child_main(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.stdout.flush()
    os._exit(0)  # the invocation is over: skip interpreter teardown (it may take seconds)
