"""Alarms → retraining in the synthesized template (infra/aws/retraining.py): the retrain
function and its environment, each declared dataset's alarms exactly as infra/alarms.py defines
them, the two rules on the shared patterns, and a role that can do what the function does and
nothing else. Plus the ``datasets`` and ``retrain_guard`` context, parsed and refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.retrain.handler import Settings
from infra.alarms import alarm_event_pattern, alarm_prefix, alarm_specs, run_status_event_pattern
from infra.aws.app import datasets, guard_overrides
from infra.aws.registry import GUARD_ACTIONS
from infra.topology import Topology
from tests.infra.conftest import DATASETS, Synthesized, synthesize
from tests.infra.test_first_deploy import _ops_topic
from tests.infra.test_stack import key_pattern

TOPOLOGY = Topology(stage="dev")
RETRAIN = TOPOLOGY.function_name("retrain")


def _logical(synthesized: Synthesized, kind: str, prefix: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in synthesized.resources(kind).items() if k.startswith(prefix)}


def _retrain(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    [(logical, function)] = [
        (k, f["Properties"])
        for k, f in synthesized.resources("AWS::Lambda::Function").items()
        if f["Properties"].get("FunctionName") == RETRAIN
    ]
    return logical, function


def _retrain_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    _, function = _retrain(synthesized)
    role = function["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_the_retrain_function_decides_one_alarm_at_a_time_with_its_environment(
    synthesized: Synthesized,
) -> None:
    _, function = _retrain(synthesized)
    assert function["Handler"] == "functions.retrain.handler.lambda_handler"
    assert function["ReservedConcurrentExecutions"] == 1  # reserved_concurrency in the context
    environment = function["Environment"]["Variables"]
    assert set(environment) == {
        *TOPOLOGY.retrain_environment(),
        "POWERTOOLS_METRICS_NAMESPACE",
        "RETRAIN_MAX_RUNS_PER_DAY",  # retrain_guard in the context
    }
    assert environment["POWERTOOLS_SERVICE_NAME"] == "sluice-retrain"
    assert environment["REGISTRY_TABLE"] == TOPOLOGY.registry_table
    assert environment["RETRAIN_MAX_RUNS_PER_DAY"] == "2"
    assert set(environment) - {"POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_SERVICE_NAME"} <= set(
        Settings.model_fields
    )


def test_each_declared_dataset_has_the_three_alarms_of_infra_alarms(
    synthesized: Synthesized,
) -> None:
    alarms = {
        a["Properties"].get("AlarmName"): a["Properties"]
        for a in synthesized.resources("AWS::CloudWatch::Alarm").values()
    }
    retraining = {name for name in alarms if name and name.startswith(alarm_prefix(TOPOLOGY))}
    specs = [spec for dataset in DATASETS for spec in alarm_specs(TOPOLOGY, dataset)]
    assert (
        retraining
        == {spec.name for spec in specs}
        == {
            "sluice-dev.retrain.churn.drift",
            "sluice-dev.retrain.churn.quality",
            "sluice-dev.retrain.churn.errors",
        }
    )
    for spec in specs:
        # CloudFormation's properties are PutMetricAlarm's parameters, which the local stack uses
        assert alarms[spec.name] == spec.put_metric_alarm()
        props = alarms[spec.name]
        assert props["DatapointsToAlarm"] < props["EvaluationPeriods"]  # M of N
        assert props["TreatMissingData"] == "notBreaching"
        assert props["Dimensions"] == [{"Name": "dataset", "Value": "churn"}]


def test_without_declared_datasets_there_are_no_retraining_alarms_but_the_routing(
    synthesized_defaults: Synthesized,
) -> None:
    names = [
        a["Properties"].get("AlarmName", "")
        for a in synthesized_defaults.resources("AWS::CloudWatch::Alarm").values()
    ]
    assert not [n for n in names if n.startswith(alarm_prefix(TOPOLOGY))]
    assert len(_logical(synthesized_defaults, "AWS::Events::Rule", "Retraining")) == 2
    _, function = _retrain(synthesized_defaults)
    assert not [v for v in function["Environment"]["Variables"] if v.startswith("RETRAIN_")]


def test_the_stacks_own_alarms_are_named_outside_the_retraining_prefix(
    synthesized: Synthesized,
) -> None:
    """CloudFormation names an unnamed alarm ``<stack>-<id>-<random>``: with the stack
    ``sluice-dev``, that would start with the retraining rule's prefix."""
    monitoring = _logical(synthesized, "AWS::CloudWatch::Alarm", "Monitoring")
    # runs failed, two dead-letter queues, refused model files, the drift job's three, alarms
    # promote could not put
    assert len(monitoring) == 8
    for logical, alarm in monitoring.items():
        name = alarm["Properties"]["AlarmName"]
        assert not name.startswith(alarm_prefix(TOPOLOGY)), logical


