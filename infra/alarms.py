"""The retraining alarms in the topology's names: the definition is functions/shared/alarms.py
(the promote function puts it, so it lives where the Lambda bundles can import it); this module
gives it the stage of a ``Topology`` and holds the EventBridge patterns that route the alarms'
state changes, and each run's end, to the retrain function. CDK declares the alarms of the
datasets its ``datasets`` context names; the local stack evaluates whatever alarms its endpoint
holds (infra/local/alarms.py).
"""

from __future__ import annotations

from typing import Any

from functions.shared import alarms as definition
from functions.shared.alarms import (
    DIMENSION,
    KINDS,
    MONITOR_PERIOD_SECONDS,
    NAMESPACE,
    SERVING_PERIOD_SECONDS,
    AlarmKind,
    AlarmSpec,
    Comparison,
    MissingData,
    Statistic,
)
from infra.topology import Topology

__all__ = [
    "DIMENSION",
    "KINDS",
    "MONITOR_PERIOD_SECONDS",
    "NAMESPACE",
    "SERVING_PERIOD_SECONDS",
    "AlarmKind",
    "AlarmSpec",
    "Comparison",
    "MissingData",
    "Statistic",
    "alarm_event_pattern",
    "alarm_name",
    "alarm_prefix",
    "alarm_specs",
    "run_status_event_pattern",
]


def alarm_name(topology: Topology, dataset: str, kind: AlarmKind) -> str:
    return definition.alarm_name(topology.stage, dataset, kind)


def alarm_prefix(topology: Topology) -> str:
    """Every retraining alarm's name starts with this; the EventBridge rule matches on it."""
    return definition.alarm_prefix(topology.stage)


def alarm_specs(
    topology: Topology,
    dataset: str,
    *,
    monitor_period_seconds: int = MONITOR_PERIOD_SECONDS,
    serving_period_seconds: int = SERVING_PERIOD_SECONDS,
) -> list[AlarmSpec]:
    """The three alarms of one dataset (functions/shared/alarms.py)."""
    return definition.alarm_specs(
        topology.stage,
        dataset,
        monitor_period_seconds=monitor_period_seconds,
        serving_period_seconds=serving_period_seconds,
    )


def alarm_event_pattern(topology: Topology) -> dict[str, Any]:
    """A retraining alarm entering ALARM: the rule that invokes the retrain function."""
    return {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "detail": {
            "alarmName": [{"prefix": alarm_prefix(topology)}],
            "state": {"value": ["ALARM"]},
        },
    }


def run_status_event_pattern(
    topology: Topology, state_machine_arn: str | None = None
) -> dict[str, Any]:
    """A pipeline run ending: the retrain function records it (its guard's in-flight state).
    ``state_machine_arn``: the deployed state machine's (a CDK token), when not the topology's
    (the local stack's)."""
    return {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "stateMachineArn": [state_machine_arn or topology.state_machine_arn],
            "status": ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
        },
    }
