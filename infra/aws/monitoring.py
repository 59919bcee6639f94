"""Monitoring hooks: a dashboard per stage and the alarms a platform engineer needs from day one
(failed runs, dead-lettered uploads, inference errors). Issue 6 adds serving metrics, drift and
the alarms that retrain."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra.aws.inference_api import InferenceApi
from infra.aws.ingest import Ingest
from infra.aws.pipeline import TrainingPipeline
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
    ) -> None:
        super().__init__(scope, construct_id)
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
                    cloudwatch.AlarmStatusWidget(
                        title="Alarms",
                        alarms=[*self.alarms, api.errors_alarm, api.latency_alarm],
                    ),
                ],
            ],
        )
