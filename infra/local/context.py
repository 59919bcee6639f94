"""The context object a handler is given on one machine, with the fields Powertools logs.

Its own module because both the in-process pipeline (``pipeline``) and the child process that
runs one isolated invocation (``isolated``) build one, and ``pipeline`` imports ``isolated``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from infra.topology import Topology


@dataclass(frozen=True)
class LocalLambdaContext:
    """What a handler reads from its context (Powertools logs these fields)."""

    function_name: str
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = ""
    aws_request_id: str = ""

    @classmethod
    def for_function(cls, topology: Topology, function: str) -> LocalLambdaContext:
        return cls(
            function_name=topology.function_name(function),
            invoked_function_arn=topology.function_arn(function),
            aws_request_id=str(uuid.uuid4()),
        )
