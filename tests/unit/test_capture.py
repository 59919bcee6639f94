"""Inference capture: sampling, PII exclusion, batching by size, age and hour, the key layout and
the gzip'd JSON Lines format, the buffer cap, failing uploads, concurrency and the import graph.

Buffers are built with ``background=False`` (only ``flush`` writes) unless a test is about the
flusher thread, and with a hand-moved clock, so nothing here sleeps except those thread tests.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from functions.inference.capture import (
    CONTENT_TYPE,
    ENV_VARS,
    CaptureBuffer,
    CaptureSettings,
    capture_key,
)
from functions.shared.layout import TELEMETRY_TAGS, capture_hour_prefix, capture_prefix
from tests.fakes import FailingObjectStore, InMemoryObjectStore

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "capture-bucket"
DATASET = "churn"
# 2026-11-22T10:15:30.250Z
T0 = datetime(2026, 11, 22, 10, 15, 30, 250_000, tzinfo=UTC).timestamp()


class Clock:
    """Epoch seconds the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(**overrides: Any) -> CaptureSettings:
    values: dict[str, Any] = {"bucket": BUCKET, "sample_rate": 1.0, **overrides}
    return CaptureSettings.model_validate(values)


def buffer(
    store: InMemoryObjectStore, clock: Callable[[], float] | None = None, **overrides: Any
) -> CaptureBuffer:
    return CaptureBuffer(
        settings(**overrides), store, clock=clock or Clock(), rng=random.Random(7), background=False
    )


def row(i: int = 0) -> dict[str, Any]:
    return {"age": 30 + i, "plan": "basic", "email": f"user{i}@example.com", "ssn": "123-45-6789"}


def prediction(i: int = 0) -> dict[str, Any]:
    return {"label": "yes", "probabilities": {"no": 0.25, "yes": 0.75}, "i": i}


def lines(store: InMemoryObjectStore, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(store.get_bytes(BUCKET, key)).splitlines()]


def all_lines(store: InMemoryObjectStore) -> Iterator[dict[str, Any]]:
    for key in store.keys(BUCKET):
        yield from lines(store, key)


# --- settings ----------------------------------------------------------------------------------


def test_settings_come_from_capture_environment_variables() -> None:
    # Given every CAPTURE_* variable set
    env = {
        "CAPTURE_BUCKET": "b",
        "CAPTURE_SAMPLE_RATE": "0.25",
        "CAPTURE_EXCLUDE": " email, ssn ,,",
        "CAPTURE_MAX_RECORDS": "500",
        "CAPTURE_MAX_AGE_SECONDS": "30",
        "CAPTURE_MAX_BUFFER_RECORDS": "2000",
        "CAPTURE_PREFIX": "inference/{dataset}/",
        "CAPTURE_FLUSH_INTERVAL_SECONDS": "0.5",
        "UNRELATED": "x",
    }

    # When settings are read from them
    read = CaptureSettings.from_env(env)

    # Then each variable lands in its field and capture is on
    assert set(ENV_VARS.values()) == set(env) - {"UNRELATED"}
    assert read == CaptureSettings(
        bucket="b",
        sample_rate=0.25,
        exclude=frozenset({"email", "ssn"}),
        max_records=500,
        max_age_seconds=30,
        max_buffer_records=2000,
        prefix="inference/{dataset}/",
        flush_interval_seconds=0.5,
    )
    assert read.enabled


def test_capture_is_off_without_a_bucket_or_at_rate_zero() -> None:
    assert CaptureSettings.from_env({}) == CaptureSettings()
    assert CaptureSettings().sample_rate == 0.1
    assert not CaptureSettings.from_env({}).enabled
    assert not CaptureSettings.from_env({"CAPTURE_BUCKET": "  "}).enabled
    assert not CaptureSettings.from_env({"CAPTURE_BUCKET": "b", "CAPTURE_SAMPLE_RATE": "0"}).enabled


