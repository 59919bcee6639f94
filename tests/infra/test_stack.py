"""The synthesized template, asserted per capability, plus cdk-nag and cfn-lint.

Each test names the property a deployment relies on, so a regression (a wildcard action, an
unencrypted or public bucket, a missing gate state, an API without auth) fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.local.pipeline import BATCH_DEFINITION, BUILDS_DEFINITION, DEFINITION
from infra.request_models import PREDICT_REQUEST
from infra.topology import Topology, batch_event_pattern, upload_event_pattern
from tests.infra.conftest import Synthesized, synthesize

TOPOLOGY = Topology(stage="dev")
FUNCTIONS = (
    "preprocess",
    "evaluate",
    "promote",
    "reject",
    "inference",
    "batch",
    "drift",
    "retrain",
)
# Actions that support no resource-level permissions: the only ones allowed on Resource "*".
RESOURCELESS_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def _ours(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """Our functions by deployed name (CDK's own custom-resource handler excluded)."""
    functions = synthesized.resources("AWS::Lambda::Function").values()
    by_name = {f["Properties"].get("FunctionName"): f["Properties"] for f in functions}
    return {name: by_name[TOPOLOGY.function_name(name)] for name in FUNCTIONS}


def _statements(synthesized: Synthesized) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical, policy in synthesized.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((logical, statement))
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def key_pattern(resource: Any) -> str:
    """The key pattern of a bucket's object ARN (``<bucket ARN>/*/models/*``): ``/*/models/*``."""
    parts = resource["Fn::Join"][1]
    assert parts[0]["Fn::GetAtt"][1] == "Arn", resource
    return str(parts[-1])


# -- ingest -------------------------------------------------------------------------------------


def test_every_bucket_is_encrypted_private_and_ssl_only(synthesized: Synthesized) -> None:
    buckets = synthesized.resources("AWS::S3::Bucket")
    assert len(buckets) == 3  # raw, artifacts, their access logs
    for logical, bucket in buckets.items():
        props = bucket["Properties"]
        rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"], logical
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical
        assert bucket["DeletionPolicy"] == "RetainExceptOnCreate", logical
    denied = {
        json.dumps(policy["Properties"]["Bucket"])
        for policy in synthesized.resources("AWS::S3::BucketPolicy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    }
    assert denied == {json.dumps({"Ref": logical}) for logical in buckets}


def test_raw_and_artifacts_are_versioned_and_access_logged(synthesized: Synthesized) -> None:
    named = [
        b["Properties"]
        for b in synthesized.resources("AWS::S3::Bucket").values()
        if "BucketName" in b["Properties"]
    ]
    assert len(named) == 2
    for props in named:
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert "DestinationBucketName" in props["LoggingConfiguration"]
    notifications = synthesized.one("Custom::S3BucketNotifications")
    assert notifications["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}


def test_uploads_under_data_reach_preprocess_with_retries_and_a_dead_letter_queue(
    synthesized: Synthesized,
) -> None:
    rules = synthesized.resources("AWS::Events::Rule").values()
    [rule] = [r["Properties"] for r in rules if "data/" in json.dumps(r["Properties"])]
    pattern = rule["EventPattern"]
    shared = upload_event_pattern(TOPOLOGY)
    assert pattern["source"] == shared["source"]
    assert pattern["detail-type"] == shared["detail-type"]
    # a deleted data file leaves the next version: deletes reach preprocess too
    assert pattern["detail-type"] == ["Object Created", "Object Deleted"]
    assert pattern["detail"]["object"] == shared["detail"]["object"]
    [target] = rule["Targets"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert "DeadLetterConfig" in target
    for invoke in synthesized.resources("AWS::Lambda::EventInvokeConfig").values():
        assert invoke["Properties"]["MaximumRetryAttempts"] == 2
        assert "OnFailure" in invoke["Properties"]["DestinationConfig"]
    queues = synthesized.resources("AWS::SQS::Queue")
    assert target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0].startswith("IngestDeadLetters")
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_preprocess_tmp_holds_the_largest_upload_and_its_splits(synthesized: Synthesized) -> None:
    # docs/decisions.md, "Upload size cap": the downloaded file plus the dataset's splits
    from functions.preprocess.logic import Policy

    preprocess = _ours(synthesized)["preprocess"]
    assert preprocess["EphemeralStorage"] == {"Size": 10_240}
    assert preprocess["EphemeralStorage"]["Size"] * 2**20 >= 4 * Policy().max_upload_bytes


# -- training pipeline --------------------------------------------------------------------------


def test_the_state_machine_is_the_asl_file_with_every_placeholder_filled(
    synthesized: Synthesized,
) -> None:
    machine = synthesized.one("AWS::StepFunctions::StateMachine", "Pipeline")
    assert machine["StateMachineName"] == TOPOLOGY.state_machine_name
    # the definition ships as an asset: byte for byte the file the local stack runs
    key = machine["DefinitionS3Location"]["Key"]
    assert (synthesized.outdir / f"asset.{key}").read_bytes() == DEFINITION.read_bytes()
    placeholders = set(re.findall(r"\$\{(\w+)\}", DEFINITION.read_text()))
    assert set(machine["DefinitionSubstitutions"]) == placeholders
    states = json.loads(DEFINITION.read_text())["States"]
    assert states["Train"]["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    assert states["Gate"]["Type"] == "Choice"
    assert {"Evaluate", "Promote", "Reject", "RecordFailure"} <= set(states)
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert machine["TracingConfiguration"] == {"Enabled": True}


def test_training_runs_a_gpu_framework_image_with_a_scoped_role(synthesized: Synthesized) -> None:
    machine = synthesized.one("AWS::StepFunctions::StateMachine", "Pipeline")
    image = json.dumps(machine["DefinitionSubstitutions"]["TrainingImage"])
    assert "pytorch-training" in image and "gpu-py312" in image
    mapping = next(iter(synthesized.template["Mappings"].values()))
    assert mapping["us-east-1"] == {"account": "763104351884"}
    assert machine["DefinitionSubstitutions"]["TrainingSourceUri"]["Fn::Sub"].startswith("s3://")
    roles = synthesized.resources("AWS::IAM::Role")
    sagemaker = sorted(
        logical
        for logical, role in roles.items()
        if role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        == {"Service": "sagemaker.amazonaws.com"}
    )
    # the training role, the part builds' processing role (test_part_builds_...) and the batch
    # jobs' (test_batch_files_past_...)
    assert [r.split("Role")[0] for r in sagemaker] == [
        "BatchPredictionsJob",
        "BuildsProcessing",
        "PipelineTraining",
    ]
    passes = [
        (policy, s) for policy, s in _statements(synthesized) if s["Action"] == "iam:PassRole"
    ]
    # each state machine passes its own job role, to SageMaker only
    for policy, statement in passes:
        owner = next(o for o in ("Pipeline", "Builds", "BatchPredictions") if policy.startswith(o))
        [role] = [r for r in sagemaker if r.startswith(owner)]
        assert statement == {
            "Action": "iam:PassRole",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [role, "Arn"]},
        }
    assert len(passes) == 3


def test_default_training_is_a_g5_spot_instance_with_checkpoints() -> None:
    from functions.shared.contract import TrainingConfig

    defaults = TrainingConfig()
    assert defaults.instance_type == "ml.g5.xlarge" and defaults.spot is True
    states = json.loads(DEFINITION.read_text())["States"]
    train = states["Train"]["Parameters"]
    assert train["EnableManagedSpotTraining.$"] == "$.spot"
    assert train["CheckpointConfig"] == {"S3Uri.$": "$.checkpoint_uri"}
    assert train["StoppingCondition.$"] == "$.stopping_condition"  # MaxWait with spot


# -- functions and IAM --------------------------------------------------------------------------


def test_each_function_has_its_own_role_tracing_a_layer_and_topology_names(
    synthesized: Synthesized,
) -> None:
    functions = _ours(synthesized)
    roles = {json.dumps(f["Role"]) for f in functions.values()}
    assert len(roles) == len(FUNCTIONS)
    for name, props in functions.items():
        assert props["Runtime"] == "python3.12", name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert len(props["Layers"]) == 1, name
        assert props["Handler"].startswith("functions."), name
    assert len(synthesized.resources("AWS::Lambda::LayerVersion")) == 7  # promote+reject share


def test_no_policy_grants_a_wildcard_action_or_any_resource_outside_the_allow_list(
    synthesized: Synthesized,
) -> None:
    for logical, statement in _statements(synthesized):
        actions = _listed(statement["Action"])
        for action in actions:
            assert "*" not in action, f"{logical}: wildcard action {action}"
        if "*" in _listed(statement["Resource"]):
            assert set(actions) <= RESOURCELESS_ACTIONS, f"{logical}: {actions} on *"


def test_data_access_is_scoped_to_key_prefixes(synthesized: Synthesized) -> None:
    for logical, statement in _statements(synthesized):
        if any(a.startswith("s3:") for a in _listed(statement["Action"])):
            for resource in _listed(statement["Resource"]):
                assert resource != "*", logical


def test_the_registry_is_on_demand_recoverable_and_encrypted(synthesized: Synthesized) -> None:
    table = synthesized.one("AWS::DynamoDB::Table")
    assert table["TableName"] == TOPOLOGY.registry_table
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    [topic] = [
        t["Properties"]
        for t in synthesized.resources("AWS::SNS::Topic").values()
        if t["Properties"]["TopicName"] == TOPOLOGY.decisions_topic_name
    ]
    assert topic["KmsMasterKeyId"]


# -- inference API ------------------------------------------------------------------------------


def test_inference_ships_by_canary_with_rollback_on_its_alarms(synthesized: Synthesized) -> None:
    inference = _ours(synthesized)["inference"]
    assert inference["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    alias = synthesized.one("AWS::Lambda::Alias")
    assert alias["Name"] == "live"
    group = synthesized.one("AWS::CodeDeploy::DeploymentGroup")
    assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    assert group["AlarmConfiguration"]["Enabled"] is True
    assert len(group["AlarmConfiguration"]["Alarms"]) == 2
    assert set(group["AutoRollbackConfiguration"]["Events"]) == {
        "DEPLOYMENT_FAILURE",
        "DEPLOYMENT_STOP_ON_ALARM",
    }


def test_the_api_requires_a_key_validates_predictions_logs_and_throttles(
    synthesized: Synthesized,
) -> None:
    methods = synthesized.resources("AWS::ApiGateway::Method")
    assert len(methods) == 3
    for method in methods.values():
        assert method["Properties"]["ApiKeyRequired"] is True
    [post] = [m["Properties"] for m in methods.values() if m["Properties"]["HttpMethod"] == "POST"]
    assert "RequestValidatorId" in post and "application/json" in post["RequestModels"]
    model = synthesized.one("AWS::ApiGateway::Model")  # one POST: a predict or a feedback body
    assert [body["required"] for body in model["Schema"]["anyOf"]] == [["instances"], ["feedback"]]
    # the one model the local gateway applies too (infra/request_models.py)
    assert model["Schema"] == PREDICT_REQUEST.schema
    assert model["ContentType"] == PREDICT_REQUEST.content_type
    assert "required" not in model["Schema"]
    stage = synthesized.one("AWS::ApiGateway::Stage")
    assert stage["StageName"] == "dev" and stage["TracingEnabled"] is True
    assert "DestinationArn" in stage["AccessLogSetting"]
    [settings] = stage["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["DataTraceEnabled"] is False
    plan = synthesized.one("AWS::ApiGateway::UsagePlan")
    assert plan["Throttle"]["RateLimit"] > 0
    assert synthesized.resources("AWS::ApiGateway::ApiKey")


def test_the_inference_function_writes_only_its_capture_sample_and_feedback(
    synthesized: Synthesized,
) -> None:
    variables = _ours(synthesized)["inference"]["Environment"]["Variables"]
    assert variables["FEEDBACK_BUCKET"] == variables["CAPTURE_BUCKET"]  # the artifacts bucket
    assert "sluice-artifacts-dev-" in json.dumps(variables["FEEDBACK_BUCKET"])
    writes = [
        json.dumps(s["Resource"])
        for logical, s in _statements(synthesized)
        if "s3:PutObject" in _listed(s["Action"]) and logical.startswith("InferenceRole")
    ]
    assert len(writes) == 2, writes
    assert ["/*/capture/*" in w for w in writes] == [True, False]
    assert ["/*/feedback/*" in w for w in writes] == [False, True]


def test_iam_auth_is_an_option(synthesized_defaults: Synthesized) -> None:
    iam = synthesized_defaults
    for method in iam.resources("AWS::ApiGateway::Method").values():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
    assert not iam.resources("AWS::ApiGateway::ApiKey")
    assert "ApiKeyId" not in iam.template["Outputs"]


# -- monitoring, outputs, stages ----------------------------------------------------------------


def test_a_dashboard_and_the_day_one_alarms_exist(
    synthesized: Synthesized, synthesized_defaults: Synthesized
) -> None:
    assert synthesized.one("AWS::CloudWatch::Dashboard")["DashboardName"] == "sluice-dev"
    # failed runs, dead-lettered uploads and retrain events, refused model files, the drift
    # job's three (failed, dead-lettered, silent), the inference alias's two, retraining alarms
    # promote could not put
    assert len(synthesized_defaults.resources("AWS::CloudWatch::Alarm")) == 10
    # ...and the three retraining alarms of the one declared dataset
    assert len(synthesized.resources("AWS::CloudWatch::Alarm")) == 10 + 3
    [integrity] = [
        alarm
        for alarm in synthesized.resources("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "ModelIntegrityFailure"
    ]
    assert integrity["Properties"]["Namespace"] == "Sluice"
    assert integrity["Properties"]["Threshold"] == 1


def test_outputs_name_what_a_user_needs(synthesized: Synthesized) -> None:
    assert set(synthesized.template["Outputs"]) >= {
        "RawBucketName",
        "ArtifactsBucketName",
        "ApiUrl",
        "ApiKeyId",
        "StateMachineArn",
        "RegistryTableName",
        "DecisionsTopicArn",
        "OpsTopicArn",
    }
    assert synthesized.stack_name == "sluice-dev"


def test_a_bad_stage_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must match"):
        synthesize(tmp_path, stage="Prod_1")


# -- cdk-nag and cfn-lint -----------------------------------------------------------------------


def test_cdk_nag_reports_nothing_unacknowledged(synthesized: Synthesized) -> None:
    # synthesize() raises on any finding; the report, when written, must hold none either
    report = synthesized.outdir / "validation-report.json"
    if report.exists():
        document = json.loads(report.read_text())
        assert all(not r.get("violations") for r in document.get("pluginReports", [])), document


def test_cdk_nag_catches_a_regression(tmp_path: Path) -> None:
    """The check is not vacuous: a bucket without SSL enforcement and a wildcard grant fail."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_s3 as s3

    from infra.aws.app import build

    app, stack = build(App(outdir=str(tmp_path), context={"stage": "dev"}))
    bucket = s3.Bucket(stack, "Careless", block_public_access=s3.BlockPublicAccess.BLOCK_ALL)
    role = iam.Role(stack, "Greedy", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=[bucket.bucket_arn]))
    assert isinstance(stack, Stack)
    with pytest.raises(Exception, match="ValidationFailed") as failed:
        app.synth()
    report = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-S10" in report and "AwsSolutions-IAM5[Action::s3:*]" in report, failed


def test_cfn_lint_finds_no_errors(synthesized: Synthesized) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("cfn-lint")),
            str(synthesized.template_path),
            str(synthesized.outdir / "sluice-account.template.json"),  # infra/aws/account.py
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # 0: clean; 4: warnings only (W3005 on the DependsOn CDK writes); 2: errors
    assert done.returncode in (0, 4), done.stdout + done.stderr
    assert not re.search(r"^E\d{4}", done.stdout, re.MULTILINE), done.stdout


def test_batch_files_reach_the_batch_function_which_may_write_predictions_only(
    synthesized: Synthesized,
) -> None:
    rules = synthesized.resources("AWS::Events::Rule").values()
    [rule] = [r["Properties"] for r in rules if "batch/" in json.dumps(r["Properties"])]
    assert rule["EventPattern"]["detail-type"] == ["Object Created"]  # a deleted batch file: no-op
    assert (
        rule["EventPattern"]["detail"]["object"]
        == batch_event_pattern(TOPOLOGY)["detail"]["object"]
    )
    batch = _ours(synthesized)["batch"]
    assert "ReservedConcurrentExecutions" not in batch  # docs/decisions.md, reserved concurrency
    writes = [
        json.dumps(s["Resource"])
        for _, s in _statements(synthesized)
        if "s3:PutObject" in _listed(s["Action"]) and "predictions" in json.dumps(s["Resource"])
    ]
    assert writes and all("/*/predictions/*" in w for w in writes)


def test_training_and_evaluate_may_read_both_layouts_of_a_dataset_version(
    synthesized: Synthesized,
) -> None:
    # format 1: the version's split folders; format 2: its channel manifests and parts' files
    def reads(role: str) -> set[str]:
        return {
            str(resource["Fn::Join"][1][-1])
            for logical, s in _statements(synthesized)
            if "s3:GetObject" in _listed(s["Action"]) and role in logical
            for resource in _listed(s["Resource"])
            if isinstance(resource, dict) and "Fn::Join" in resource
        }

    for role in ("TrainingRole", "Evaluate"):
        assert {"/*/versions/*", "/*/parts/*"} <= reads(role), (role, reads(role))


def _object_patterns(synthesized: Synthesized, prefix: str, action: str) -> set[str]:
    """The key patterns of the buckets' objects that roles named ``prefix…`` may ``action``
    (not the code zip, an asset)."""
    return {
        key_pattern(resource)
        for logical, st in _statements(synthesized)
        if logical.startswith(prefix) and action in _listed(st["Action"])
        for resource in _listed(st["Resource"])
        if isinstance(resource, dict)
        and "Fn::Join" in resource
        and "Fn::GetAtt" in resource["Fn::Join"][1][0]  # a bucket's objects, not the code
    }


def test_part_builds_run_the_builds_file_on_a_cpu_image_with_a_role_for_parts_only(
    synthesized: Synthesized,
) -> None:
    # The builds machine is infra/statemachine/builds.asl.json with every placeholder filled
    machine = synthesized.one("AWS::StepFunctions::StateMachine", "Builds")
    assert machine["StateMachineName"] == TOPOLOGY.builds_state_machine_name
    key = machine["DefinitionS3Location"]["Key"]
    assert (synthesized.outdir / f"asset.{key}").read_bytes() == BUILDS_DEFINITION.read_bytes()
    placeholders = set(re.findall(r"\$\{(\w+)\}", BUILDS_DEFINITION.read_text()))
    values = machine["DefinitionSubstitutions"]
    assert set(values) == placeholders
    states = json.loads(BUILDS_DEFINITION.read_text())["States"]
    build = states["BuildParts"]
    assert build["Resource"] == "arn:aws:states:::sagemaker:createProcessingJob.sync"
    assert build["Parameters"]["AppSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "-m",
        "functions.preprocess.job_boot",
    ]
    # glibc's mmap threshold fixed: a big file's hashes come and go as arrays that, under the
    # default sliding threshold, fragment the heap (a 5 GB file: 1 014 MiB peak, 872 with it)
    assert build["Parameters"]["Environment"]["MALLOC_MMAP_THRESHOLD_"] == "262144"
    # the CPU image of the training image's repository, from the same region mapping
    image = json.dumps(values["ProcessingImage"])
    assert "pytorch-training" in image and "cpu-py312" in image
    assert len(synthesized.template["Mappings"]) == 1
    # the code input is preprocess's own code zip, on PYTHONPATH in the container
    assert values["ProcessingCodeUri"]["Fn::Sub"].startswith("s3://")
    assert values["ProcessingCodeUri"]["Fn::Sub"].endswith(".zip")
    assert "/opt/ml/processing/input/code/" in json.dumps(values["ProcessingCodePath"])
    assert TOPOLOGY.function_name("preprocess") in json.dumps(values["PreprocessFunctionArn"])

    # The processing role reads data files and the contract, reads and writes parts only
    def patterns(prefix: str, action: str) -> set[str]:
        return _object_patterns(synthesized, prefix, action)

    assert patterns("BuildsProcessingRole", "s3:PutObject") == {"/*/parts/*"}
    assert patterns("BuildsProcessingRole", "s3:GetObject") >= {"/*/data/*", "/*/parts/*"}
    # the machine may create processing jobs and invoke preprocess, nothing else of Lambda
    machine_actions = {
        action
        for logical, st in _statements(synthesized)
        if logical.startswith("BuildsStateMachineRole")
        for action in _listed(st["Action"])
    }
    assert {"sagemaker:CreateProcessingJob", "lambda:InvokeFunction"} <= machine_actions
    assert not any(a.startswith("sagemaker:") and "Training" in a for a in machine_actions)
    # preprocess knows the machine and may start it
    preprocess = _ours(synthesized)["preprocess"]["Environment"]["Variables"]
    assert TOPOLOGY.builds_state_machine_name in json.dumps(preprocess["BUILDS_STATE_MACHINE_ARN"])
    starts = [
        st
        for logical, st in _statements(synthesized)
        if logical.startswith("IngestPreprocess") and st["Action"] == "states:StartExecution"
    ]
    assert any(TOPOLOGY.builds_state_machine_name in json.dumps(st["Resource"]) for st in starts)


def test_batch_files_past_the_function_go_to_processing_jobs_with_a_role_for_predictions(
    synthesized: Synthesized,
) -> None:
    # The batch jobs machine is infra/statemachine/batch.asl.json with every placeholder filled
    machine = synthesized.one("AWS::StepFunctions::StateMachine", "BatchPredictions")
    assert machine["StateMachineName"] == TOPOLOGY.batch_jobs_state_machine_name
    key = machine["DefinitionS3Location"]["Key"]
    assert (synthesized.outdir / f"asset.{key}").read_bytes() == BATCH_DEFINITION.read_bytes()
    values = machine["DefinitionSubstitutions"]
    assert set(values) == set(re.findall(r"\$\{(\w+)\}", BATCH_DEFINITION.read_text()))
    score = json.loads(BATCH_DEFINITION.read_text())["States"]["ScoreFile"]
    assert score["Resource"] == "arn:aws:states:::sagemaker:createProcessingJob.sync"
    assert score["Parameters"]["AppSpecification"]["ContainerEntrypoint"][-1] == (
        "functions.batch.job_boot"
    )
    # the mmap threshold fixed, as for the part job: python strings of each chunk's categories
    # come and go (bench.batch_job, 1 GB: 876 MiB peak under the sliding default, 704 with it)
    assert score["Parameters"]["Environment"]["MALLOC_MMAP_THRESHOLD_"] == "262144"
    image = json.dumps(values["ProcessingImage"])
    assert "pytorch-training" in image and "cpu-py312" in image
    assert values["ProcessingCodeUri"]["Fn::Sub"].endswith(".zip")
    assert TOPOLOGY.function_name("batch") in json.dumps(values["BatchFunctionArn"])

    def patterns(prefix: str, action: str) -> set[str]:
        return _object_patterns(synthesized, prefix, action)

    # The job reads batch files, the contract, models and its request; writes predictions only
    assert patterns("BatchPredictionsJobRole", "s3:PutObject") == {"/*/predictions/*"}
    assert patterns("BatchPredictionsJobRole", "s3:GetObject") == {
        "/*/batch/*",
        "/*/contract.json",
        "/*/models/*",
        "/*/predictions/*",
    }
    # both processing roles may list their code input: SageMaker lists an S3Prefix input
    # before it downloads it, and without ListBucket the job fails to start
    for role in ("BatchPredictionsJobRole", "BuildsProcessingRole"):
        lists = [
            st
            for logical, st in _statements(synthesized)
            if logical.startswith(role) and st["Action"] == "s3:ListBucket" and "Condition" in st
        ]
        assert lists and "s3:prefix" in json.dumps(lists[0]["Condition"]), role
    machine_actions = {
        action
        for logical, st in _statements(synthesized)
        if logical.startswith("BatchPredictionsStateMachineRole")
        for action in _listed(st["Action"])
    }
    assert {"sagemaker:CreateProcessingJob", "lambda:InvokeFunction"} <= machine_actions
    assert not any(a.startswith("sagemaker:") and "Training" in a for a in machine_actions)
    # the batch function knows the machine and may start it
    batch = _ours(synthesized)["batch"]["Environment"]["Variables"]
    assert TOPOLOGY.batch_jobs_state_machine_name in json.dumps(
        batch["BATCH_JOBS_STATE_MACHINE_ARN"]
    )
    starts = [
        st
        for logical, st in _statements(synthesized)
        if logical.startswith("BatchPredictionsBatch") and st["Action"] == "states:StartExecution"
    ]
    assert any(
        TOPOLOGY.batch_jobs_state_machine_name in json.dumps(st["Resource"]) for st in starts
    )


def test_the_drift_job_runs_hourly_reads_feedback_and_writes_only_its_reports(
    synthesized: Synthesized,
) -> None:
    rules = synthesized.resources("AWS::Events::Rule").values()
    [schedule] = [r["Properties"] for r in rules if "ScheduleExpression" in r["Properties"]]
    assert schedule["ScheduleExpression"] == "rate(1 hour)"
    drift = _ours(synthesized)["drift"]
    assert "ReservedConcurrentExecutions" not in drift
    role = json.dumps(drift["Role"])

    def key_patterns(action: str) -> set[str]:
        return {
            key_pattern(resource)
            for logical, s in _statements(synthesized)
            if action in _listed(s["Action"]) and logical.startswith("MonitoringDrift")
            for resource in _listed(s["Resource"])
        }

    assert key_patterns("s3:PutObject") == {"/*/drift/*", "/*/quality/*"}, role
    assert {"/*/capture/*", "/*/feedback/*"} <= key_patterns("s3:GetObject"), role


# A variable named like a credential, or a literal value shaped like one (AWS access key ids,
# long random tokens): neither belongs in a function's environment, which the Lambda console,
# `get-function-configuration` and CloudFormation show to anyone who can read the function.
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE", re.I)
_SECRET_VALUE = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{16}$|^[A-Za-z0-9+/=_-]{40,}$")


def test_no_function_environment_holds_a_secret(synthesized: Synthesized) -> None:
    checked = 0
    for name, function in _ours(synthesized).items():
        for variable, value in function.get("Environment", {}).get("Variables", {}).items():
            checked += 1
            assert not _SECRET_NAME.search(variable), (name, variable)
            if isinstance(value, str):  # references (Ref, Fn::GetAtt, ...) are resource names
                assert not _SECRET_VALUE.match(value), (name, variable)
    assert checked > 20  # every function has its settings there
