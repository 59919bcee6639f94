"""Time inference capture: what ``CaptureBuffer`` adds to a request, and what a flush costs.

``python -m bench.capture``. Per request, in µs (median of repeated timed loops, so the timer's
own cost is amortised):

- **offer, not sampled**: capture on, the draw says no: what 90% of requests pay at rate 0.1
  (and every request when capture is off: same path);
- **offer, sampled**: 1 and 100 instances of a churn-like row (6 numbers, 2 strings) with a
  classifier's prediction, without and with two excluded columns;
- **maybe_flush_async**: the call the handler makes as each invocation starts, with nothing held
  and with a batch held that is not due.

Then one flush of 1000 held records (1000 one-instance requests, and 10 of 100 instances):
serialise, gzip and a put into a store that keeps the bytes. This runs on the flusher thread,
never in a request, but serialising holds the GIL. ``--contention`` also times a stand-in
request (100 µs of Python every 0.5 ms) alone and while another thread flushes: what a request
that arrives during a flush waits for the GIL (the flusher yields every ``YIELD_EVERY`` lines).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from functions.inference.capture import CaptureBuffer, CaptureSettings
from tests.fakes import InMemoryObjectStore

DATASET = "churn"
VERSION = "3"
REPEATS = 15


def rows(count: int, seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Instances as a client sends them and predictions as the API answers them."""
    rng = random.Random(seed)
    instances = [
        {
            **{f"num_{i}": rng.gauss(0, 10) for i in range(6)},
            "plan": rng.choice(["basic", "standard", "premium"]),
            "region": f"region {rng.randrange(12)}",
        }
        for _ in range(count)
    ]
    predictions: list[dict[str, Any]] = []
    for _ in range(count):
        yes = rng.random()
        predictions.append(
            {"label": "yes" if yes > 0.5 else "no", "probabilities": {"no": 1 - yes, "yes": yes}}
        )
    return instances, predictions


def make_buffer(rate: float, exclude: frozenset[str] = frozenset()) -> CaptureBuffer:
    settings = CaptureSettings(
        bucket="bench",
        sample_rate=rate,
        exclude=exclude,
        max_records=1000,
        max_buffer_records=10_000_000,
    )
    return CaptureBuffer(settings, InMemoryObjectStore(), rng=random.Random(1), background=False)


def per_call(call: Callable[[], object], calls: int, reset: Callable[[], object]) -> float:
    """Median µs per call over ``REPEATS`` timed loops of ``calls`` calls, ``reset`` untimed
    between loops (to empty the buffer, so each loop times the same path)."""
    for _ in range(min(calls, 100)):
        call()
    reset()
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()
        timings.append((time.perf_counter_ns() - started) / calls / 1000)
        reset()
    return statistics.median(timings)


def offers() -> list[tuple[str, float]]:
    results = []
    one, one_pred = rows(1)
    hundred, hundred_pred = rows(100)

    quiet = make_buffer(1e-12)
    results.append(
        (
            "offer, not sampled",
            per_call(lambda: quiet.offer(DATASET, VERSION, "r", one, one_pred), 20_000, int),
        )
    )
    for exclude in (frozenset(), frozenset({"plan", "region"})):
        capture = make_buffer(1.0, exclude)
        reset = capture.flush  # untimed: keeps each loop on an emptied buffer
        label = ", 2 columns excluded" if exclude else ""
        results.append(
            (
                f"offer, sampled, 1 instance{label}",
                per_call(lambda: capture.offer(DATASET, VERSION, "r", one, one_pred), 2000, reset),  # noqa: B023
            )
        )
        results.append(
            (
                f"offer, sampled, 100 instances{label}",
                per_call(
                    lambda: capture.offer(DATASET, VERSION, "r", hundred, hundred_pred),  # noqa: B023
                    100,
                    reset,
                ),
            )
        )
    empty = make_buffer(1.0)
    results.append(
        ("maybe_flush_async, nothing held", per_call(empty.maybe_flush_async, 20_000, int))
    )
    held = make_buffer(1.0)
    held.offer(DATASET, VERSION, "r", one, one_pred)
    results.append(
        ("maybe_flush_async, 1 batch held, not due", per_call(held.maybe_flush_async, 20_000, int))
    )
    return results


