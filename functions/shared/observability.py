"""Logger, Tracer and Metrics, created once and imported by every function."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

SERVICE = "sluice"
NAMESPACE = "Sluice"


_emf_sinks: list[Callable[[str], None]] = []
_emf_echo = True


def emit_emf(line: str) -> None:
    """Every EMF document sluice emits goes through here: printed (in Lambda, stdout is
    CloudWatch Logs, which turns it into metrics), and handed to any sink ``route_emf`` set."""
    if _emf_echo:
        print(line)
    for sink in _emf_sinks:
        sink(line)


def route_emf(sink: Callable[[str], None] | None, *, echo: bool) -> None:
    """Where EMF documents go besides stdout (``echo``): the local stack passes its metric sink
    (infra/local/alarms.py) and turns the echo off, since it has no CloudWatch Logs to read them.
    ``route_emf(None, echo=True)`` restores Lambda's behaviour."""
    global _emf_echo
    _emf_sinks[:] = [] if sink is None else [sink]
    _emf_echo = echo


class _EMFProvider(AmazonCloudWatchEMFProvider):
    """Powertools' provider, except that ``POWERTOOLS_METRICS_DISABLED`` drops each invocation's
    metrics at flush (Powertools 3.37 keeps them instead: in a long-lived process, the local
    stack, they grow without bound, and at 100 values of one metric it prints them anyway), and
    that documents go out through ``emit_emf``."""

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        # Nothing to say (nearly every request): return before anything else, since clearing
        # and the environment look-ups cost 14 µs a request. Powertools' error only when asked.
        if not self.metric_set:
            if raise_on_empty_metrics and not is_metrics_disabled():
                super().flush_metrics(raise_on_empty_metrics)
            return
        if is_metrics_disabled():
            self.clear_metrics()
            return
        emit_emf(json.dumps(self.serialize_metric_set(), separators=(",", ":")))
        self.clear_metrics()


class _DeferredXRayProvider:
    """Powertools' default provider, ``aws_xray_sdk.core.xray_recorder`` with ``patch`` and
    ``patch_all`` attached, imported on first use. Importing ``aws_xray_sdk.core`` builds the
    recorder, whose sampler, outside Lambda, creates two botocore X-Ray clients: ≈ 90 ms of every
    cold start of a process whose tracer is disabled (the local stack, tests, benchmarks) and
    never uses it (bench/coldstart.py; docs/decisions.md, "Cold start")."""

    _recorder: Any = None

    def __getattr__(self, name: str) -> Any:
        if _DeferredXRayProvider._recorder is None:
            from aws_xray_sdk.core import patch, patch_all, xray_recorder  # type: ignore[import-untyped]

            xray_recorder.patch, xray_recorder.patch_all = patch, patch_all
            _DeferredXRayProvider._recorder = xray_recorder
        return getattr(_DeferredXRayProvider._recorder, name)


logger = Logger(service=SERVICE)
# Enabled (in Lambda, unless POWERTOOLS_TRACE_DISABLED): Powertools' own provider, built now.
tracer = (
    Tracer(service=SERVICE, provider=_DeferredXRayProvider())  # type: ignore[arg-type]
    if Tracer._is_tracer_disabled()
    else Tracer(service=SERVICE)
)
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


HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def traced(handler: HandlerT) -> HandlerT:
    """``tracer.capture_lambda_handler(capture_response=False)``, except that a disabled tracer
    (``POWERTOOLS_TRACE_DISABLED``, or outside Lambda, as in the local stack) leaves the handler
    as it is: Powertools' decorator still builds X-Ray dummy segments then, three entities with
    random ids, ≈ 25 µs a request (bench/predict.py), twice the model's own run on one row."""
    if tracer.disabled:
        return handler
    traced_handler: HandlerT = tracer.capture_lambda_handler(capture_response=False)(handler)
    return traced_handler
