"""Alarms → retraining: per declared dataset, the three alarms of infra/alarms.py (drift, live
quality, error rate); EventBridge routes an alarm entering ALARM, and the end of every pipeline
run, to the retrain function (functions/retrain), which decides under its guards whether to
start a run over the dataset's current data, and records why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.shared.layout import CONTRACT_FILE
from infra.alarms import (
    AlarmSpec,
    Comparison,
    MissingData,
    alarm_event_pattern,
    alarm_specs,
    run_status_event_pattern,
)
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.nag import acknowledge
from infra.aws.pipeline import TrainingPipeline
from infra.aws.registry import Registry
from infra.aws.routing import dead_letter_queue, retry_then_dead_letter, rule
from infra.aws.storage import Storage, grant_read
from infra.topology import Topology

_OPERATOR = cloudwatch.ComparisonOperator
COMPARISONS: Mapping[Comparison, cloudwatch.ComparisonOperator] = {
    "GreaterThanOrEqualToThreshold": _OPERATOR.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    "GreaterThanThreshold": _OPERATOR.GREATER_THAN_THRESHOLD,
}
MISSING_DATA: Mapping[MissingData, cloudwatch.TreatMissingData] = {
    "missing": cloudwatch.TreatMissingData.MISSING,
    "notBreaching": cloudwatch.TreatMissingData.NOT_BREACHING,
    "breaching": cloudwatch.TreatMissingData.BREACHING,
    "ignore": cloudwatch.TreatMissingData.IGNORE,
}


class Retraining(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        datasets: Sequence[str],
        storage: Storage,
        registry: Registry,
        pipeline: TrainingPipeline,
        layers: Layers,
        guard_overrides: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = dead_letter_queue(self, "DeadLetters")
        self.retrain = SluiceFunction(
            self,
            "Retrain",
            topology=topology,
            name="retrain",
            package="retrain",
            handler="functions.retrain.handler.lambda_handler",
            layers=layers,
            environment={**topology.retrain_environment(), **(guard_overrides or {})},
            memory_mb=256,
        )
        role = self.retrain.role
        # the contract, and (ListBucket) the data files under <dataset>/data/: the current data
        grant_read(role, storage.raw, f"*/{CONTRACT_FILE}")
        grant_read(role, storage.artifacts, "*/versions/*/manifest.json")  # complete or not
        role.add_to_policy(registry.guard_keeper())
        self._allow_runs(pipeline.state_machine, topology)

        retry_then_dead_letter(self.retrain, self.dead_letters)
        self.alarm_rule = rule(
            self,
            "AlarmStateChanges",
            description="a retraining alarm entered ALARM → retrain (infra/alarms.py)",
            pattern=alarm_event_pattern(topology),
            to=self.retrain,
            dead_letters=self.dead_letters,
        )
        self.run_rule = rule(
            self,
            "RunEnds",
            description="a pipeline run ended → retrain (releases its guard)",
            pattern=run_status_event_pattern(topology, pipeline.state_machine.state_machine_arn),
            to=self.retrain,
            dead_letters=self.dead_letters,
        )
        self.alarms: dict[str, list[cloudwatch.Alarm]] = {
            dataset: [self._alarm(spec) for spec in alarm_specs(topology, dataset)]
            for dataset in datasets
        }

    def _alarm(self, spec: AlarmSpec) -> cloudwatch.Alarm:
        """One alarm exactly as infra/alarms.py defines it (the local stack evaluates the same);
        no actions: the EventBridge rule on its state changes is what acts."""
        return cloudwatch.Alarm(
            self,
            f"{spec.dataset}-{spec.kind}",
            alarm_name=spec.name,
            alarm_description=spec.description,
            metric=cloudwatch.Metric(
                namespace=spec.namespace,
                metric_name=spec.metric,
                dimensions_map=spec.dimensions,
                statistic=spec.statistic,
                period=Duration.seconds(spec.period_seconds),
            ),
            threshold=spec.threshold,
            comparison_operator=COMPARISONS[spec.comparison],
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints_to_alarm,
            treat_missing_data=MISSING_DATA[spec.treat_missing_data],
            actions_enabled=False,
        )

    def _allow_runs(self, state_machine: sfn.IStateMachine, topology: Topology) -> None:
        """Start a run and list the running ones (the state machine); describe a run, to read
        which dataset it is over (its executions)."""
        executions = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{topology.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role = self.retrain.role
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution", "states:ListExecutions"],
                resources=[state_machine.state_machine_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions])
        )
        acknowledge(
            role,
            id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:"
            f"<AWS::AccountId>:execution:{topology.state_machine_name}:*]",
            reason="Execution names are made per run; the retrain function may only describe "
            "the executions of this state machine (to learn which dataset a running one is over).",
        )

    @property
    def all_alarms(self) -> list[cloudwatch.Alarm]:
        return [alarm for alarms in self.alarms.values() for alarm in alarms]
