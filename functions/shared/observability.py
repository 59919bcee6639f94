"""Logger, Tracer and Metrics, created once and imported by every function."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

SERVICE = "sluice"
NAMESPACE = "Sluice"


class _EMFProvider(AmazonCloudWatchEMFProvider):
    """Powertools' provider, except that ``POWERTOOLS_METRICS_DISABLED`` drops each invocation's
    metrics at flush. Powertools 3.37 keeps them instead: in a long-lived process (the local
    stack) they grow without bound, and at 100 values of one metric it prints them anyway."""

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if is_metrics_disabled():
            self.clear_metrics()
            return
        super().flush_metrics(raise_on_empty_metrics)


logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)
metrics.provider = _EMFProvider(
    namespace=NAMESPACE,
    service=SERVICE,
    metric_set=metrics.metric_set,
    dimension_set=metrics.dimension_set,
    metadata_set=metrics.metadata_set,
    default_dimensions=metrics.default_dimensions,
)
