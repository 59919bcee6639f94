"""CloudWatch, the part moto leaves out: metrics from the functions' EMF output, alarm evaluation.

On AWS, Lambda's stdout goes to CloudWatch Logs, which turns embedded-metric-format documents
into metrics, and CloudWatch evaluates each alarm every minute, sending a ``CloudWatch Alarm State
Change`` event to EventBridge when its state changes. moto stores metrics and alarms but does
neither. Locally:

- ``MetricSink`` receives every EMF document the in-process functions emit
  (``functions.shared.observability.route_emf``): ``offer`` only queues the line (it runs on the
  request path), ``drain`` keeps the datapoints and puts them to the endpoint (``PutMetricData``);
- ``AlarmEvaluator`` evaluates the retraining alarms the endpoint holds (those the promote function
  put when each dataset's model went live, functions/shared/alarms.py, and none once
  ``sluice retire`` deleted them), as read back with ``DescribeAlarms``, over the sink's
  clock-aligned statistics with CloudWatch's rules (``evaluate``: M out of the N most recent
  periods, missing data as the alarm says), records each state change in the endpoint
  (``SetAlarmState``) and returns the state-change events, shaped as CloudWatch sends them, for
  the stack to route as EventBridge would.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from infra.alarms import DIMENSION, KINDS, AlarmSpec, alarm_event_pattern, alarm_prefix
from infra.topology import Topology

AlarmState = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
_OPERATORS = {
    "GreaterThanOrEqualToThreshold": "greater than or equal to",
    "GreaterThanThreshold": "greater than",
}
MAX_QUEUED = 10_000  # documents held; more are dropped and counted (the drain fell behind)
_PUT_BATCH = 500
INITIAL_REASON = (
    "Unchecked: Initial alarm creation"  # PutMetricData accepts up to 1000 metrics per call
)


@dataclass(frozen=True)
class Evaluation:
    state: AlarmState
    reason: str
    datapoints: tuple[tuple[datetime, float], ...]  # newest first, the periods that had data


def evaluate(
    spec: AlarmSpec,
    values: dict[int, float],
    now: datetime,
    previous: AlarmState = "INSUFFICIENT_DATA",
) -> Evaluation:
    """One evaluation. ``values``: the statistic per period, keyed by the period's start in epoch
    seconds (a multiple of the period). The N most recent periods are evaluated, the current
    (still open) one included; a period without a value is missing, and counts as the alarm's
    ``treat_missing_data`` says: ``notBreaching``/``breaching`` as such, ``ignore`` keeps the
    previous state when every period is missing, ``missing`` makes it INSUFFICIENT_DATA then."""
    period = spec.period_seconds
    current = math.floor(now.timestamp()) // period * period
    starts = [current - i * period for i in range(spec.evaluation_periods)]
    present = [(start, values[start]) for start in starts if start in values]
    missing = spec.evaluation_periods - len(present)
    breaching = sum(1 for _, value in present if spec.breaches(value))
    if spec.treat_missing_data == "breaching":
        breaching += missing
    points = tuple((datetime.fromtimestamp(s, UTC), v) for s, v in present)
    shown = ", ".join(f"{v:g} ({t:%d/%m/%y %H:%M:%S})" for t, v in points)
    if not present and spec.treat_missing_data in ("missing", "ignore"):
        state: AlarmState = (
            "INSUFFICIENT_DATA" if spec.treat_missing_data == "missing" else previous
        )
        return Evaluation(state, f"no datapoints in the last {spec.evaluation_periods} periods", ())
    state = "ALARM" if breaching >= spec.datapoints_to_alarm else "OK"
    verb = "was" if breaching == 1 else "were"
    reason = (
        f"Threshold Crossed: {breaching} out of the last {spec.evaluation_periods} datapoints "
        f"[{shown}] {verb} {_OPERATORS[spec.comparison]} the threshold ({spec.threshold:g}) "
        f"(minimum {spec.datapoints_to_alarm} datapoints for OK -> ALARM transition)."
    )
    return Evaluation(state, reason, points)


def state_change_event(
    spec: AlarmSpec,
    topology: Topology,
    evaluation: Evaluation,
    previous: AlarmState,
    previous_reason: str,
    now: datetime,
) -> dict[str, Any]:
    """The event CloudWatch sends EventBridge for a single-metric alarm changing state
    (events/alarm_state_change.eventbridge.json is one)."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"
    arn = f"arn:aws:cloudwatch:{topology.region}:{topology.account}:alarm:{spec.name}"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": topology.account,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": topology.region,
        "resources": [arn],
        "detail": {
            "alarmName": spec.name,
            "state": {
                "value": evaluation.state,
                "reason": evaluation.reason,
                "timestamp": f"{stamp}+0000",
            },
            "previousState": {"value": previous, "reason": previous_reason},
            "configuration": {
                "description": spec.description,
                "metrics": [
                    {
                        "id": "m1",
                        "metricStat": {
                            "metric": {
                                "dimensions": spec.dimensions,
                                "name": spec.metric,
                                "namespace": spec.namespace,
                            },
                            "period": spec.period_seconds,
                            "stat": spec.statistic,
                        },
                        "returnData": True,
                    }
                ],
            },
        },
    }


