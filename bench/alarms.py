"""What the retraining alarms put at promote cost: ``python -m bench.alarms [--datasets N]``.

Against moto's server over HTTP on loopback (the local stack's CloudWatch): ``ensure`` (three
``PutMetricAlarm``: what promote adds to every promotion) for N datasets, then again (the
upsert, as a retried or later promotion does), one ``DescribeAlarms`` of them all (what the local
evaluator reads every tick), and ``remove`` (one ``DeleteAlarms``: ``sluice retire``). Prints
median and p95 milliseconds and the alarm counts. AWS's own latency is not measured here.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import boto3
from moto.server import ThreadedMotoServer

from functions.shared.alarms import CloudWatchRetrainAlarms, alarm_prefix
from infra.local.alarms import described_alarms
from infra.local.stack import free_port

STAGE = "bench"


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=int, default=50)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per call otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client(
            "cloudwatch",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        alarms = CloudWatchRetrainAlarms(client, STAGE)
        names = [f"d{i}" for i in range(args.datasets)]
        first: list[float] = []
        again: list[float] = []
        removed: list[float] = []
        for samples in (first, again):
            for dataset in names:
                began = time.perf_counter()
                alarms.ensure(dataset)
                samples.append(time.perf_counter() - began)
        began = time.perf_counter()
        held = described_alarms(client, alarm_prefix(STAGE))
        described = time.perf_counter() - began
        for dataset in names:
            began = time.perf_counter()
            alarms.remove(dataset)
            removed.append(time.perf_counter() - began)
        left = described_alarms(client, alarm_prefix(STAGE))
    finally:
        server.stop()
    print(f"ensure, first put ({args.datasets} datasets): {_ms(first)}")
    print(f"ensure, upsert again:                 {_ms(again)}")
    print(
        f"alarms held after both: {len(held)} (3 per dataset); "
        f"DescribeAlarms of all: {described * 1000:.1f} ms"
    )
    print(f"remove (DeleteAlarms): {_ms(removed)}; alarms left: {len(left)}")


if __name__ == "__main__":
    main()
