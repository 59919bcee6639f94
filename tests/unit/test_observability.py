"""The shared Metrics: what a function adds is flushed once per invocation, or dropped when
metrics are disabled, never kept."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from functions.shared.observability import metrics


@metrics.log_metrics
def _handler(event: dict[str, Any], context: Any) -> int:
    for _ in range(event["values"]):
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    return 0


@pytest.mark.parametrize("disabled", ["true", "false"])
def test_each_invocation_leaves_no_metric_behind(
    disabled: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", disabled)
    for _ in range(150):  # Powertools prints any metric that reaches 100 values
        _handler({"values": 1}, None)

    assert metrics.metric_set == {}
    blobs = [line for line in capsys.readouterr().out.splitlines() if '"Requests"' in line]
    assert len(blobs) == (0 if disabled == "true" else 150)  # one EMF blob per invocation
