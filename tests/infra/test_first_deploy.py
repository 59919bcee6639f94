"""Issue 19's deploy defects, each read from the synthesized template as CloudFormation and AWS
would read it: what would break a first ``cdk deploy`` into a fresh account, keep it from being
retried or updated, or leave it silently weaker than the local stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from functions.shared.layout import CHECKPOINTS_PREFIX, checkpoint_prefix
from tests.infra.conftest import OPS_EMAIL, Synthesized


def _alarms(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        logical: alarm["Properties"]
        for logical, alarm in synthesized.resources("AWS::CloudWatch::Alarm").items()
    }


def _ops_topic(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    [(logical, topic)] = [
        (logical, t["Properties"])
        for logical, t in synthesized.resources("AWS::SNS::Topic").items()
        if t["Properties"]["TopicName"] == "sluice-ops-dev"
    ]
    return logical, topic


def _function(synthesized: Synthesized, name: str) -> tuple[str, dict[str, Any]]:
    [(logical, function)] = [
        (logical, f["Properties"])
        for logical, f in synthesized.resources("AWS::Lambda::Function").items()
        if f["Properties"].get("FunctionName") == f"sluice-{name}-dev"
    ]
    return logical, function


# -- 1. reserved concurrency --------------------------------------------------------------------


def test_no_function_reserves_concurrency_unless_the_stage_asks(
    synthesized: Synthesized, synthesized_defaults: Synthesized
) -> None:
    # A new account's quota is 10 and Lambda keeps 10 unreserved: any reservation fails it
    for function in synthesized_defaults.resources("AWS::Lambda::Function").values():
        assert "ReservedConcurrentExecutions" not in function["Properties"]
    # -c reserved_concurrency='{"retrain": 1}' reserves exactly that
    reserved = {
        f["Properties"]["FunctionName"]: f["Properties"]["ReservedConcurrentExecutions"]
        for f in synthesized.resources("AWS::Lambda::Function").values()
        if "ReservedConcurrentExecutions" in f["Properties"]
    }
    assert reserved == {"sluice-retrain-dev": 1}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"inference": 2}', "'inference' is not a function that takes a reservation"),
        ('{"preprocess": 0}', "preprocess=0 must be a whole number ≥ 1"),
        ("[1]", "must be an object of function → count"),
        ("{not json", "is not JSON"),
    ],
)
def test_a_bad_reservation_is_refused_with_the_function_named(value: str, message: str) -> None:
    from infra.aws.app import reserved_concurrency

    with pytest.raises(ValueError, match="context reserved_concurrency") as refused:
        reserved_concurrency(value)
    assert message in str(refused.value)


# -- 2. a failed first deploy can be retried ----------------------------------------------------


def test_stateful_resources_are_kept_except_when_their_own_create_rolls_back(
    synthesized: Synthesized,
) -> None:
    stateful = {
        **synthesized.resources("AWS::S3::Bucket"),
        **synthesized.resources("AWS::DynamoDB::Table"),
    }
    assert len(stateful) == 4  # raw, artifacts, access logs, registry
    for logical, resource in stateful.items():
        assert resource["DeletionPolicy"] == "RetainExceptOnCreate", logical
        assert resource["UpdateReplacePolicy"] == "Retain", logical
    # deletion protection would make the rollback's delete of a just-created table fail
    table = synthesized.one("AWS::DynamoDB::Table")
    assert not table.get("DeletionProtectionEnabled", False)
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


# -- 3. a layer change reaches the live alias ---------------------------------------------------


def _version_logical_id(tmp_path: Path, layer_content: str) -> str:
    """A function with one layer, through the app's feature flags: its currentVersion's id."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_lambda as lambda_

    from infra.aws.app import FEATURE_FLAGS

    layer_dir = tmp_path / "layer" / "python"
    layer_dir.mkdir(parents=True, exist_ok=True)
    (layer_dir / "dependency.py").write_text(layer_content)
    app = App(outdir=str(tmp_path / "out"), context=dict(FEATURE_FLAGS))
    stack = Stack(app, "Probe")
    function = lambda_.Function(
        stack,
        "Fn",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return event\n"),
        layers=[
            lambda_.LayerVersion(
                stack, "Layer", code=lambda_.Code.from_asset(str(layer_dir.parent))
            )
        ],
    )
    version = function.current_version
    return str(stack.resolve(version.node.default_child.logical_id))  # type: ignore[union-attr]


def test_a_dependency_layer_change_publishes_a_new_function_version(tmp_path: Path) -> None:
    # the live alias points at currentVersion: the same id would keep serving the old layer
    before = _version_logical_id(tmp_path / "a", "VERSION = '1.20.0'\n")
    after = _version_logical_id(tmp_path / "b", "VERSION = '1.20.1'\n")
    assert before != after