def matches_alarm_rule(event: dict[str, Any], topology: Topology) -> bool:
    """Whether the retraining rule (``infra.alarms.alarm_event_pattern``) matches the event."""
    pattern = alarm_event_pattern(topology)
    detail = event.get("detail") or {}
    prefix = pattern["detail"]["alarmName"][0]["prefix"]
    return (
        event.get("source") in pattern["source"]
        and event.get("detail-type") in pattern["detail-type"]
        and str(detail.get("alarmName", "")).startswith(prefix)
        and (detail.get("state") or {}).get("value") in pattern["detail"]["state"]["value"]
    )


class MetricSink:
    """EMF documents in; ``PutMetricData`` to the endpoint (so that ``aws cloudwatch
    get-metric-statistics`` shows them) and an in-memory copy that the evaluator aggregates.
    The copy, not moto, is what alarms read: moto's GetMetricStatistics groups datapoints into
    periods counted from the first datapoint, CloudWatch's are aligned on the clock.

    Each metric of a document is kept, and put, as ONE statistic set (sample count, sum,
    minimum, maximum), however many values it holds: a serving document carries up to 100
    latencies a minute, and kept one by one they grew the stack by about a megabyte every
    100 s of steady traffic (the soak, docs/reliability.md §9). The statistics alarms use
    (Maximum, Minimum, Sum, Average) come out of statistic sets exactly. Sets older than
    ``retention_seconds`` are dropped from the copy and from the endpoint's backend, so memory
    is bounded by the series and the retention, not by the traffic."""

    def __init__(
        self,
        retention_seconds: float = 2 * 24 * 3600,
        clock: Callable[[], float] = time.time,  # what "now" is for retention (tests fix it)
    ) -> None:
        self._queue: queue.Queue[str] = queue.Queue(maxsize=MAX_QUEUED)
        self._lock = threading.Lock()
        self._sets: dict[_SeriesKey, list[_StatisticSet]] = {}
        self._retention = retention_seconds
        self._clock = clock
        self.dropped = 0

    def offer(self, line: str) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def drain(self, cloudwatch: Any | None) -> int:
        """Take in every queued document; returns how many values they held."""
        data: dict[str, list[dict[str, Any]]] = {}
        count = 0
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            for namespace, datum in emf_statistic_sets(line):
                data.setdefault(namespace, []).append(datum)
                count += int(datum["StatisticValues"]["SampleCount"])
        horizon = self._clock() - self._retention
        with self._lock:
            for namespace, items in data.items():
                for datum in items:
                    key = _series(namespace, datum["MetricName"], datum["Dimensions"])
                    stats = datum["StatisticValues"]
                    self._sets.setdefault(key, []).append(
                        (
                            datum["Timestamp"].timestamp(),
                            stats["SampleCount"],
                            stats["Sum"],
                            stats["Minimum"],
                            stats["Maximum"],
                        )
                    )
            for key, sets in self._sets.items():
                self._sets[key] = [s for s in sets if s[0] >= horizon]
        if cloudwatch is not None:
            for namespace, items in data.items():
                for start in range(0, len(items), _PUT_BATCH):
                    cloudwatch.put_metric_data(
                        Namespace=namespace, MetricData=items[start : start + _PUT_BATCH]
                    )
        return count

    def statistics(self, spec: AlarmSpec, since: float) -> dict[int, float]:
        """The alarm's statistic per clock-aligned period, for periods starting at ``since``
        or later; periods without datapoints are absent."""
        key = _series(
            spec.namespace,
            spec.metric,
            [{"Name": k, "Value": v} for k, v in spec.dimensions.items()],
        )
        period = spec.period_seconds
        grouped: dict[int, list[_StatisticSet]] = {}
        with self._lock:
            for entry in self._sets.get(key, []):
                start = math.floor(entry[0]) // period * period
                if start >= since:
                    grouped.setdefault(start, []).append(entry)
        return {start: _STATISTICS[spec.statistic](sets) for start, sets in grouped.items()}

    def prune(self, cloudwatch_backend: Any) -> int:
        """Drop the datapoints older than the retention from a moto CloudWatch backend (its
        list is in arrival order, so the old ones lead); returns how many went. ``del`` of a
        leading slice is one operation under the GIL, safe beside the server's appends."""
        horizon = datetime.fromtimestamp(self._clock() - self._retention, UTC)
        return _prune(cloudwatch_backend.metric_data, horizon)


