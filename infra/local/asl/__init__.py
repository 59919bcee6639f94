"""Run the pipeline's Amazon States Language definition in-process, for the local stack and
``sluice demo``.

moto records Step Functions executions but cannot run our Lambda and SageMaker tasks, so the
local stack runs ``infra/statemachine/pipeline.asl.json`` itself: the same file CDK deploys,
with task handlers standing in for the services. Only the subset of ASL that definition uses is
implemented, with the service's semantics; :func:`validate` refuses anything else, so the file
cannot grow a feature that works on AWS but is silently ignored here (or the reverse).

The package, along its seams: :mod:`~infra.local.asl.validation` (reading and checking a
definition), :mod:`~infra.local.asl.paths` (reference paths, ``Parameters``/``ResultSelector``
templates, ``ResultPath`` and the ``States.*`` intrinsic functions) and
:mod:`~infra.local.asl.execute` (running the states). What other modules use is imported from
here.
"""

from __future__ import annotations

from infra.local.asl.execute import (
    ALL,
    MAX_TRANSITIONS,
    NO_CHOICE_MATCHED,
    RUNTIME,
    TASK_FAILED,
    Execution,
    StateEvent,
    TaskFailure,
    TaskHandler,
    run,
)
from infra.local.asl.validation import (
    LAMBDA_INVOKE,
    DefinitionError,
    UnsupportedDefinitionError,
    load_definition,
    validate,
)

__all__ = [
    "ALL",
    "LAMBDA_INVOKE",
    "MAX_TRANSITIONS",
    "NO_CHOICE_MATCHED",
    "RUNTIME",
    "TASK_FAILED",
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