# -- 4. the training image's regions ------------------------------------------------------------


def test_ap_northeast_3_pulls_from_the_account_the_sagemaker_sdk_names(
    synthesized: Synthesized,
) -> None:
    [mapping] = synthesized.template["Mappings"].values()
    assert mapping["ap-northeast-3"] == {"account": "364406365360"}
    assert mapping["us-east-1"] == {"account": "763104351884"}


def test_a_region_without_a_training_image_fails_the_synth_naming_it() -> None:
    from aws_cdk import App, Environment, Stack

    from infra.aws.images import DLC_REGIONS, NoTrainingImageError, TrainingImage

    assert len(set(DLC_REGIONS)) == len(DLC_REGIONS)  # the message lists each region once

    stack = Stack(App(), "Probe", env=Environment(account="111111111111", region="xx-nowhere-1"))
    with pytest.raises(NoTrainingImageError, match="region xx-nowhere-1: no pytorch-training"):
        TrainingImage(stack, "Image")
    known = Stack(App(), "Known", env=Environment(account="111111111111", region="eu-west-1"))
    assert TrainingImage(known, "Image").uri  # a listed region synthesizes


def test_the_committed_image_accounts_are_what_the_pinned_sagemaker_sdk_says() -> None:
    from infra.aws import gen_images
    from infra.aws.image_accounts import DLC_ACCOUNTS, SDK_VERSION

    sdk_version, _ = gen_images.sdk_table()
    root = Path(__file__).resolve().parents[2]
    constraints = (root / "constraints.txt").read_text().split()
    pins = dict(line.partition("==")[::2] for line in constraints)
    assert sdk_version == SDK_VERSION == pins[gen_images.SDK_DISTRIBUTION]
    # the module is byte for byte what `make images` writes from the installed SDK
    assert gen_images.MODULE.read_text() == gen_images.generated()
    assert gen_images.main(["--check"]) == 0
    assert DLC_ACCOUNTS["ap-northeast-3"] == "364406365360"
    assert {"us-east-1", "ap-east-2", "mx-central-1", "cn-north-1"} <= DLC_ACCOUNTS.keys()


def test_the_generator_refuses_an_sdk_table_without_the_image() -> None:
    from infra.aws.gen_images import SdkTableError, accounts

    table = {"training": {"processors": ["gpu"], "versions": {"2.5.1": {}}}}
    with pytest.raises(SdkTableError, match=r"training\.versions\.2\.6\.0: no such entry"):
        accounts(table)
    table["training"]["versions"]["2.6.0"] = {  # type: ignore[index]
        "repository": "pytorch-training",
        "py_versions": ["py311"],
        "registries": {"us-east-1": "763104351884"},
    }
    with pytest.raises(SdkTableError, match="py312 not in"):
        accounts(table)


def test_an_environment_agnostic_template_refuses_a_region_without_an_image(
    synthesized: Synthesized,
) -> None:
    from infra.aws.images import DLC_REGIONS

    [mapping] = synthesized.template["Mappings"].values()
    assert tuple(mapping) == DLC_REGIONS
    # CloudFormation checks Rules before it touches a resource; the message names the fix
    [rule] = [
        r for name, r in synthesized.template.get("Rules", {}).items() if "RegionHasImage" in name
    ]
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Contains": [list(DLC_REGIONS), {"Ref": "AWS::Region"}]}
    assert "no pytorch-training 2.6.0 image" in assertion["AssertDescription"]
    assert "make images" in assertion["AssertDescription"]


# -- 5. every operational alarm notifies someone ------------------------------------------------


