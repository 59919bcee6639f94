"""The alarms that ask for retraining: one definition, put by the promote function when a model
goes live (``RetrainAlarms.ensure``), declared by CDK for the datasets its ``datasets`` context
names, and evaluated by the local stack (moto stores alarms but never evaluates them). It lives
in functions/shared because the promote function's bundle holds functions/ only; infra/alarms.py
gives it the topology's names.

Per dataset, three alarms on metrics the functions publish with the single dimension
``dataset``, each M out of N periods, missing data treated explicitly:

- ``drift``: the drift job's ``DatasetDriftPSI`` (the largest feature PSI), Maximum per job
  period, ≥ 0.25 ("major" in the PSI convention) in 2 of the last 3 periods;
- ``quality``: the drift job's ``LiveQualityDrop`` (live accuracy or RMSE from feedback,
  relative to the model's own test score), ≥ 0.10 in 2 of the last 3 periods;
- ``errors``: the inference function's ``ErrorRate`` (requests answered 422 or 5xx over all
  requests of the dataset, per serving window), Average ≥ 0.05 in 3 of the last 5 periods.

Missing data is ``notBreaching`` for all three: no measurement (too little traffic, no
feedback, no requests) is no evidence that the world moved, so it never fires an alarm and
never keeps one firing. docs/decisions.md says why these numbers.

An alarm's name is ``sluice-<stage>.retrain.<dataset>.<kind>``: stage names hold no dot, so the
retraining rule's prefix ``sluice-<stage>.retrain.`` matches neither another stage's alarms nor
the names CloudFormation gives unnamed alarms (``sluice-<stage>-<logical id>-<random>``). The
rule matches on the prefix, so an alarm put at promote reaches the retrain function exactly as
a declared one does. The retrain function reads the dataset from the alarm's metric dimension,
not from the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

AlarmKind = Literal["drift", "quality", "errors"]
Comparison = Literal["GreaterThanOrEqualToThreshold", "GreaterThanThreshold"]
MissingData = Literal["missing", "notBreaching", "breaching", "ignore"]
Statistic = Literal["Maximum", "Average", "Sum", "Minimum"]

NAMESPACE = "Sluice"
DIMENSION = "dataset"
MONITOR_PERIOD_SECONDS = 3600  # the drift job's schedule: one datapoint per run
SERVING_PERIOD_SECONDS = 300  # five serving-metric windows of 60 s
KINDS: tuple[AlarmKind, ...] = ("drift", "quality", "errors")


@dataclass(frozen=True)
class AlarmSpec:
    kind: AlarmKind
    dataset: str
    name: str
    description: str
    metric: str
    statistic: Statistic
    period_seconds: int
    threshold: float
    comparison: Comparison
    evaluation_periods: int  # N
    datapoints_to_alarm: int  # M
    treat_missing_data: MissingData
    namespace: str = NAMESPACE

    @property
    def dimensions(self) -> dict[str, str]:
        return {DIMENSION: self.dataset}

    def breaches(self, value: float) -> bool:
        if self.comparison == "GreaterThanOrEqualToThreshold":
            return value >= self.threshold
        return value > self.threshold

    def put_metric_alarm(self) -> dict[str, Any]:
        """The ``PutMetricAlarm`` request that creates this alarm (promote's, the local
        stack's; CloudFormation's properties are the same)."""
        return {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions.items()],
            "Statistic": self.statistic,
            "Period": self.period_seconds,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.datapoints_to_alarm,
            "TreatMissingData": self.treat_missing_data,
            "ActionsEnabled": False,  # the action is the EventBridge rule on state changes
        }


def alarm_prefix(stage: str) -> str:
    """Every retraining alarm's name starts with this; the EventBridge rule matches on it."""
    return f"sluice-{stage}.retrain."


def alarm_name(stage: str, dataset: str, kind: AlarmKind) -> str:
    return f"{alarm_prefix(stage)}{dataset}.{kind}"


def alarm_specs(
    stage: str,
    dataset: str,
    *,
    monitor_period_seconds: int = MONITOR_PERIOD_SECONDS,
    serving_period_seconds: int = SERVING_PERIOD_SECONDS,
) -> list[AlarmSpec]:
    """The three alarms of one dataset. The periods are parameters only so that the local stack
    can run its drift job faster than hourly; the alarm's period is always the job's."""

    def alarm(
        kind: AlarmKind,
        metric: str,
        statistic: Statistic,
        threshold: float,
        m_of_n: tuple[int, int],
        period: int,
        what: str,
    ) -> AlarmSpec:
        return AlarmSpec(
            kind=kind,
            dataset=dataset,
            name=alarm_name(stage, dataset, kind),
            description=f"{dataset}: {what}",
            metric=metric,
            statistic=statistic,
            period_seconds=period,
            threshold=threshold,
            comparison="GreaterThanOrEqualToThreshold",
            datapoints_to_alarm=m_of_n[0],
            evaluation_periods=m_of_n[1],
            treat_missing_data="notBreaching",
        )

    monitor, serving = monitor_period_seconds, serving_period_seconds
    return [
        alarm(
            "drift",
            "DatasetDriftPSI",
            "Maximum",
            0.25,
            (2, 3),
            monitor,
            "live inputs drifted from the training data "
            "(max feature PSI >= 0.25 in 2 of 3 drift-job runs)",
        ),
        alarm(
            "quality",
            "LiveQualityDrop",
            "Maximum",
            0.10,
            (2, 3),
            monitor,
            "live quality from feedback is 10% or more below the model's test score "
            "(2 of 3 drift-job runs)",
        ),
        alarm(
            "errors",
            "ErrorRate",
            "Average",
            0.05,
            (3, 5),
            serving,
            "5% or more of prediction requests answered 422 or 5xx (3 of 5 periods of 5 min)",
        ),
    ]


class RetrainAlarms(Protocol):
    """Where a dataset's retraining alarms are kept (CloudWatch; a recording fake in tests)."""

    def ensure(self, dataset: str) -> list[str]:
        """Create or update the dataset's alarms to the definition; their names."""
        ...

    def remove(self, dataset: str) -> list[str]:
        """Delete the dataset's alarms (none is an error); their names."""
        ...


class CloudWatchRetrainAlarms:
    """``PutMetricAlarm`` is an upsert, so ``ensure`` is idempotent and also brings an alarm
    put under an older definition up to date; ``DeleteAlarms`` ignores names that do not
    exist, so ``remove`` is too."""

    def __init__(
        self,
        client: Any,
        stage: str,
        *,
        monitor_period_seconds: int = MONITOR_PERIOD_SECONDS,
        serving_period_seconds: int = SERVING_PERIOD_SECONDS,
    ) -> None:
        self._cloudwatch = client
        self._stage = stage
        self._monitor = monitor_period_seconds
        self._serving = serving_period_seconds

    def specs(self, dataset: str) -> list[AlarmSpec]:
        return alarm_specs(
            self._stage,
            dataset,
            monitor_period_seconds=self._monitor,
            serving_period_seconds=self._serving,
        )

    def ensure(self, dataset: str) -> list[str]:
        specs = self.specs(dataset)
        for spec in specs:
            self._cloudwatch.put_metric_alarm(**spec.put_metric_alarm())
        return [spec.name for spec in specs]

    def remove(self, dataset: str) -> list[str]:
        names = [spec.name for spec in self.specs(dataset)]
        self._cloudwatch.delete_alarms(AlarmNames=names)
        return names