@pytest.mark.parametrize(
    "env",
    [
        {"CAPTURE_SAMPLE_RATE": "1.5"},
        {"CAPTURE_SAMPLE_RATE": "often"},
        {"CAPTURE_MAX_RECORDS": "0"},
        {"CAPTURE_PREFIX": "{dataset}/{model}/"},
        {"CAPTURE_PREFIX": "/{dataset}/capture/"},
        {"CAPTURE_PREFIX": "{dataset}/capture"},
    ],
)
def test_bad_settings_fail_at_cold_start(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        CaptureSettings.from_env({"CAPTURE_BUCKET": "b", **env})


# --- sampling ----------------------------------------------------------------------------------


def test_the_sample_rate_is_honoured() -> None:
    # Given a buffer sampling 10% with a seeded generator
    store = InMemoryObjectStore()
    capture = buffer(store, sample_rate=0.1, max_buffer_records=100_000)

    # When 10 000 requests are offered
    taken = sum(capture.offer(DATASET, "3", f"r{i}", [row(i)], [0.5]) for i in range(10_000))

    # Then about a tenth was sampled, and nothing written before a flush
    stats = capture.stats()
    assert 900 <= taken <= 1100
    assert stats.offered == 10_000
    assert stats.sampled == stats.sampled_records == stats.buffered == taken
    assert store.keys(BUCKET) == []


@pytest.mark.parametrize("overrides", [{"sample_rate": 0.0}, {"bucket": None}])
def test_disabled_capture_keeps_nothing_and_starts_no_thread(overrides: dict[str, Any]) -> None:
    # Given capture at rate 0, or without a bucket, with the background thread allowed
    store = InMemoryObjectStore()
    capture = CaptureBuffer(settings(**overrides), store, clock=Clock(), rng=random.Random(1))

    # When requests are offered and the buffer flushed
    taken = [capture.offer(DATASET, "3", f"r{i}", [row(i)], [0.5]) for i in range(1000)]
    assert not capture.maybe_flush_async()
    capture.flush()

    # Then none was sampled, no thread started and nothing written
    assert not any(taken)
    assert not capture.thread_started
    assert not any(t.name == "sluice-capture" for t in threading.enumerate())
    assert store.keys(BUCKET) == []
    assert capture.stats().offered == 1000
    assert capture.stats().sampled == 0


# --- what is written ---------------------------------------------------------------------------


def test_a_batch_is_one_gzip_json_lines_object_under_hive_partitions() -> None:
    # Given two requests captured at a known time, one with two instances
    store = InMemoryObjectStore()
    clock = Clock()
    capture = buffer(store, clock)
    capture.offer(DATASET, "3", "req-a", [row(0), row(1)], [prediction(0), prediction(1)])
    clock.advance(1.5)
    capture.offer(DATASET, "3", "req-b", [row(2)], [prediction(2)])

    # When the buffer is flushed
    written = capture.flush(force=True)

    # Then one object holds three lines, one per instance, under the dataset's dt/hr partition
    assert written == 1
    (key,) = store.keys(BUCKET)
    assert re.fullmatch(
        r"churn/capture/dt=2026-11-22/hr=10/3-20261122T101530Z-[0-9a-f]{32}\.jsonl\.gz", key
    )
    assert key.startswith(capture_hour_prefix(DATASET, datetime.fromtimestamp(T0, UTC)))
    assert lines(store, key) == [
        {
            "request_id": "req-a",
            "index": 0,
            "at": "2026-11-22T10:15:30.250Z",
            "model_version": "3",
            "instance": row(0),
            "prediction": prediction(0),
        },
        {
            "request_id": "req-a",
            "index": 1,
            "at": "2026-11-22T10:15:30.250Z",
            "model_version": "3",
            "instance": row(1),
            "prediction": prediction(1),
        },
        {
            "request_id": "req-b",
            "index": 0,
            "at": "2026-11-22T10:15:31.750Z",
            "model_version": "3",
            "instance": row(2),
            "prediction": prediction(2),
        },
    ]
    stats = capture.stats()
    assert (stats.written_objects, stats.written_records, stats.buffered) == (1, 3, 0)


def test_the_prefix_template_places_batches() -> None:
    store = InMemoryObjectStore()
    capture = buffer(store, prefix="inference/{dataset}/")
    capture.offer(DATASET, "3", "r", [row()], [0.5])
    capture.flush()
    (key,) = store.keys(BUCKET)
    assert key.startswith("inference/churn/dt=2026-11-22/hr=10/3-")


def test_excluded_columns_are_absent_from_every_line() -> None:
    # Given a buffer excluding two PII columns
    store = InMemoryObjectStore()
    capture = buffer(store, exclude={"email", "ssn"}, max_records=7)

    # When requests of several sizes are captured and written
    for i in range(20):
        capture.offer(
            DATASET, "3", f"r{i}", [row(j) for j in range(i % 4 + 1)], [0.5] * (i % 4 + 1)
        )
    capture.flush()

    # Then no line holds them, and every other column is kept
    written = list(all_lines(store))
    assert len(written) == sum(i % 4 + 1 for i in range(20))
    assert all(set(line["instance"]) == {"age", "plan"} for line in written)
    assert not any(
        b"example.com" in gzip.decompress(store.get_bytes(BUCKET, k)) for k in store.keys(BUCKET)
    )


def test_the_caller_may_reuse_its_instances_after_offering_them() -> None:
    store = InMemoryObjectStore()
    capture = buffer(store)
    instances, predictions = [row()], [0.5]
    capture.offer(DATASET, "3", "r", instances, predictions)
    instances[0]["age"] = -1
    predictions[0] = -1.0
    capture.flush()
    (line,) = all_lines(store)
    assert (line["instance"]["age"], line["prediction"]) == (30, 0.5)


def test_values_that_are_not_json_are_still_written() -> None:
    # Given a prediction holding numpy values and a non-finite number
    store = InMemoryObjectStore()
    capture = buffer(store)
    capture.offer(
        DATASET, "3", "r", [{"x": np.float32(1.5), "n": np.int64(4)}], [[np.nan, np.array([1, 2])]]
    )

    # When it is written
    capture.flush()

    # Then numpy values become their JSON counterparts and NaN becomes null
    (line,) = all_lines(store)
    assert line["instance"] == {"x": 1.5, "n": 4}
    assert line["prediction"] == [None, [1, 2]]


def test_batches_are_split_per_model_version_and_dataset() -> None:
    store = InMemoryObjectStore()
    capture = buffer(store)
    capture.offer(DATASET, "3", "a", [row()], [0.5])
    capture.offer(DATASET, "4", "b", [row()], [0.5])
    capture.offer("fraud", "3", "c", [row()], [0.5])
    assert capture.flush() == 3
    keys = store.keys(BUCKET)
    assert [k.split("/")[0] for k in keys] == ["churn", "churn", "fraud"]
    assert [k.rsplit("/", 1)[1].split("-")[0] for k in keys] == ["3", "4", "3"]
    assert {line["request_id"]: line["model_version"] for line in all_lines(store)} == {
        "a": "3",
        "b": "4",
        "c": "3",
    }


def test_a_batch_spanning_an_hour_boundary_is_written_under_each_hour() -> None:
    store = InMemoryObjectStore()
    clock = Clock(datetime(2026, 11, 22, 10, 59, 59, tzinfo=UTC).timestamp())
    capture = buffer(store, clock)
    capture.offer(DATASET, "3", "before", [row()], [0.5])
    clock.advance(2)
    capture.offer(DATASET, "3", "after", [row()], [0.5])
    assert capture.flush() == 2
    hours = {key.split("/")[3]: lines(store, key)[0]["request_id"] for key in store.keys(BUCKET)}
    assert hours == {"hr=10": "before", "hr=11": "after"}


# --- when batches are written ------------------------------------------------------------------


def test_batches_are_split_at_max_records() -> None:
    # Given a buffer of at most 10 records per object
    store = InMemoryObjectStore()
    capture = buffer(store, max_records=10)

    # When 9 records are held, nothing is due; at 25 (one request of 12 instances among them)
    for i in range(9):
        capture.offer(DATASET, "3", f"r{i}", [row(i)], [0.5])
    assert capture.flush(force=False) == 0
    capture.offer(DATASET, "3", "big", [row(j) for j in range(12)], [0.5] * 12)
    for i in range(9, 13):
        capture.offer(DATASET, "3", f"r{i}", [row(i)], [0.5])

    # Then a flush writes them all, in objects of at most 10 lines
    assert capture.flush(force=False) == 3
    sizes = sorted(len(lines(store, key)) for key in store.keys(BUCKET))
    assert sizes == [5, 10, 10]
    big = sorted(line["index"] for line in all_lines(store) if line["request_id"] == "big")
    assert big == list(range(12))


def test_a_batch_is_written_once_it_reaches_max_age() -> None:
    # Given a buffer writing batches a minute old, and one request captured
    store = InMemoryObjectStore()
    clock = Clock()
    capture = buffer(store, clock, max_age_seconds=60)
    capture.offer(DATASET, "3", "r0", [row()], [0.5])

    # When 59 s pass nothing is due; at 60 s the batch is
    clock.advance(59)
    capture.offer(DATASET, "3", "r1", [row()], [0.5])
    assert capture.flush(force=False) == 0
    assert store.keys(BUCKET) == []
    clock.advance(1)
    assert capture.flush(force=False) == 1

    # Then both requests went out together, and a later request starts a new batch
    assert sorted(line["request_id"] for line in all_lines(store)) == ["r0", "r1"]
    capture.offer(DATASET, "3", "r2", [row()], [0.5])
    assert capture.flush(force=False) == 0
    assert capture.stats().buffered == 1


def test_beyond_the_buffer_cap_requests_are_dropped_and_counted() -> None:
    # Given a buffer holding at most 5 records
    store = InMemoryObjectStore()
    capture = buffer(store, max_buffer_records=5, max_records=100)

    # When 3 + 3 records are offered, then 2
    assert capture.offer(DATASET, "3", "a", [row()] * 3, [0.5] * 3)
    assert not capture.offer(DATASET, "3", "b", [row()] * 3, [0.5] * 3)
    assert capture.offer(DATASET, "3", "c", [row()] * 2, [0.5] * 2)

    # Then the request that did not fit is dropped whole, and counted
    stats = capture.stats()
    assert (stats.sampled, stats.sampled_records, stats.dropped, stats.buffered) == (3, 8, 3, 5)

    # And the full buffer is written whole, though no batch is due by size or age
    assert capture.maybe_flush_async()
    assert capture.flush(force=False) == 1
    assert sorted({line["request_id"] for line in all_lines(store)}) == ["a", "c"]
    assert capture.stats().buffered == 0
    assert capture.offer(DATASET, "3", "d", [row()] * 5, [0.5] * 5)  # room again
    assert not capture.maybe_flush_async()


def test_a_malformed_offer_is_dropped_without_raising() -> None:
    store = InMemoryObjectStore()
    capture = buffer(store)
    assert not capture.offer(DATASET, "3", "r", [row(), row()], [0.5])
    assert not capture.offer(DATASET, "3", "r", ["not a dict"], [0.5])  # type: ignore[list-item]
    stats = capture.stats()
    assert (stats.sampled, stats.dropped, stats.buffered) == (2, 3, 0)


def test_a_batch_that_cannot_be_keyed_is_dropped_without_raising() -> None:
    store = InMemoryObjectStore()
    capture = buffer(store)
    capture.offer(DATASET, "../3", "r", [row()], [0.5])
    capture.offer("no/such dataset", "3", "r", [row()], [0.5])
    assert capture.flush() == 0
    assert capture.stats().dropped == 2
    assert store.keys(BUCKET) == []


# --- failing uploads ---------------------------------------------------------------------------


def test_a_failing_store_never_raises_and_each_batch_gets_two_attempts() -> None:
    # Given a store that refuses every upload
    store = FailingObjectStore()
    capture = buffer(store, max_records=2)

    # When requests are captured and flushed, unforced (the thread's way) then again
    for i in range(3):
        assert capture.offer(DATASET, "3", f"r{i}", [row(i)], [0.5])
    assert capture.flush(force=False) == 0
    assert capture.stats().buffered == 3
    assert capture.maybe_flush_async()  # the retry is due
    assert capture.flush(force=False) == 0

    # Then each object was tried twice under the same key, then dropped, and counted
    assert len(store.attempts) == 4
    assert len(set(store.attempts)) == 2
    stats = capture.stats()
    assert (stats.failed, stats.dropped, stats.written_records, stats.buffered) == (4, 3, 0, 0)
    assert capture.flush() == 0
    assert len(store.attempts) == 4


def test_a_forced_flush_retries_a_failed_upload_at_once() -> None:
    store = FailingObjectStore(failures=1)
    capture = buffer(store)
    capture.offer(DATASET, "3", "r", [row()], [0.5])
    assert capture.flush(force=True) == 1
    assert store.attempts[0] == store.attempts[1]
    assert store.keys(BUCKET) == [store.attempts[0]]
    stats = capture.stats()
    assert (stats.failed, stats.dropped, stats.written_records) == (1, 0, 1)


def test_uploads_are_tagged_to_expire() -> None:
    # Given a capture buffer over a store
    store = InMemoryObjectStore()
    capture = buffer(store)

    # When a request is captured and flushed
    capture.offer(DATASET, "3", "r", [row()], [0.5])
    capture.flush()

    # Then its object carries the tag the artifacts bucket's lifecycle rule expires
    [written] = store.tags
    assert store.tags[written] == TELEMETRY_TAGS


def test_uploads_are_gzip_content() -> None:
    class Recording(InMemoryObjectStore):
        content_types: list[str] = []  # noqa: RUF012

        def put_bytes(
            self,
            bucket: str,
            key: str,
            data: bytes,
            content_type: str = "application/json",
            tags: Mapping[str, str] | None = None,
        ) -> None:
            self.content_types.append(content_type)
            super().put_bytes(bucket, key, data, content_type, tags)

    store = Recording()
    capture = buffer(store)
    capture.offer(DATASET, "3", "r", [row()], [0.5])
    capture.flush()
    assert store.content_types == [CONTENT_TYPE] == ["application/gzip"]


# --- the flusher thread ------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_maybe_flush_async_wakes_the_thread_when_a_batch_is_due() -> None:
    # Given the flusher thread, asleep for an hour between its own looks
    store = InMemoryObjectStore()
    clock = Clock()
    capture = CaptureBuffer(
        settings(flush_interval_seconds=3600, max_age_seconds=60), store, clock=clock
    )
    try:
        capture.offer(DATASET, "3", "r", [row()], [0.5])
        assert capture.thread_started

        # When nothing is due, it is not woken; once the batch is a minute old, it is
        assert not capture.maybe_flush_async()
        clock.advance(60)
        assert capture.maybe_flush_async()

        # Then the thread writes the batch without anyone calling flush
        assert wait_for(lambda: capture.stats().written_objects == 1)
    finally:
        capture.close()


def test_reaching_max_records_wakes_the_thread() -> None:
    store = InMemoryObjectStore()
    capture = CaptureBuffer(settings(flush_interval_seconds=3600, max_records=5), store)
    try:
        for i in range(5):
            capture.offer(DATASET, "3", f"r{i}", [row(i)], [0.5])
        assert wait_for(lambda: capture.stats().written_records == 5)
    finally:
        capture.close()


def test_concurrent_offers_are_each_written_exactly_once() -> None:
    # Given a buffer whose thread flushes small batches every 10 ms
    store = InMemoryObjectStore()
    capture = CaptureBuffer(
        settings(sample_rate=0.5, max_records=50, flush_interval_seconds=0.01),
        store,
        rng=random.Random(3),
    )
    barrier = threading.Barrier(8)
    taken: list[list[tuple[str, int]]] = [[] for _ in range(8)]

    def offer(worker: int) -> None:
        barrier.wait()
        for i in range(400):
            request_id = f"w{worker}-r{i}"
            count = i % 3 + 1
            if capture.offer(
                DATASET, "3", request_id, [row(j) for j in range(count)], [0.5] * count
            ):
                taken[worker].extend((request_id, j) for j in range(count))

    # When 8 threads offer at once while it flushes, then the buffer is closed
    threads = [threading.Thread(target=offer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    capture.close()

    # Then every sampled record was written exactly once, and the counters agree
    written = [(line["request_id"], line["index"]) for line in all_lines(store)]
    expected = [record for records in taken for record in records]
    assert len(written) == len(set(written))
    assert sorted(written) == sorted(expected)
    stats = capture.stats()
    assert stats.offered == 3200
    assert stats.sampled_records == stats.written_records == len(expected)
    assert (stats.dropped, stats.failed, stats.buffered) == (0, 0, 0)
    assert all(len(lines(store, key)) <= 50 for key in store.keys(BUCKET))


# --- the key layout ----------------------------------------------------------------------------


def test_key_layout() -> None:
    assert capture_prefix("churn") == "churn/capture/"
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert capture_hour_prefix("churn", moment) == "churn/capture/dt=2026-01-02/hr=03/"
    assert (
        capture_key("churn", "12", moment.timestamp(), "ab" * 16)
        == "churn/capture/dt=2026-01-02/hr=03/12-20260102T030405Z-" + "ab" * 16 + ".jsonl.gz"
    )
    for dataset, version in (("..", "1"), ("a/b", "1"), ("churn", "1/2"), ("churn", "")):
        with pytest.raises(ValueError, match="not a"):
            capture_key(dataset, version, moment.timestamp(), "u")


# --- the import graph --------------------------------------------------------------------------

IMPORTS = """
import json, sys
before = set(sys.modules)
import functions.inference.capture
print(json.dumps(sorted(set(sys.modules) - before)))
"""
ALLOWED = {"numpy", "pydantic", "pydantic_core", "typing_extensions", "annotated_types"}
ALLOWED |= {"typing_inspection"}  # pydantic's own dependencies
OWN = {
    "functions",
    "functions.inference",
    "functions.inference.capture",
    "functions.shared",
    "functions.shared.errors",  # storage's ObjectNotFoundError; errors.py imports nothing
    "functions.shared.layout",
    "functions.shared.storage",
}


def test_the_module_imports_only_stdlib_numpy_and_pydantic() -> None:
    # When a fresh interpreter imports the capture module
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported = json.loads(result.stdout)

    # Then everything it brought in is the standard library, pydantic, or sluice's stdlib ports
    outside = [
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names | ALLOWED | {"functions"}
        and not name.startswith("_sysconfigdata")
    ]
    assert outside == []
    assert {name for name in imported if name.split(".")[0] == "functions"} <= OWN
    assert "functions.inference.capture" in imported
