"""Local HTTP serving: requests/s and p50/p99 latency of ``POST /v1/models/churn:predict``
(one row) through ``sluice up``'s API, at concurrency 1, 8 and 32.

``python -m bench.http`` (``--quick``: fewer requests). ``sluice up`` runs as a user runs it, in
its own process, on free ports with a throwaway state directory; a contract and a small churn CSV
are uploaded with boto3 and the benchmark waits until the model answers. The load generator runs
in this process: one thread per concurrent client, each with its own keep-alive HTTP/1.1
connection (``http.client``), sending the same request with the API key back to back and timing
each from send to last byte read. Every level is bounded in requests and in seconds.

The floor is the same load generator against a stdlib ``ThreadingHTTPServer`` (the server class
the local API Gateway is built on) in its own process, answering every POST with a constant JSON
body of the same size: what loopback, the client and HTTP parsing cost on this machine. There is
no peer. Client and servers share the machine's cores, so the client's own work is in every
figure, the floor's included.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Figure, Section, run_cli
from tests.processes import ChildProcess

HOST = "127.0.0.1"
API_KEY = "bench-key"
DATASET = "churn"
PREDICT_PATH = f"/v1/models/{DATASET}:predict"
TRAINING_ROWS = 600
CONCURRENCY = (1, 8, 32)
REQUESTS = {1: 2000, 8: 4000, 32: 4000}
QUICK_REQUESTS = {1: 300, 8: 600, 32: 600}
LEVEL_SECONDS, QUICK_LEVEL_SECONDS = 8.0, 3.0  # the cap on one level's run
WARMUP_REQUESTS = 200
TARGET_CONCURRENCY, TARGET_P99_MS = 8, 20.0
START_SECONDS = 60.0  # sluice up printing "ready"
LIVE_SECONDS = 90.0  # the upload becoming a model that answers


class BenchError(RuntimeError):
    """The stack did not start or the model never answered; the message says why."""


@dataclass(frozen=True)
class Load:
    """One level's run: each request's latency (s) and status (0: the connection failed, its
    exception named in ``failures``)."""

    concurrency: int
    latencies: list[float]
    statuses: list[int]
    failures: Counter[str]
    seconds: float

    @property
    def errors(self) -> int:
        return sum(status != 200 for status in self.statuses)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1] * 1e3


@dataclass(frozen=True)
class Target:
    port: int
    path: str
    body: bytes
    headers: dict[str, str]


def generate(target: Target, concurrency: int, requests: int, seconds: float) -> Load:
    """``requests`` requests from ``concurrency`` threads, each on its own keep-alive
    connection, stopping early after ``seconds``."""
    per_client = [
        requests // concurrency + (i < requests % concurrency) for i in range(concurrency)
    ]
    results: list[list[tuple[float, int]]] = [[] for _ in range(concurrency)]
    failures: Counter[str] = Counter()
    start = threading.Barrier(concurrency + 1)
    deadline: list[float] = []

    def client(index: int) -> None:
        timings = results[index]
        connection = http.client.HTTPConnection(HOST, target.port, timeout=30)
        start.wait()
        for _ in range(per_client[index]):
            if time.perf_counter() > deadline[0]:
                break
            sent = time.perf_counter()
            try:
                connection.request("POST", target.path, target.body, target.headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # reconnects on the next request
                failures[type(exc).__name__] += 1
                status = 0
            timings.append((time.perf_counter() - sent, status))
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline.append(began + seconds)
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    done = [timing for timings in results for timing in timings]
    return Load(concurrency, [t for t, _ in done], [s for _, s in done], failures, elapsed)


# -- the floor: a trivial stdlib server ---------------------------------------------------------


def serve_floor(port: int, body_bytes: int) -> None:
    """The floor server (run in its own process): every POST answered with the same JSON."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps({"pad": "x" * max(0, body_bytes - 11)}).encode()

    class Constant(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # no 40 ms wait for the client's delayed ACK
        wbufsize = -1  # head and body leave in one write, at the flush after do_POST

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = socket.SOMAXCONN  # 32 clients connecting at once are all accepted

    server = Server((HOST, port), Constant)
    print("ready", flush=True)
    server.serve_forever()


# -- sluice up, in its own process --------------------------------------------------------------


class _Process(ChildProcess):
    def __init__(self, command: list[str]) -> None:
        super().__init__(
            command,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"},
        )

    def wait_for(self, prefix: str, seconds: float) -> None:
        self.wait(
            lambda lines: any(line.startswith(prefix) for line in lines),
            seconds,
            timed_out=f"no {prefix!r} after {seconds:.0f} s",
            ended="the process ended early",
            error=BenchError,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def running(command: list[str], ready: str) -> Iterator[_Process]:
    process = _Process(command)
    try:
        process.wait_for(ready, START_SECONDS)
        yield process
    finally:
        process.stop()


def sluice_up_command(state_dir: Path, aws_port: int, api_port: int) -> list[str]:
    return [
        sys.executable, "-m", "infra.cli", "up",
        "--aws-port", str(aws_port), "--api-port", str(api_port),
        "--api-key", API_KEY, "--state-dir", str(state_dir),
    ]  # fmt: skip


def _floor_command(port: int, body_bytes: int) -> list[str]:
    code = f"from bench.http import serve_floor; serve_floor({port}, {body_bytes})"
    return [sys.executable, "-c", code]


def go_live(aws_port: int, api_port: int) -> bytes:
    """Upload a contract and a small churn CSV; once the model answers, a one-row predict
    body for it."""
    import boto3

    from infra.topology import Topology
    from tests.builders import churn_frame, contract_bytes, csv_bytes

    topology = Topology(stage="local")
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{HOST}:{aws_port}",
        region_name=topology.region,
        aws_access_key_id="local",  # the local endpoint takes any
        aws_secret_access_key="local",
    )
    bucket = topology.raw_bucket
    s3.put_object(Bucket=bucket, Key=f"{DATASET}/contract.json", Body=contract_bytes())
    frame = churn_frame(TRAINING_ROWS, seed=5)
    s3.put_object(Bucket=bucket, Key=f"{DATASET}/data/bench.csv", Body=csv_bytes(frame))
    connection = http.client.HTTPConnection(HOST, api_port, timeout=30)

    def get(path: str) -> tuple[int, Any]:
        connection.request("GET", path, headers={"x-api-key": API_KEY})
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    deadline = time.monotonic() + LIVE_SECONDS
    while get(f"/v1/models/{DATASET}")[0] != 200:
        if time.monotonic() > deadline:
            raise BenchError(f"no live model {LIVE_SECONDS:.0f} s after the upload")
        time.sleep(0.2)
    _, metadata = get(f"/v1/models/{DATASET}/metadata")
    connection.close()
    features = [feature["name"] for feature in metadata["features"]]
    instance = json.loads(frame[features].head(1).to_json(orient="records"))
    return json.dumps({"instances": instance}).encode()


# -- the section ----------------------------------------------------------------------------------


def measure(quick: bool = False) -> Section:
    from infra.local.stack import free_port

    requests = QUICK_REQUESTS if quick else REQUESTS
    cap = QUICK_LEVEL_SECONDS if quick else LEVEL_SECONDS
    aws_port, api_port, floor_port = free_port(), free_port(), free_port()
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    loads: dict[int, tuple[Load, Load]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sluice-bench-http-") as tmp,
        running(sluice_up_command(Path(tmp) / ".sluice", aws_port, api_port), "ready"),
    ):
        body = go_live(aws_port, api_port)
        sluice = Target(api_port, PREDICT_PATH, body, headers)
        answer = _answer_size(sluice)
        with running(_floor_command(floor_port, answer), "ready"):
            floor = Target(floor_port, PREDICT_PATH, body, headers)
            for target in (sluice, floor):
                generate(target, TARGET_CONCURRENCY, WARMUP_REQUESTS, cap)
            # each level against sluice then the floor, so both see the same machine
            for level in CONCURRENCY:
                loads[level] = (
                    generate(sluice, level, requests[level], cap),
                    generate(floor, level, requests[level], cap),
                )
    return _section(loads, answer)


def _answer_size(target: Target) -> int:
    connection = http.client.HTTPConnection(HOST, target.port, timeout=30)
    connection.request("POST", target.path, target.body, target.headers)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    if response.status != 200:
        raise BenchError(f"the predict request answered {response.status}: {answer!r}")
    return len(answer)


def _section(loads: dict[int, tuple[Load, Load]], answer_bytes: int) -> Section:
    section = Section(
        "http",
        "Local HTTP serving: POST :predict, 1 row, through sluice up's API "
        "(keep-alive clients on loopback)",
    )
    cores = os.cpu_count()
    for level, (sluice, floor) in loads.items():
        errors = f"{sluice.errors} errors in {len(sluice.statuses)} requests" + (
            f" (floor: {floor.errors})" if floor.errors else ""
        )
        p99_sluice, p99_floor = sluice.percentile_ms(99), floor.percentile_ms(99)
        targeted = level == TARGET_CONCURRENCY
        met = p99_sluice <= TARGET_P99_MS and sluice.errors == 0
        note = errors
        if targeted and not met:
            note += f"; the floor server's own p99 here is {p99_floor:.1f} ms"
        section.add(Figure(f"c{level} requests/s", "req/s", sluice.rps, None, floor.rps, "higher"))
        section.add(
            Figure(f"c{level} p50", "ms", sluice.percentile_ms(50), None, floor.percentile_ms(50))
        )
        section.add(
            Figure(
                f"c{level} p99",
                "ms",
                p99_sluice,
                None,
                p99_floor,
                target=f"≤ {TARGET_P99_MS:g} ms, 0 errors" if targeted else None,
                met=met if targeted else None,
                note=note,
            )
        )
    section.details = {
        "cores": cores,
        "answer_bytes": answer_bytes,
        "client": "threads in one process, one keep-alive http.client connection each; it "
        f"shares the {cores} cores with the server",
        "floor": "stdlib ThreadingHTTPServer, constant JSON body of the same size",
        "levels": {
            level: {
                "requests": len(sluice.statuses),
                "errors": sluice.errors,
                "statuses": dict(Counter(sluice.statuses)),
                "failures": dict(sluice.failures),
                "seconds": round(sluice.seconds, 2),
                "max_ms": round(max(sluice.latencies) * 1e3, 2),
                "floor_requests": len(floor.statuses),
            }
            for level, (sluice, floor) in loads.items()
        },
    }
    return section


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