def _prune(data: list[Any], horizon: datetime) -> int:
    old = 0
    for datum in data:
        stamp = datum.timestamp
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        if stamp >= horizon:
            break
        old += 1
    del data[:old]
    return old


# (timestamp, sample count, sum, minimum, maximum)
_StatisticSet = tuple[float, float, float, float, float]
_SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]
_STATISTICS: dict[str, Callable[[list[_StatisticSet]], float]] = {
    "Maximum": lambda sets: max(s[4] for s in sets),
    "Minimum": lambda sets: min(s[3] for s in sets),
    "Sum": lambda sets: sum(s[2] for s in sets),
    "Average": lambda sets: sum(s[2] for s in sets) / sum(s[1] for s in sets),
}


def _series(namespace: str, metric: str, dimensions: list[dict[str, str]]) -> _SeriesKey:
    return namespace, metric, tuple(sorted((d["Name"], d["Value"]) for d in dimensions))


def emf_statistic_sets(line: str) -> list[tuple[str, dict[str, Any]]]:
    """One ``(namespace, MetricDatum)`` per metric and dimension set of an EMF document, its
    values as ``StatisticValues``; anything that is not an EMF document yields nothing."""
    sets: dict[tuple[str, _SeriesKey, str], dict[str, Any]] = {}
    for namespace, datum in emf_datapoints(line):
        key = (
            namespace,
            _series(namespace, datum["MetricName"], datum["Dimensions"]),
            datum["Unit"],
        )
        value = datum["Value"]
        found = sets.get(key)
        if found is None:
            sets[key] = {
                "MetricName": datum["MetricName"],
                "Dimensions": datum["Dimensions"],
                "Timestamp": datum["Timestamp"],
                "Unit": datum["Unit"],
                "StatisticValues": {
                    "SampleCount": 1.0,
                    "Sum": value,
                    "Minimum": value,
                    "Maximum": value,
                },
            }
        else:
            stats = found["StatisticValues"]
            stats["SampleCount"] += 1.0
            stats["Sum"] += value
            stats["Minimum"] = min(stats["Minimum"], value)
            stats["Maximum"] = max(stats["Maximum"], value)
    return [(namespace, datum) for (namespace, _, _), datum in sets.items()]