def _function_statements(synthesized: Synthesized, name: str) -> list[dict[str, Any]]:
    [role] = [
        f["Properties"]["Role"]["Fn::GetAtt"][0]
        for f in synthesized.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("FunctionName") == TOPOLOGY.function_name(name)
    ]
    return [
        statement
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_promote_may_put_the_retraining_alarms_of_any_dataset_and_no_other_alarm(
    synthesized_defaults: Synthesized,
) -> None:
    """No dataset declared (as CI deploys): promote puts each dataset's alarms itself."""
    cloudwatch = [
        s
        for s in _function_statements(synthesized_defaults, "promote")
        if any(a.startswith("cloudwatch:") for a in _actions(s))
    ]
    [statement] = cloudwatch
    assert _actions(statement) == ["cloudwatch:PutMetricAlarm"]
    parts = statement["Resource"]["Fn::Join"][1]
    assert parts[-1] == f":alarm:{alarm_prefix(TOPOLOGY)}*"
    assert ":cloudwatch:" in parts[2]
    for other in ("reject", "evaluate"):
        assert not [
            a
            for s in _function_statements(synthesized_defaults, other)
            for a in _actions(s)
            if a.startswith("cloudwatch:")
        ]


def test_the_retraining_rule_catches_alarms_put_at_promote_for_undeclared_datasets(
    synthesized_defaults: Synthesized,
) -> None:
    [rule] = [
        r["Properties"]
        for r in _logical(synthesized_defaults, "AWS::Events::Rule", "Retraining").values()
        if r["Properties"]["EventPattern"]["detail-type"] == ["CloudWatch Alarm State Change"]
    ]
    [matcher] = rule["EventPattern"]["detail"]["alarmName"]
    assert set(matcher) == {"prefix"}  # one rule for every dataset, declared or not
    for spec in alarm_specs(TOPOLOGY, "never-declared"):
        assert spec.name.startswith(matcher["prefix"])
    assert not "sluice-prod.retrain.never-declared.drift".startswith(matcher["prefix"])


def test_an_alarm_pages_the_ops_topic_when_promote_could_not_put_the_alarms(
    synthesized_defaults: Synthesized,
) -> None:
    [alarm] = [
        a["Properties"]
        for a in synthesized_defaults.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("AlarmName") == f"sluice-retrain-alarms-not-put-{TOPOLOGY.stage}"
    ]
    [query] = alarm["Metrics"]
    assert query["Expression"] == "SELECT SUM(RetrainAlarmsNotPut) FROM Sluice"
    assert query["Period"] == 300
    topic, _ = _ops_topic(synthesized_defaults)
    assert alarm["AlarmActions"] == [{"Ref": topic}]


def test_alarms_and_run_ends_reach_the_retrain_function_with_retries_and_a_dead_letter_queue(
    synthesized: Synthesized,
) -> None:
    function, _ = _retrain(synthesized)
    rules = {
        json.dumps(r["Properties"]["EventPattern"]["detail-type"]): r["Properties"]
        for r in _logical(synthesized, "AWS::Events::Rule", "Retraining").values()
    }
    assert len(rules) == 2
    alarm_rule = rules[json.dumps(["CloudWatch Alarm State Change"])]
    assert alarm_rule["EventPattern"] == alarm_event_pattern(TOPOLOGY)
    run_rule = rules[json.dumps(["Step Functions Execution Status Change"])]
    [machine] = [
        k for k in synthesized.resources("AWS::StepFunctions::StateMachine") if "Pipeline" in k
    ]
    # the deployed state machine's ARN where the local stack has the topology's
    expected = run_status_event_pattern(TOPOLOGY, "<the state machine>")
    expected["detail"]["stateMachineArn"] = [{"Ref": machine}]
    assert run_rule["EventPattern"] == expected

    [queue] = _logical(synthesized, "AWS::SQS::Queue", "RetrainingDeadLetters")
    for rule in rules.values():
        [target] = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [function, "Arn"]}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
    [invoke] = [
        c["Properties"]
        for c in synthesized.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function}
    ]
    assert invoke["MaximumRetryAttempts"] == 2
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [queue, "Arn"]}


