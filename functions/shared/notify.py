"""Decision notifications: one message per promotion, refusal or failed run.

On AWS an SNS topic (subscribers: e-mail, chat, a ticketing hook); in tests and the local stack
a recording fake or the same adapter against the local endpoint.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

SUBJECT_LIMIT = 100  # SNS refuses longer subjects


class Decision(BaseModel):
    """The message body: machine-readable first, with a one-line summary for people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str  # "promoted" | "refused" | "run_failed"
    dataset: str
    run_name: str
    summary: str
    model_version: int | None = None
    previous_live: int | None = None
    reasons: list[str] = []
    details: dict[str, JsonValue] = {}


class Notifier(ABC):
    @abstractmethod
    def publish(self, decision: Decision) -> None: ...


class SNSNotifier(Notifier):
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._sns = client
        self._topic = topic_arn

    def publish(self, decision: Decision) -> None:
        subject = f"sluice {decision.dataset}: {decision.kind}"[:SUBJECT_LIMIT]
        self._sns.publish(
            TopicArn=self._topic,
            Subject=subject,
            Message=json.dumps(decision.model_dump(mode="json")),
            MessageAttributes={
                "dataset": {"DataType": "String", "StringValue": decision.dataset},
                "kind": {"DataType": "String", "StringValue": decision.kind},
            },
        )