def emf_datapoints(line: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """The ``(namespace, MetricDatum)`` pairs one EMF document stands for; anything that is not
    an EMF document yields nothing."""
    try:
        document = json.loads(line)
        meta = document["_aws"]
        timestamp = datetime.fromtimestamp(meta["Timestamp"] / 1000, UTC)
        directives = meta["CloudWatchMetrics"]
    except (ValueError, KeyError, TypeError):
        return
    for directive in directives:
        for dimension_set in directive.get("Dimensions") or [[]]:
            dimensions = [
                {"Name": name, "Value": str(document[name])}
                for name in dimension_set
                if name in document
            ]
            for metric in directive.get("Metrics", []):
                name = metric.get("Name")
                value = document.get(name)
                values = value if isinstance(value, list) else [value]
                for item in values:
                    if isinstance(item, bool) or not isinstance(item, int | float):
                        continue
                    if not math.isfinite(item):
                        continue
                    yield (
                        directive.get("Namespace", "Sluice"),
                        {
                            "MetricName": name,
                            "Dimensions": dimensions,
                            "Timestamp": timestamp,
                            "Value": float(item),
                            "Unit": metric.get("Unit", "None"),
                        },
                    )


class AlarmEvaluator:
    """The retraining alarms the endpoint holds, evaluated on demand, as CloudWatch evaluates
    whatever alarms exist: an alarm put at promote is picked up at the next tick, a deleted one
    is dropped, an updated one is evaluated under its new definition."""

    def __init__(self, topology: Topology, cloudwatch: Callable[[], Any], sink: MetricSink) -> None:
        self._topology = topology
        self._cloudwatch = cloudwatch
        self._sink = sink
        self._specs: dict[str, AlarmSpec] = {}
        self.states: dict[str, tuple[AlarmState, str]] = {}

    def specs(self) -> list[AlarmSpec]:
        return list(self._specs.values())

    def tick(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Evaluate every alarm once; the state-change events, in order."""
        now = now or datetime.now(UTC)
        client = self._cloudwatch()
        found = {
            spec.name: spec
            for spec in (
                spec_from_alarm(alarm)
                for alarm in described_alarms(client, alarm_prefix(self._topology))
            )
            if spec is not None
        }
        for name in set(self._specs) - set(found):
            del self._specs[name]
            self.states.pop(name, None)
        for name, spec in sorted(found.items()):
            if name not in self._specs:
                self.states[name] = ("INSUFFICIENT_DATA", INITIAL_REASON)
            self._specs[name] = spec
        events = []
        for spec in self._specs.values():
            previous, previous_reason = self.states[spec.name]
            evaluation = evaluate(spec, self._values(spec, now), now, previous)
            if evaluation.state == previous:
                continue
            self.states[spec.name] = (evaluation.state, evaluation.reason)
            client.set_alarm_state(
                AlarmName=spec.name,
                StateValue=evaluation.state,
                StateReason=evaluation.reason[:1023],
            )
            events.append(
                state_change_event(spec, self._topology, evaluation, previous, previous_reason, now)
            )
        return events

    def _values(self, spec: AlarmSpec, now: datetime) -> dict[int, float]:
        period = spec.period_seconds
        current = math.floor(now.timestamp()) // period * period
        return self._sink.statistics(spec, since=current - (spec.evaluation_periods - 1) * period)


def described_alarms(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Every metric alarm whose name starts with ``prefix`` (``DescribeAlarms``, all pages)."""
    alarms: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = client.describe_alarms(
            AlarmNamePrefix=prefix,
            AlarmTypes=["MetricAlarm"],
            **({"NextToken": token} if token else {}),
        )
        alarms += page.get("MetricAlarms", [])
        token = page.get("NextToken")
        if not token:
            return alarms


def spec_from_alarm(alarm: dict[str, Any]) -> AlarmSpec | None:
    """The definition of one alarm as ``DescribeAlarms`` returns it; ``None`` for an alarm that
    is not a retraining alarm's shape (no ``dataset`` dimension, an unknown kind): CloudWatch
    would evaluate it, but the retrain function could not act on it."""
    dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions") or []}
    kind = str(alarm.get("AlarmName", "")).rsplit(".", 1)[-1]
    if set(dimensions) != {DIMENSION} or kind not in KINDS or "MetricName" not in alarm:
        return None
    return AlarmSpec(
        kind=kind,  # checked against KINDS above
        dataset=dimensions[DIMENSION],
        name=alarm["AlarmName"],
        description=alarm.get("AlarmDescription", ""),
        metric=alarm["MetricName"],
        statistic=alarm["Statistic"],
        period_seconds=int(alarm["Period"]),
        threshold=float(alarm["Threshold"]),
        comparison=alarm["ComparisonOperator"],
        evaluation_periods=int(alarm["EvaluationPeriods"]),
        datapoints_to_alarm=int(alarm.get("DatapointsToAlarm") or alarm["EvaluationPeriods"]),
        treat_missing_data=alarm.get("TreatMissingData", "missing"),
        namespace=alarm["Namespace"],
    )
