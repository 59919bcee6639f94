"""Load (``make soak``): 20 000 predictions at concurrency 32 through ``sluice up``'s API on
loopback, bounded in count and time, with zero errors and no memory growth.

``sluice up`` runs as a user runs it, in its own process; the load generator is bench/http.py's
(one keep-alive HTTP/1.1 connection per client thread). Memory is the server process's resident
set (``VmRSS``) after a warm-up and after the load: a leak per request (a cache keyed by request,
an unbounded capture buffer, a metric set never flushed) shows up as growth proportional to the
20 000 requests.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.http import (
    API_KEY,
    PREDICT_PATH,
    Target,
    generate,
    go_live,
    running,
    sluice_up_command,
)
from infra.local.stack import free_port

pytestmark = pytest.mark.soak

REQUESTS, CONCURRENCY, SECONDS = 20_000, 32, 300.0
WARMUP = 3_000  # the model, the capture buffer and the metric windows reach their steady size
MAX_GROWTH_MB = 25.0  # ≈ 1.3 KB per request would be a leak; allocator noise stays well under


def _rss_mb(pid: int) -> float:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024


def test_twenty_thousand_predictions_at_concurrency_32_without_errors_or_growth() -> None:
    aws_port, api_port = free_port(), free_port()
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    with (
        tempfile.TemporaryDirectory(prefix="sluice-soak-") as tmp,
        running(sluice_up_command(Path(tmp) / ".sluice", aws_port, api_port), "ready") as up,
    ):
        target = Target(api_port, PREDICT_PATH, go_live(aws_port, api_port), headers)
        warm = generate(target, CONCURRENCY, WARMUP, SECONDS)
        assert warm.errors == 0, warm.failures
        before = _rss_mb(up.process.pid)
        load = generate(target, CONCURRENCY, REQUESTS, SECONDS)
        after = _rss_mb(up.process.pid)
    print(
        f"{len(load.statuses)} requests in {load.seconds:.1f} s ({load.rps:.0f}/s), "
        f"p50 {load.percentile_ms(50):.1f} ms, p99 {load.percentile_ms(99):.1f} ms, "
        f"errors {load.errors}; RSS {before:.1f} → {after:.1f} MB"
    )
    assert len(load.statuses) == REQUESTS, "the load did not finish within its time bound"
    assert load.errors == 0, (dict(load.failures), sorted(set(load.statuses)))
    assert after - before <= MAX_GROWTH_MB, f"RSS grew {after - before:.1f} MB"
