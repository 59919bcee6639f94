"""Monitoring: a dashboard per stage, the alarms a platform engineer needs from day one (failed
runs, dead-lettered uploads, inference errors), and the drift job on a schedule (hourly): the
live model's captured inputs against its training profile (functions/drift)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.aws.functions import Layers, SluiceFunction
from infra.aws.inference_api import InferenceApi
from infra.aws.ingest import Ingest
from infra.aws.pipeline import TrainingPipeline
from infra.aws.registry import Registry
from infra.aws.storage import Storage, grant_read, grant_write
from infra.topology import Topology


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        ingest: Ingest,
        pipeline: TrainingPipeline,
        api: InferenceApi,
        storage: Storage,
        registry: Registry,
        layers: Layers,
    ) -> None:
        super().__init__(scope, construct_id)
        self.drift = SluiceFunction(
            self,
            "Drift",
            topology=topology,
            name="drift",
            package="drift",
            handler="functions.drift.handler.lambda_handler",
            layers=layers,
            environment=topology.drift_environment(),
            memory_mb=1024,
            timeout=Duration.minutes(10),
            reserved_concurrency=1,
        )
        grant_read(self.drift.role, storage.artifacts, "*/capture/*", "*/versions/*", "*/models/*")
        grant_write(self.drift.role, storage.artifacts, "*/drift/*")
        self.drift.role.add_to_policy(registry.reader())
        self.drift.role.add_to_policy(  # the datasets to measure: one Scan of the registry
            iam.PolicyStatement(actions=["dynamodb:Scan"], resources=[registry.table.table_arn])
        )
        self.schedule = events.Rule(
            self,
            "DriftSchedule",
            description="the drift job, hourly",
            schedule=events.Schedule.rate(Duration.hours(1)),
            targets=[targets.LambdaFunction(self.drift.function, retry_attempts=2)],
        )
        period = Duration.minutes(5)
        failed_runs = pipeline.state_machine.metric_failed(period=period)
        dead_letters = ingest.dead_letters.metric_approximate_number_of_messages_visible(
            period=period
        )
        self.alarms = [
            cloudwatch.Alarm(
                self,
                "RunsFailed",
                alarm_description="a pipeline run failed (not a gate refusal: those succeed)",
                metric=failed_runs,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self,
                "UploadsDeadLettered",
                alarm_description="an upload event failed preprocessing three times",
                metric=dead_letters,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
        ]
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"sluice-{topology.stage}",
            widgets=[
                [
                    cloudwatch.GraphWidget(
                        title="Pipeline runs",
                        left=[
                            pipeline.state_machine.metric_started(period=period),
                            pipeline.state_machine.metric_succeeded(period=period),
                            failed_runs,
                        ],
                    ),
                    cloudwatch.GraphWidget(
                        title="Uploads: preprocess invocations, errors, dead letters",
                        left=[
                            ingest.preprocess.function.metric_invocations(period=period),
                            ingest.preprocess.function.metric_errors(period=period),
                            dead_letters,
                        ],
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Prediction API: requests, 4xx, 5xx",
                        left=[
                            api.api.metric_count(period=period),
                            api.api.metric_client_error(period=period),
                            api.api.metric_server_error(period=period),
                        ],
                    ),
                    cloudwatch.GraphWidget(
                        title="Inference (live alias): p50 / p99 duration",
                        left=[
                            api.alias.metric_duration(statistic="p50", period=period),
                            api.alias.metric_duration(statistic="p99", period=period),
                        ],
                    ),
                    cloudwatch.GraphWidget(
                        title="Drift: max PSI per dataset (0.1 moderate, 0.25 major)",
                        left=[
                            cloudwatch.MathExpression(
                                expression="SEARCH('{"
                                + 'Sluice,dataset} MetricName="DatasetDriftPSI"\', '
                                "'Maximum', 3600)",
                                label="",
                                period=Duration.hours(1),
                            )
                        ],
                    ),
                    cloudwatch.AlarmStatusWidget(
                        title="Alarms",
                        alarms=[*self.alarms, api.errors_alarm, api.latency_alarm],
                    ),
                ],
            ],
        )