def test_the_retrain_role_may_do_what_the_function_does_and_nothing_more(
    synthesized: Synthesized,
) -> None:
    statements = _retrain_statements(synthesized)
    [machine] = [
        k for k in synthesized.resources("AWS::StepFunctions::StateMachine") if "Pipeline" in k
    ]
    [table] = synthesized.resources("AWS::DynamoDB::Table")
    by_service: dict[str, list[dict[str, Any]]] = {}
    for statement in statements:
        for action in _actions(statement):
            by_service.setdefault(action.split(":")[0], []).append(statement)
    assert set(by_service) == {"logs", "xray", "s3", "dynamodb", "states", "sqs"}
    for service in ("s3", "dynamodb", "states"):
        for statement in by_service[service]:
            assert statement["Resource"] != "*", statement

    [dynamodb] = [s for s in statements if _actions(s)[0].startswith("dynamodb:")]
    assert sorted(_actions(dynamodb)) == sorted(GUARD_ACTIONS)
    assert dynamodb["Resource"] == {"Fn::GetAtt": [table, "Arn"]}

    states = {a: s["Resource"] for s in by_service["states"] for a in _actions(s)}
    assert set(states) == {
        "states:StartExecution",
        "states:ListExecutions",
        "states:DescribeExecution",
    }
    assert states["states:StartExecution"] == states["states:ListExecutions"] == {"Ref": machine}
    executions = states["states:DescribeExecution"]["Fn::Join"][1]
    assert executions[-1] == f":execution:{TOPOLOGY.state_machine_name}:*"

    reads = {key_pattern(s["Resource"]) for s in by_service["s3"] if "s3:GetObject" in _actions(s)}
    assert reads == {"/*/contract.json", "/*/versions/*/manifest.json"}
    assert {a for s in by_service["s3"] for a in _actions(s)} == {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",
    }


def _dashboard(synthesized: Synthesized) -> dict[str, Any]:
    """The dashboard body as JSON, each alarm ARN as ``@<logical id>``, other tokens as ``?``."""
    parts = synthesized.one("AWS::CloudWatch::Dashboard")["DashboardBody"]["Fn::Join"][1]
    text = "".join(
        part
        if isinstance(part, str)
        else f"@{part['Fn::GetAtt'][0]}"
        if "Fn::GetAtt" in part and part["Fn::GetAtt"][1] == "Arn"
        else "?"
        for part in parts
    )
    return json.loads(text)  # type: ignore[no-any-return]


def test_the_dashboard_shows_the_decisions_and_the_retraining_alarms(
    synthesized: Synthesized,
) -> None:
    widgets = {
        w["properties"].get("title"): w["properties"] for w in _dashboard(synthesized)["widgets"]
    }
    [decisions] = [w for title, w in widgets.items() if title.startswith("Retraining decisions")]
    searches = [metric[0]["expression"] for metric in decisions["metrics"]]
    assert searches == [
        f"SEARCH('{{Sluice,dataset,service}} MetricName=\"{name}\"', 'Sum', 3600)"
        for name in ("RetrainStarted", "RetrainSkipped", "RetrainStartFailed", "RetrainFinished")
    ]
    [status] = [w for title, w in widgets.items() if title.startswith("Retraining alarms")]
    alarms = _logical(synthesized, "AWS::CloudWatch::Alarm", "Retraining")
    assert len(alarms) == 3
    assert sorted(status["alarms"]) == sorted(f"@{logical}" for logical in alarms)


# -- the context --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("churn", ("churn",)),
        ("churn, housing,", ("churn", "housing")),  # -c datasets=churn,housing
        ('["churn", "housing"]', ("churn", "housing")),  # -c datasets='["churn","housing"]'
        (["churn", "housing", "churn"], ("churn", "housing")),  # cdk.json
    ],
)
def test_datasets_are_a_list_or_a_comma_separated_string(
    value: Any, expected: tuple[str, ...]
) -> None:
    assert datasets(value) == expected


@pytest.mark.parametrize("value", ["churn,../raw", ["churn", "a b"], '["churn",', {"churn": 1}])
def test_a_bad_datasets_value_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="context datasets"):
        datasets(value)


def test_a_bad_dataset_name_fails_the_synth_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'churn/data' is not a dataset name"):
        synthesize(tmp_path, stage="dev", datasets="housing,churn/data")


def test_guard_limits_become_the_retrain_functions_environment() -> None:
    assert guard_overrides(None) == {}
    overrides = guard_overrides('{"debounce_seconds": 7200, "min_new_fraction": 0.2}')
    assert overrides == {"RETRAIN_DEBOUNCE_SECONDS": "7200", "RETRAIN_MIN_NEW_FRACTION": "0.2"}
    every = guard_overrides(
        {
            "debounce_seconds": 60,
            "max_runs_per_day": 1,
            "min_new_rows": 10,
            "min_new_fraction": 0.5,
            "in_flight_timeout_seconds": 600,
        }
    )
    settings = Settings.model_validate(
        {"RAW_BUCKET": "r", "ARTIFACTS_BUCKET": "a", "REGISTRY_TABLE": "t"}
        | {"STATE_MACHINE_ARN": "arn"}
        | every
    )
    assert settings.policy().model_dump() == {
        "debounce_seconds": 60,
        "max_runs_per_day": 1,
        "min_new_rows": 10,
        "min_new_fraction": 0.5,
        "in_flight_timeout_seconds": 600,
    }


@pytest.mark.parametrize(
    "value",
    ['{"max_runs_per_day": 0}', {"retries": 3}, {"min_new_rows": None}, "[1]", "{nope"],
)
def test_a_bad_guard_limit_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="context retrain_guard"):
        guard_overrides(value)
