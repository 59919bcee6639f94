"""The prediction API: the inference function (SnapStart, published version, ``live`` alias
shifted by CodeDeploy 10 % for 5 minutes with rollback on the alias's error and latency alarms)
behind an API Gateway REST API with request validation, API key + usage plan (or IAM auth),
stage throttling, access logs and tracing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.aws.functions import Layers, SluiceFunction
from infra.aws.nag import acknowledge
from infra.aws.registry import Registry
from infra.aws.storage import Storage, grant_read, grant_write
from infra.request_models import DRAFT4, PREDICT_REQUEST
from infra.topology import Topology

ApiAuth = Literal["api_key", "iam"]
STAGE_RATE, STAGE_BURST = 200, 400  # requests/s for the whole stage
PLAN_RATE, PLAN_BURST = 100, 200  # per API key
LATENCY_P99_MS = 1000


# The draft-04 keywords infra/request_models.py writes, as CDK's JsonSchema spells them.
_SCHEMA_KEYWORDS = {"required": "required", "minItems": "min_items"}


def cdk_json_schema(schema: Mapping[str, Any]) -> apigw.JsonSchema:
    """``schema`` (a draft-04 JSON Schema as a dict) as CDK's ``JsonSchema``, which renders it back
    to the same JSON in the template. A keyword not mapped here is refused, never dropped."""
    arguments: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$schema":
            if value != DRAFT4:
                raise ValueError(f"request model $schema {value!r}: API Gateway takes {DRAFT4}")
            arguments["schema"] = apigw.JsonSchemaVersion.DRAFT4
        elif key == "type":
            arguments["type"] = apigw.JsonSchemaType[str(value).upper()]
        elif key == "properties":
            arguments["properties"] = {name: cdk_json_schema(sub) for name, sub in value.items()}
        elif key == "items":
            arguments["items"] = cdk_json_schema(value)
        elif key == "anyOf":
            arguments["any_of"] = [cdk_json_schema(sub) for sub in value]
        elif key in _SCHEMA_KEYWORDS:
            arguments[_SCHEMA_KEYWORDS[key]] = value
        else:
            raise ValueError(f"request model keyword {key!r} has no CDK mapping in {__name__}")
    return apigw.JsonSchema(**arguments)


class InferenceApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        storage: Storage,
        registry: Registry,
        layers: Layers,
        auth: ApiAuth = "api_key",
    ) -> None:
        super().__init__(scope, construct_id)
        self.inference = SluiceFunction(
            self,
            "Inference",
            topology=topology,
            name="inference",
            package="inference",
            handler="functions.inference.handler.lambda_handler",
            layers=layers,
            environment=topology.inference_environment(),
            memory_mb=1024,
            timeout=Duration.seconds(29),  # API Gateway's integration limit
            snap_start=True,
        )
        role = self.inference.role
        role.add_to_policy(registry.reader())
        role.add_to_policy(registry.lister())  # GET /v1/models
        grant_read(role, storage.artifacts, "*/models/*")
        # the sample the drift job reads, and true labels for live quality: both tagged to expire
        grant_write(role, storage.artifacts, "*/capture/*", tagged=True)
        grant_write(role, storage.artifacts, "*/feedback/*", tagged=True)

        self.alias = lambda_.Alias(
            self, "Live", alias_name="live", version=self.inference.function.current_version
        )
        self.errors_alarm = cloudwatch.Alarm(
            self,
            "AliasErrors",
            alarm_description="inference errors on the live alias (rolls a deployment back)",
            metric=self.alias.metric_errors(period=Duration.minutes(1)),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.latency_alarm = cloudwatch.Alarm(
            self,
            "AliasLatency",
            alarm_description=f"inference p99 over {LATENCY_P99_MS} ms (rolls a deployment back)",
            metric=self.alias.metric_duration(statistic="p99", period=Duration.minutes(1)),
            threshold=LATENCY_P99_MS,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.deployment = codedeploy.LambdaDeploymentGroup(
            self,
            "Deployment",
            alias=self.alias,
            deployment_config=codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
            alarms=[self.errors_alarm, self.latency_alarm],
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, deployment_in_alarm=True
            ),
        )
        acknowledge(
            self.deployment,
            id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSCodeDeployRoleForLambdaLimited]",
            reason="CodeDeploy's service role for Lambda traffic shifting; AWS's managed policy "
            "is the documented, narrowest grant.",
        )

        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        method_options = (
            apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM)
            if auth == "iam"
            else apigw.MethodOptions(api_key_required=True)
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"sluice-{topology.stage}",
            description="sluice prediction API (TensorFlow Serving's REST shape)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # the account-wide logging role is sluice-account's (infra/aws/account.py)
            cloud_watch_role=False,
            default_method_options=method_options,
            deploy_options=apigw.StageOptions(
                stage_name=topology.stage,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies hold customer features
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=STAGE_RATE,
                throttling_burst_limit=STAGE_BURST,
            ),
        )
        integration = apigw.LambdaIntegration(self.alias, proxy=True)
        validator = apigw.RequestValidator(
            self,
            "Validator",
            rest_api=self.api,
            validate_request_body=True,
            validate_request_parameters=True,
        )
        # One model, infra/request_models.py's, which the local gateway applies too.
        predict = apigw.Model(
            self,
            PREDICT_REQUEST.name,
            rest_api=self.api,
            content_type=PREDICT_REQUEST.content_type,
            description=PREDICT_REQUEST.description,
            schema=cdk_json_schema(PREDICT_REQUEST.schema),
        )
        v1 = self.api.root.add_resource("v1")
        v1.add_resource("openapi.json").add_method("GET", integration)
        # TF Serving's paths (/v1/models/{name}:predict, .../versions/{n}:predict) put a verb
        # after a colon, which API Gateway's path parts cannot match: one proxy resource, GET for
        # the status routes, POST (body validated) for predictions and feedback.
        models = v1.add_resource("models").add_resource("{proxy+}")
        if models.path != PREDICT_REQUEST.resource:
            raise ValueError(
                f"{PREDICT_REQUEST.name} is for {PREDICT_REQUEST.resource}, not {models.path}"
            )
        models.add_method("GET", integration)
        models.add_method(
            PREDICT_REQUEST.method,
            integration,
            request_validator=validator,
            request_models={PREDICT_REQUEST.content_type: predict},
        )

        if auth == "api_key":
            self.api_key = self.api.add_api_key("ApiKey", api_key_name=f"sluice-{topology.stage}")
            plan = self.api.add_usage_plan(
                "UsagePlan",
                name=f"sluice-{topology.stage}",
                throttle=apigw.ThrottleSettings(rate_limit=PLAN_RATE, burst_limit=PLAN_BURST),
                api_stages=[
                    apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)
                ],
            )
            plan.add_api_key(self.api_key)
            acknowledge(
                self.api,
                id="AwsSolutions-APIG4",
                reason="Callers authenticate with an API key bound to a throttled usage plan "
                "(the product interface); deploy with -c api_auth=iam for SigV4 instead.",
            )
        acknowledge(
            self.api,
            id="AwsSolutions-COG4",
            reason="No end-user pool: the API serves machine clients (API key or IAM).",
        )
        acknowledge(
            self.api,
            id="AwsSolutions-APIG3",
            reason="WAF is an account-level choice with its own cost; the stage and the usage "
            "plan throttle, and the function validates every request.",
        )
