"""Monitoring: a dashboard per stage, the alarms a platform engineer needs from day one (failed
runs, dead-lettered uploads and retraining events, inference errors, a failing or silent drift
job), each sent to the stage's ops topic (mailed to the ``opsEmail`` context's address), and
the drift job on a schedule (hourly): the live model's captured inputs against its training
profile, and its live quality from feedback (functions/drift). The dashboard also shows the
retraining decisions and each declared dataset's retraining alarms (infra/aws/retraining.py)."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from functions.shared.observability import NAMESPACE, SERVICE
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.inference_api import InferenceApi
from infra.aws.ingest import Ingest
from infra.aws.pipeline import TrainingPipeline
from infra.aws.registry import Registry
from infra.aws.retraining import Retraining
from infra.aws.routing import dead_letter_queue, retry_then_dead_letter
from infra.aws.storage import Storage, grant_read, grant_write
from infra.topology import Topology

# the retrain function's outcome metrics (functions/retrain/handler.py), by their graph label
RETRAIN_OUTCOMES = {
    "RetrainStarted": "started",
    "RetrainSkipped": "skipped",
    "RetrainStartFailed": "start failed",
    "RetrainFinished": "finished",
}


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
        retraining: Retraining,
        storage: Storage,
        registry: Registry,
        layers: Layers,
        ops_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.ops_topic = self._ops_topic(topology, ops_email)
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
        )
        grant_read(
            self.drift.role,
            storage.artifacts,
            "*/capture/*",
            "*/feedback/*",
            "*/versions/*",
            "*/models/*",
        )
        grant_write(self.drift.role, storage.artifacts, "*/drift/*", "*/quality/*")
        self.drift.role.add_to_policy(registry.reader())
        self.drift.role.add_to_policy(  # the datasets to measure: one Scan of the registry
            iam.PolicyStatement(actions=["dynamodb:Scan"], resources=[registry.table.table_arn])
        )
        # A drift run that fails three times, or that EventBridge cannot deliver, is kept here
        # (and alarms): if drift breaks, retraining would otherwise silently never trigger.
        self.drift_dead_letters = dead_letter_queue(self, "DriftDeadLetters")
        retry_then_dead_letter(self.drift, self.drift_dead_letters)
        self.schedule = events.Rule(
            self,
            "DriftSchedule",
            description="the drift job, hourly",
            schedule=events.Schedule.rate(Duration.hours(1)),
            targets=[
                targets.LambdaFunction(
                    self.drift.function,
                    retry_attempts=2,
                    dead_letter_queue=self.drift_dead_letters,
                )
            ],
        )
        period = Duration.minutes(5)
        failed_runs = pipeline.state_machine.metric_failed(period=period)
        dead_letters = ingest.dead_letters.metric_approximate_number_of_messages_visible(
            period=period
        )
        retrain_dead_letters = (
            retraining.dead_letters.metric_approximate_number_of_messages_visible(period=period)
        )
        # A model file whose sha256 is not the registry's: refused at load (the last good
        # model answers, or 503), counted by the inference function (functions/inference/
        # cache.py) under Powertools' service dimension.
        integrity_failures = cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name="ModelIntegrityFailure",
            dimensions_map={"service": SERVICE},
            statistic="Sum",
            period=period,
        )

        def any_in_five_minutes(
            construct_id: str, name: str, description: str, metric: cloudwatch.IMetric
        ) -> cloudwatch.Alarm:
            """An alarm on one occurrence in a five-minute period, quiet without data. Named,
            not CloudFormation's `<stack>-<id>-<random>`, which would start with the retraining
            alarms' prefix (infra/alarms.py) and so reach the retrain function."""
            return cloudwatch.Alarm(
                self,
                construct_id,
                alarm_name=f"sluice-{name}-{topology.stage}",
                alarm_description=description,
                metric=metric,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )

        self.alarms = [
            any_in_five_minutes(
                "RunsFailed",
                "runs-failed",
                "a pipeline run failed (not a gate refusal: those succeed)",
                failed_runs,
            ),
            any_in_five_minutes(
                "UploadsDeadLettered",
                "uploads-dead-lettered",
                "an upload event failed preprocessing three times",
                dead_letters,
            ),
            any_in_five_minutes(
                "ModelIntegrityFailed",
                "model-integrity",
                "a model file did not match its registered sha256 and was refused: altered "
                "after promotion, or corrupted in the artifacts bucket",
                integrity_failures,
            ),
            any_in_five_minutes(
                "RetrainEventsDeadLettered",
                "retrain-dead-lettered",
                "an alarm or run-end event failed the retrain function three times: no "
                "retraining decision was recorded for it",
                retrain_dead_letters,
            ),
            any_in_five_minutes(
                "DriftFailed",
                "drift-failed",
                "the hourly drift job raised an error: drift and live quality go unmeasured, so "
                "retraining cannot trigger",
                self.drift.function.metric_errors(period=period),
            ),
            any_in_five_minutes(
                "DriftDeadLettered",
                "drift-dead-lettered",
                "a drift run failed three times (or could not be delivered) and was dead-lettered",
                self.drift_dead_letters.metric_approximate_number_of_messages_visible(
                    period=period
                ),
            ),
            any_in_five_minutes(
                "RetrainAlarmsNotPut",
                "retrain-alarms-not-put",
                "promote made a model live but could not put its dataset's retraining alarms "
                "(functions/promote): drift, quality and errors go unwatched until the next "
                "promotion puts them",
                cloudwatch.MathExpression(  # over every dataset: the metric has its dimension
                    expression=f"SELECT SUM(RetrainAlarmsNotPut) FROM {NAMESPACE}",
                    label="RetrainAlarmsNotPut",
                    period=period,
                ),
            ),
            cloudwatch.Alarm(
                self,
                "DriftSilent",
                alarm_name=f"sluice-drift-silent-{topology.stage}",
                alarm_description="the hourly drift job has not run for two hours: its schedule "
                "is disabled or broken, so retraining cannot trigger",
                metric=self.drift.function.metric_invocations(period=Duration.hours(1)),
                threshold=1,
                evaluation_periods=2,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            ),
        ]
        # every operational alarm notifies the ops topic (the retraining alarms act through
        # EventBridge instead: infra/aws/retraining.py)
        for alarm in [*self.alarms, api.errors_alarm, api.latency_alarm]:
            alarm.add_alarm_action(actions.SnsAction(self.ops_topic))
        retraining_row: list[cloudwatch.IWidget] = [
            cloudwatch.GraphWidget(
                title="Retraining decisions per dataset (hourly)",
                left=[
                    cloudwatch.MathExpression(
                        # Powertools adds its `service` dimension to the retrain function's
                        # metrics (functions/retrain/handler.py)
                        expression=f"SEARCH('{{Sluice,dataset,service}} "
                        f"MetricName=\"{name}\"', 'Sum', 3600)",
                        label=f"{label} " + "${PROP('Dim.dataset')}",
                        period=Duration.hours(1),
                    )
                    for name, label in RETRAIN_OUTCOMES.items()
                ],
            ),
            cloudwatch.GraphWidget(
                title="Retraining: retrain invocations, errors, dead letters",
                left=[
                    retraining.retrain.function.metric_invocations(period=period),
                    retraining.retrain.function.metric_errors(period=period),
                    retrain_dead_letters,
                ],
            ),
        ]
        if retraining.all_alarms:
            retraining_row.append(
                cloudwatch.AlarmStatusWidget(
                    title="Retraining alarms (drift, live quality, error rate per dataset)",
                    alarms=retraining.all_alarms,
                )
            )
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
                retraining_row,
            ],
        )

    def _ops_topic(self, topology: Topology, email: str | None) -> sns.Topic:
        """The topic every operational alarm publishes to. Encrypted with a key of the stack's,
        not ``alias/aws/sns``: CloudWatch can only publish to an encrypted topic whose key policy
        lets it use the key, and the AWS-managed key's policy cannot be changed."""
        key = kms.Key(
            self,
            "OpsTopicKey",
            description=f"sluice ({topology.stage}) ops topic: CloudWatch alarms publish to it",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,  # it encrypts only messages in flight
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        topic = sns.Topic(
            self,
            "OpsTopic",
            topic_name=topology.ops_topic_name,
            display_name=f"sluice {topology.stage} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:"
                        f"{Aws.ACCOUNT_ID}:alarm:*"
                    }
                },
            )
        )
        if email:
            topic.add_subscription(subscriptions.EmailSubscription(email))
        return topic
