"""Logger, Tracer and Metrics, created once and imported by every function."""

from __future__ import annotations

from typing import Any

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


def emf_document(
    namespace: str,
    timestamp_ms: int,
    dimensions: list[str],
    metrics: list[dict[str, str]],
    fields: dict[str, Any],
) -> dict[str, Any]:
    """One CloudWatch embedded-metric-format document: ``metrics`` (``{"Name", "Unit"}``) whose
    values, and the ``dimensions``' values, are in ``fields``. Printed to stdout in Lambda,
    CloudWatch Logs turns it into metrics."""
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {"Namespace": namespace, "Dimensions": [dimensions], "Metrics": metrics}
            ],
        },
        **fields,
    }