def flushes() -> list[tuple[str, float, int, int]]:
    """(label, ms per flush, objects, gzip'd bytes) for 1000 records held two ways."""
    results = []
    for label, count, size in (("1000 × 1 instance", 1000, 1), ("10 × 100 instances", 10, 100)):
        instances, predictions = rows(1000, seed=11)  # distinct rows: a realistic gzip ratio
        timings = []
        store = InMemoryObjectStore()
        for _ in range(REPEATS):
            capture = CaptureBuffer(
                CaptureSettings(bucket="bench", sample_rate=1.0, max_records=1000),
                store,
                background=False,
            )
            for i in range(count):
                part = slice(i * size, (i + 1) * size)
                capture.offer(
                    DATASET, VERSION, f"request-{i:08d}", instances[part], predictions[part]
                )
            store.objects.clear()
            started = time.perf_counter_ns()
            capture.flush()
            timings.append((time.perf_counter_ns() - started) / 1e6)
        sizes = [len(data) for versions in store.objects.values() for data, _ in versions]
        results.append((f"flush, {label}", statistics.median(timings), len(sizes), sum(sizes)))
    return results


def held_buffer(instances: list[dict[str, Any]], predictions: list[Any]) -> CaptureBuffer:
    capture = make_buffer(1.0)
    for i, (instance, prediction) in enumerate(zip(instances, predictions, strict=True)):
        capture.offer(DATASET, VERSION, f"request-{i:08d}", [instance], [prediction])
    return capture


def request_work() -> int:
    """About 100 µs of pure Python, standing in for a warm predict."""
    total = 0
    for i in range(2500):
        total += i
    return total


def flush_every(buffers: list[CaptureBuffer], stop: threading.Event, interval: float) -> None:
    while buffers and not stop.wait(interval):
        buffers.pop().flush()


def contention(seconds: float = 4.0) -> list[tuple[str, float, float, float]]:
    """(label, median, p99, p99.9) µs of a stand-in request started every 0.5 ms, timed from
    before its sleep so that the wait for the GIL counts, alone and with a flush of 1000
    records every 50 ms on another thread (far more often than a real flusher writes)."""
    instances, predictions = rows(1000, seed=11)
    results = []
    for label, flushing in (("requests alone", False), ("requests, a flush every 50 ms", True)):
        buffers = [held_buffer(instances, predictions) for _ in range(int(seconds / 0.05) + 2)]
        stop = threading.Event()

        thread = threading.Thread(target=flush_every, args=(buffers, stop, 0.05), daemon=True)
        if flushing:
            thread.start()
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter_ns()
            time.sleep(0.0005)
            request_work()
            latencies.append((time.perf_counter_ns() - started) / 1000 - 500)
        stop.set()
        if flushing:
            thread.join()
        latencies.sort()
        p99, p999 = (
            latencies[min(len(latencies) - 1, int(len(latencies) * q))] for q in (0.99, 0.999)
        )
        results.append((label, statistics.median(latencies), p99, p999))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--contention",
        action="store_true",
        help="also time a stand-in request while another thread flushes (noisy; 8 s)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; median of {REPEATS} loops")
    print(f"{'per request':<50}  {'µs':>8}")
    for label, micros in offers():
        print(f"{label:<50}  {micros:>8.2f}")
    heading = "per flush (1000 records, flusher thread)"
    print(f"{heading:<50}  {'ms':>8}  {'objects':>7}  {'gzip KiB':>8}")
    for label, millis, objects, size in flushes():
        print(f"{label:<50}  {millis:>8.2f}  {objects:>7}  {size / 1024:>8.1f}")
    if args.contention:
        heading = "a 100 µs request, GIL wait included"
        print(f"{heading:<50}  {'med µs':>8}  {'p99':>7}  {'p99.9':>8}")
        for label, median, p99, p999 in contention():
            print(f"{label:<50}  {median:>8.0f}  {p99:>7.0f}  {p999:>8.0f}")
    print(f"bench seconds: {time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
