"""The local stack's CloudWatch: EMF documents to datapoints, and alarm evaluation with
CloudWatch's rules over the alarms the endpoint holds (functions/shared/alarms.py's, put at
promote)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.retrain.logic import parse_alarm
from functions.shared.alarms import CloudWatchRetrainAlarms
from functions.shared.observability import emf_document, emit_emf, route_emf
from infra.alarms import AlarmSpec, alarm_specs
from infra.local.alarms import (
    AlarmEvaluator,
    MetricSink,
    emf_datapoints,
    evaluate,
    matches_alarm_rule,
    state_change_event,
)
from infra.topology import Topology

TOPOLOGY = Topology(stage="local")
HOUR = 3600
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)  # within the period starting 09:00


def drift_spec(**changes: Any) -> AlarmSpec:
    spec = alarm_specs(TOPOLOGY, "churn")[0]
    assert spec.kind == "drift"
    return replace(spec, **changes)


def hours_back(*values: float | None) -> dict[int, float]:
    """Values for the current period and the ones before it, newest first (None: missing)."""
    current = int(NOW.timestamp()) // HOUR * HOUR
    return {current - i * HOUR: v for i, v in enumerate(values) if v is not None}


@pytest.mark.parametrize(
    ("values", "state", "breaching"),
    [
        ((0.3, 0.4, 0.1), "ALARM", 2),  # 2 of 3 at or over 0.25
        ((0.25, None, 0.25), "ALARM", 2),  # the threshold itself breaches (>=)
        ((0.3, 0.1, 0.1), "OK", 1),
        ((0.3, None, None), "OK", 1),  # missing is not breaching
        ((None, None, None), "OK", 0),  # no traffic, no evidence: OK, never ALARM
        ((0.1, 0.1, 0.1, 0.9, 0.9), "OK", 0),  # only the 3 most recent periods count
    ],
)
def test_m_of_n_with_missing_data_not_breaching(
    values: tuple[float | None, ...], state: str, breaching: int
) -> None:
    evaluation = evaluate(drift_spec(), hours_back(*values), NOW)
    assert evaluation.state == state
    assert evaluation.reason.startswith(f"Threshold Crossed: {breaching} out of the last 3")


def test_other_missing_data_treatments() -> None:
    nothing: dict[int, float] = {}
    assert evaluate(drift_spec(treat_missing_data="breaching"), nothing, NOW).state == "ALARM"
    assert evaluate(drift_spec(treat_missing_data="missing"), nothing, NOW).state == (
        "INSUFFICIENT_DATA"
    )
    assert evaluate(drift_spec(treat_missing_data="ignore"), nothing, NOW, "ALARM").state == (
        "ALARM"
    )


def test_a_state_change_event_is_shaped_as_cloudwatch_sends_it_and_names_the_dataset() -> None:
    spec = drift_spec()
    evaluation = evaluate(spec, hours_back(0.4, 0.3), NOW)
    event = state_change_event(spec, TOPOLOGY, evaluation, "OK", "earlier", NOW)
    assert matches_alarm_rule(event, TOPOLOGY)
    trigger = parse_alarm(event)  # what the retrain function reads from it
    assert trigger is not None
    assert (trigger.dataset, trigger.source, trigger.at) == ("churn", spec.name, NOW)
    assert trigger.reason == evaluation.reason
    ok = state_change_event(spec, TOPOLOGY, evaluate(spec, {}, NOW), "ALARM", "", NOW)
    assert not matches_alarm_rule(ok, TOPOLOGY)
    other = state_change_event(
        replace(spec, name="someone-elses"), TOPOLOGY, evaluation, "OK", "", NOW
    )
    assert not matches_alarm_rule(other, TOPOLOGY)


def test_emf_documents_become_datapoints_with_their_dimensions() -> None:
    stamp = int(NOW.timestamp() * 1000)
    document = emf_document(
        "Sluice",
        stamp,
        ["dataset"],
        [{"Name": "DatasetDriftPSI", "Unit": "None"}, {"Name": "Latency", "Unit": "Milliseconds"}],
        {"dataset": "churn", "DatasetDriftPSI": 0.4, "Latency": [1.0, 2.5], "note": "text"},
    )
    points = list(emf_datapoints(json.dumps(document)))
    assert [(ns, d["MetricName"], d["Value"]) for ns, d in points] == [
        ("Sluice", "DatasetDriftPSI", 0.4),
        ("Sluice", "Latency", 1.0),
        ("Sluice", "Latency", 2.5),
    ]
    assert points[0][1]["Dimensions"] == [{"Name": "dataset", "Value": "churn"}]
    assert points[0][1]["Timestamp"] == NOW
    assert list(emf_datapoints("a log line, not EMF")) == []


def test_the_sink_keeps_datapoints_for_its_retention_only() -> None:
    clock = [NOW.timestamp()]
    sink = MetricSink(retention_seconds=2 * HOUR, clock=lambda: clock[0])
    spec = next(s for s in alarm_specs(TOPOLOGY, "churn") if s.metric == "DatasetDriftPSI")
    metric = [{"Name": "DatasetDriftPSI", "Unit": "None"}]
    for hours_ago, value in ((3, 0.9), (1, 0.2)):
        stamp = int((NOW - timedelta(hours=hours_ago)).timestamp() * 1000)
        fields = {"dataset": "churn", "DatasetDriftPSI": value}
        sink.offer(json.dumps(emf_document("Sluice", stamp, ["dataset"], metric, fields)))
    assert sink.drain(None) == 2
    day_before = NOW.timestamp() - 24 * HOUR
    assert list(sink.statistics(spec, since=day_before).values()) == [0.2]  # 3 h ago: dropped
    clock[0] += 2 * HOUR
    sink.drain(None)  # retention is applied as documents are taken in
    assert sink.statistics(spec, since=day_before) == {}


class RecordingCloudWatch:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: self.calls.append((name, kwargs))


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=TOPOLOGY.region)


def _state(cloudwatch: Any, name: str) -> str:
    [alarm] = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return str(alarm["StateValue"])


def test_the_evaluator_fires_once_when_drift_rises_and_clears_when_it_falls(
    cloudwatch: Any,
) -> None:
    # the sink's retention follows the test's clock: at the wall clock NOW is long past
    sink = MetricSink(clock=lambda: (NOW + timedelta(hours=2)).timestamp())
    evaluator = AlarmEvaluator(TOPOLOGY, lambda: cloudwatch, sink)
    CloudWatchRetrainAlarms(cloudwatch, TOPOLOGY.stage).ensure("churn")  # as promote puts them

    def drift(value: float, at: datetime) -> None:
        stamp = int(at.timestamp() * 1000)
        fields = {"dataset": "churn", "DatasetDriftPSI": value}
        metric = [{"Name": "DatasetDriftPSI", "Unit": "None"}]
        sink.offer(json.dumps(emf_document("Sluice", stamp, ["dataset"], metric, fields)))
        sink.drain(cloudwatch)

    assert evaluator.tick(NOW) != []  # INSUFFICIENT_DATA → OK for all three alarms
    drift(0.5, NOW - timedelta(hours=1))
    assert evaluator.tick(NOW) == []  # 1 of 3: still OK
    drift(0.6, NOW)
    events = evaluator.tick(NOW)
    assert [(e["detail"]["alarmName"], e["detail"]["state"]["value"]) for e in events] == [
        ("sluice-local.retrain.churn.drift", "ALARM")
    ]
    assert _state(cloudwatch, "sluice-local.retrain.churn.drift") == "ALARM"
    assert evaluator.tick(NOW + timedelta(minutes=1)) == []  # an alarm fires on the change only
    drift(0.01, NOW + timedelta(hours=1))
    later = evaluator.tick(NOW + timedelta(hours=2))  # now 0.01, missing and 0.6 → 1 of 3
    assert [e["detail"]["state"]["value"] for e in later] == ["OK"]


def test_the_evaluator_watches_the_alarms_the_endpoint_holds_as_they_are_put_and_deleted(
    cloudwatch: Any,
) -> None:
    # Given no retraining alarm: nothing is evaluated, whatever the metrics say
    sink = MetricSink(clock=lambda: NOW.timestamp())
    evaluator = AlarmEvaluator(TOPOLOGY, lambda: cloudwatch, sink)
    assert evaluator.tick(NOW) == [] and evaluator.specs() == []
    # When a never-declared dataset's model goes live (promote puts its alarms, here with the
    # local stack's short drift period), then the next tick evaluates exactly those, as put
    alarms = CloudWatchRetrainAlarms(cloudwatch, TOPOLOGY.stage, monitor_period_seconds=2)
    alarms.ensure("fresh")
    evaluator.tick(NOW)
    assert sorted(evaluator.specs(), key=lambda s: s.name) == sorted(
        alarm_specs(TOPOLOGY, "fresh", monitor_period_seconds=2), key=lambda s: s.name
    )
    # And an alarm that is not a retraining alarm's shape is left alone
    cloudwatch.put_metric_alarm(
        **{
            **alarm_specs(TOPOLOGY, "x")[0].put_metric_alarm(),
            "AlarmName": "sluice-local.retrain.x.y",
        }
    )
    evaluator.tick(NOW)
    assert {s.dataset for s in evaluator.specs()} == {"fresh"}
    # When the dataset is retired (its alarms deleted), then they are no longer evaluated
    alarms.remove("fresh")
    assert evaluator.tick(NOW) == [] and evaluator.specs() == []
    assert evaluator.states == {}


def test_emf_routing_feeds_a_sink_and_can_silence_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[str] = []
    try:
        route_emf(seen.append, echo=False)
        emit_emf('{"_aws": {}}')
        assert seen == ['{"_aws": {}}'] and capsys.readouterr().out == ""
    finally:
        route_emf(None, echo=True)
    emit_emf("{}")
    assert capsys.readouterr().out == "{}\n" and seen == ['{"_aws": {}}']


def test_a_documents_values_are_one_statistic_set_and_alarm_statistics_come_out_exact() -> None:
    # Given two serving documents a minute apart, each with a list of latencies
    sink = MetricSink(clock=lambda: NOW.timestamp())
    metric = [{"Name": "PredictLatency", "Unit": "Milliseconds"}]
    for minute, values in ((0, [1.0, 2.0, 9.0]), (1, [4.0])):
        stamp = int((NOW + timedelta(minutes=minute)).timestamp() * 1000)
        fields = {"dataset": "churn", "PredictLatency": values}
        sink.offer(json.dumps(emf_document("Sluice", stamp, ["dataset"], metric, fields)))
    cloudwatch = RecordingCloudWatch()
    # When taken in
    assert sink.drain(cloudwatch) == 4  # values, as before
    # Then the endpoint got one statistic set per document, not one datum per value
    ((_, put),) = cloudwatch.calls
    assert [d["StatisticValues"] for d in put["MetricData"]] == [
        {"SampleCount": 3.0, "Sum": 12.0, "Minimum": 1.0, "Maximum": 9.0},
        {"SampleCount": 1.0, "Sum": 4.0, "Minimum": 4.0, "Maximum": 4.0},
    ]
    # And every statistic an alarm uses is the one the raw values give, over a 5-minute period
    base = next(s for s in alarm_specs(TOPOLOGY, "churn") if s.kind == "errors")
    since = NOW.timestamp() - HOUR
    expected = {"Maximum": 9.0, "Minimum": 1.0, "Sum": 16.0, "Average": 4.0}
    for statistic, value in expected.items():
        spec = replace(base, metric="PredictLatency", statistic=statistic, period_seconds=300)
        assert list(sink.statistics(spec, since=since).values()) == [value], statistic


def test_the_endpoints_datapoints_older_than_the_retention_are_pruned() -> None:
    from moto.cloudwatch.models import CloudWatchBackend

    # Given moto's backend holding datapoints from 3 hours and from 1 hour ago
    backend = CloudWatchBackend(region_name="eu-west-1", account_id="123456789012")
    for hours_ago in (3, 3, 1):
        stamp = NOW - timedelta(hours=hours_ago)  # moto's request parser gives a datetime
        backend.put_metric_data("Sluice", [{"MetricName": "X", "Value": 1.0, "Timestamp": stamp}])
    sink = MetricSink(retention_seconds=2 * HOUR, clock=lambda: NOW.timestamp())
    # When pruned with a 2-hour retention, only the recent one stays
    assert sink.prune(backend) == 2
    assert len(backend.metric_data) == 1
    assert sink.prune(backend) == 0