def test_the_ops_topic_is_encrypted_with_a_key_cloudwatch_may_use(synthesized: Synthesized) -> None:
    logical, topic = _ops_topic(synthesized)
    key_ref = topic["KmsMasterKeyId"]
    assert "alias/aws/sns" not in json.dumps(key_ref)  # CloudWatch cannot use that key
    key = synthesized.template["Resources"][key_ref["Fn::GetAtt"][0]]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    allowed = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert allowed and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(allowed[0]["Action"])
    publishers = [
        s
        for policy in synthesized.resources("AWS::SNS::TopicPolicy").values()
        if {"Ref": logical} in policy["Properties"]["Topics"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    assert [s["Principal"] for s in publishers] == [{"Service": "cloudwatch.amazonaws.com"}]
    [subscription] = synthesized.resources("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == OPS_EMAIL
    assert subscription["Properties"]["TopicArn"] == {"Ref": logical}


def test_every_operational_alarm_goes_to_the_ops_topic(
    synthesized: Synthesized, synthesized_defaults: Synthesized
) -> None:
    for template in (synthesized, synthesized_defaults):
        logical, _ = _ops_topic(template)
        operational = {
            name: alarm
            for name, alarm in _alarms(template).items()
            if not name.startswith("Retraining")  # those act through EventBridge
        }
        assert len(operational) == 10  # with promote's alarms not put
        for name, alarm in operational.items():
            assert alarm["AlarmActions"] == [{"Ref": logical}], name
    assert not synthesized_defaults.resources("AWS::SNS::Subscription")  # no opsEmail, no mail


def test_a_broken_drift_job_is_dead_lettered_and_alarms(synthesized: Synthesized) -> None:
    drift, _ = _function(synthesized, "drift")
    [invoke] = [
        c["Properties"]
        for c in synthesized.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": drift}
    ]
    assert invoke["MaximumRetryAttempts"] == 2
    queue = invoke["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert queue.startswith("MonitoringDriftDeadLetters")
    [schedule] = [
        r["Properties"]
        for r in synthesized.resources("AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    assert schedule["Targets"][0]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0] == queue
    by_name = {a["AlarmName"]: a for a in _alarms(synthesized).values() if "AlarmName" in a}
    failed = by_name["sluice-drift-failed-dev"]
    assert failed["MetricName"] == "Errors" and failed["Dimensions"][0]["Value"] == {"Ref": drift}
    dead = by_name["sluice-drift-dead-lettered-dev"]
    assert dead["Dimensions"][0]["Value"]["Fn::GetAtt"][0] == queue
    silent = by_name["sluice-drift-silent-dev"]
    assert silent["MetricName"] == "Invocations" and silent["TreatMissingData"] == "breaching"
    assert silent["ComparisonOperator"] == "LessThanThreshold" and silent["Period"] == 3600


# -- 7. batch files over 500 MB -----------------------------------------------------------------


def test_the_batch_function_streams_so_its_tmp_is_the_default_and_its_time_bounds_the_file(
    synthesized: Synthesized,
) -> None:
    # issue 20 part 5: the file is streamed from S3, never downloaded, so no /tmp is paid for;
    # the cap is what the function scores in SCORING_SECONDS of its timeout
    from functions.batch.logic import SCORING_SECONDS

    _, batch = _function(synthesized, "batch")
    assert batch.get("EphemeralStorage", {"Size": 512})["Size"] == 512
    assert batch["Timeout"] == 900 and batch["Timeout"] - 300 >= SCORING_SECONDS
    # and a part's upload left open by a run killed mid-file is aborted by the bucket
    [artifacts] = [
        b for b in synthesized.resources("AWS::S3::Bucket").values()
        if "artifacts" in json.dumps(b["Properties"].get("BucketName", ""))
    ]  # fmt: skip
    rules = artifacts["Properties"]["LifecycleConfiguration"]["Rules"]
    [abort] = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert abort["Status"] == "Enabled" and "Prefix" not in abort


# -- 9. smaller findings ------------------------------------------------------------------------


def test_lifecycle_prefixes_are_literal_and_expire_the_checkpoints(
    synthesized: Synthesized,
) -> None:
    rules = [
        rule
        for bucket in synthesized.resources("AWS::S3::Bucket").values()
        for rule in bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    ]
    for rule in rules:  # S3 has no wildcards in a lifecycle prefix
        assert "*" not in rule.get("Prefix", ""), rule
    [checkpoints] = [r for r in rules if r.get("Prefix") == CHECKPOINTS_PREFIX]
    assert checkpoints["ExpirationInDays"] == 14
    assert checkpoint_prefix("churn", "run-1") == f"{CHECKPOINTS_PREFIX}churn/run-1/"


def test_the_state_machine_may_list_training_job_tags_as_sync_needs(
    synthesized: Synthesized,
) -> None:
    actions = {
        action
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if policy["Properties"]["Roles"][0]["Ref"].startswith("PipelineStateMachineRole")
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert {"sagemaker:CreateTrainingJob", "sagemaker:ListTags"} <= actions


def test_account_wide_settings_live_in_their_own_retained_stack(synthesized: Synthesized) -> None:
    # AWS::ApiGateway::Account is one per account and region: a stage owning it made the last
    # deployed stage's role the account's, and destroying that stage deleted it
    assert not synthesized.resources("AWS::ApiGateway::Account")
    for role in synthesized.resources("AWS::IAM::Role").values():
        principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        assert principal != {"Service": "apigateway.amazonaws.com"}
    account = json.loads((synthesized.outdir / "sluice-account.template.json").read_text())
    resources = account["Resources"]
    [gateway] = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Account"]
    role = resources[gateway["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]]
    assert gateway["DeletionPolicy"] == role["DeletionPolicy"] == "Retain"
    # the SageMaker training log group (shared by every job in the region) gets a retention
    [retention] = [r for r in resources.values() if r["Type"] == "Custom::LogRetention"]
    assert retention["Properties"]["LogGroupName"] == "/aws/sagemaker/TrainingJobs"
    assert retention["Properties"]["RetentionInDays"] == 90
    # and `cdk deploy sluice-dev` deploys it first
    manifest = json.loads((synthesized.outdir / "manifest.json").read_text())
    assert "sluice-account" in manifest["artifacts"]["sluice-dev"]["dependencies"]


def test_bucket_names_carry_the_region_so_a_second_region_gets_its_own(
    synthesized: Synthesized,
) -> None:
    from infra.aws.app import STAGE
    from infra.aws.images import DLC_REGIONS
    from infra.topology import Topology

    named = [
        b["Properties"]["BucketName"]
        for b in synthesized.resources("AWS::S3::Bucket").values()
        if "BucketName" in b["Properties"]
    ]
    assert len(named) == 2
    for name in named:  # bucket names are global: one account's two regions would collide
        assert {"Ref": "AWS::Region"} in name["Fn::Join"][1], name
        assert {"Ref": "AWS::AccountId"} in name["Fn::Join"][1], name
    # the longest stage the app accepts, in the longest region with a training image
    longest_stage = "s" * 16
    assert STAGE.match(longest_stage) and not STAGE.match(longest_stage + "s")
    region = max(DLC_REGIONS, key=len)
    longest = Topology(stage=longest_stage, account="111111111111", region=region)
    for bucket in (longest.raw_bucket, longest.artifacts_bucket):
        assert len(bucket) <= 63, bucket
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket), bucket
    other = Topology(stage="dev", account="111111111111", region="eu-west-1")
    here = Topology(stage="dev", account="111111111111", region="us-east-1")
    assert other.raw_bucket != here.raw_bucket
    assert other.artifacts_bucket != here.artifacts_bucket


def test_the_deployed_pipeline_trains_on_demand_when_spot_quota_refuses(
    synthesized: Synthesized,
) -> None:
    # a new account's GPU spot training quota is 0: CreateTrainingJob is refused at once
    machine = synthesized.one("AWS::StepFunctions::StateMachine", "Pipeline")
    key = machine["DefinitionS3Location"]["Key"]
    states = json.loads((synthesized.outdir / f"asset.{key}").read_text())["States"]
    first, *rest = states["Train"]["Catch"]
    assert first == {
        "ErrorEquals": ["SageMaker.ResourceLimitExceededException"],
        "ResultPath": "$.spot_fallback",
        "Next": "SpotRefused",
    }
    assert rest[-1]["ErrorEquals"] == ["States.ALL"]  # everything else is still recorded
    [spot_only] = states["SpotRefused"]["Choices"]
    assert spot_only == {"Variable": "$.spot", "BooleanEquals": True, "Next": "OnDemandLimits"}
    assert states["SpotRefused"]["Default"] == "QuotaRefused"  # on demand refused: no loop
    assert states["OnDemand"] == {
        "Type": "Pass",
        "Result": False,
        "ResultPath": "$.spot",
        "Next": "Train",
    }
    assert "MaxWaitTimeInSeconds" not in json.dumps(states["OnDemandLimits"]["Parameters"])
    assert states["QuotaRefused"]["Next"] == "RecordFailure"


def test_captured_requests_and_feedback_expire_by_their_tag(synthesized: Synthesized) -> None:
    from functions.shared.layout import TELEMETRY_TAGS
    from infra.aws.storage import TELEMETRY_RETENTION_DAYS

    rules = [
        rule
        for bucket in synthesized.resources("AWS::S3::Bucket").values()
        for rule in bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    ]
    # their keys are under each dataset's prefix: one rule matches the tag the writes carry
    [telemetry] = [r for r in rules if "TagFilters" in r]
    assert telemetry["TagFilters"] == [{"Key": k, "Value": v} for k, v in TELEMETRY_TAGS.items()]
    assert telemetry["ExpirationInDays"] == TELEMETRY_RETENTION_DAYS == 90
    assert telemetry["Status"] == "Enabled" and "Prefix" not in telemetry
    # and the inference role may tag what it puts there (S3 authorizes a tagged put as both)
    tagging = [
        json.dumps(statement["Resource"])
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if policy["Properties"]["Roles"][0]["Ref"].startswith("InferenceRole")
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "s3:PutObjectTagging" in statement["Action"]
    ]
    assert len(tagging) == 2
    assert any("/*/capture/*" in r for r in tagging) and any("/*/feedback/*" in r for r in tagging)
