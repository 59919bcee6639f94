"""Batch predictions stream: the input is read from S3 as it is scored, never downloaded whole,
and the output parts become visible together or not at all (issue 20, part 5).

The real S3 adapter over moto: its byte stream and ranged reads for input, one-part multipart
uploads for the parts, which ``list_multipart_uploads`` shows while they are open.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from functions.batch import logic
from functions.batch.logic import StoreReadError, score_batch
from functions.shared.storage import S3ObjectStore, StagedObject, parse_s3_uri
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, publish_live

RAW = "raw-bucket"
ROOT = Path(__file__).resolve().parents[2]


class NoDownloadStore(S3ObjectStore):
    """The real adapter, refusing the one call a streaming batch must never make."""

    def download(self, bucket: str, key: str, dest: Path, version_id: str | None = None) -> str:
        raise AssertionError(f"s3://{bucket}/{key} was downloaded whole")


class FailingStore(NoDownloadStore):
    """Fails the third part's upload, as a network error or a throttled S3 would."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.staged = 0

    def stage(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/json"
    ) -> StagedObject:
        self.staged += 1
        if self.staged == 3:
            raise ConnectionError("S3 went away while part 3 was uploaded")
        return super().stage(bucket, key, data, content_type)


class _Tripwire(io.RawIOBase):
    """A byte stream that calls ``trip`` once ``limit`` bytes are read, before reading on: a
    ``trip`` that raises is a connection that drops there (and stays down); one that returns
    lets the rest be read."""

    def __init__(self, raw: Any, limit: int, trip: Callable[[], None]) -> None:
        super().__init__()
        self._raw, self._left, self._trip = raw, limit, trip

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            self._trip()
            self._left = sys.maxsize
        data = self._raw.read(min(len(buffer), self._left))
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _drop() -> None:
    raise ConnectionResetError("Connection reset by peer")


class BreakingStreamStore(NoDownloadStore):
    """The object's stream drops its connection 64 KiB in: an OSError, as a real one is. A
    stream resumed part way (a ranged GET) drops at once: the network stays down."""

    resumed_limit = 0

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.starts: list[int] = []

    def open_read(
        self, bucket: str, key: str, *, start: int = 0, if_match: str | None = None
    ) -> BinaryIO:
        self.starts.append(start)
        stream = super().open_read(bucket, key, start=start, if_match=if_match)
        limit = 64 << 10 if start == 0 else self.resumed_limit
        return io.BufferedReader(_Tripwire(stream, limit, _drop))


class FlakyStreamStore(BreakingStreamStore):
    """The connection drops once, 64 KiB in; the resumed stream reads to the end."""

    resumed_limit = 1 << 40


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in (RAW, ARTIFACTS):
            client.create_bucket(Bucket=bucket)
        yield client


def _rows(model: TrainedModel, rows: int) -> pd.DataFrame:
    """``rows`` test rows of the model's features (repeated as needed), with an id column."""
    frame = model.split("test")[[f.name for f in model.card.features]]
    frame = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).head(rows)
    return frame.assign(customer=[f"C{i:06d}" for i in range(rows)])


def _publish(store: S3ObjectStore, model: TrainedModel, registry: InMemoryRegistry) -> int:
    contract = {
        "target": model.card.target,
        "task": model.card.task,
        "metric": model.card.metric,
        "threshold": 0.5,
        "id_column": "customer",
    }
    store.put_bytes(RAW, f"{model.card.dataset}/contract.json", json.dumps(contract).encode())
    return publish_live(store, registry, model)


def _parts(s3: Any, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=ARTIFACTS, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed if o["Key"].endswith(".parquet"))


def _open_uploads(s3: Any) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=ARTIFACTS).get("Uploads", [])]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_streamed_in_many_chunks_gives_the_whole_file_result_byte_for_byte(
    trained_models: dict[str, TrainedModel],
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    # Given a live model and a 3 000-row file read from S3 in 16 KiB CSV blocks (or, as
    # Parquet, by ranged reads of 300-row groups)
    monkeypatch.setattr(logic, "CSV_BLOCK_BYTES", 16 << 10)
    model = trained_models["multiclass"]
    store, registry = NoDownloadStore(s3), InMemoryRegistry()
    version = _publish(store, model, registry)
    frame = _rows(model, 3_000)
    if kind == "csv":
        body = frame.to_csv(index=False).encode()
    else:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, row_group_size=300)
        body = sink.getvalue()
    dataset = model.card.dataset
    key = f"{dataset}/batch/many.{kind}"
    s3.put_object(Bucket=RAW, Key=key, Body=body)

    def streamed() -> list[bytes]:
        outcome = score_batch(
            store, registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key, chunk_rows=250
        )
        assert outcome.status == "scored" and outcome.rows == 3_000, outcome
        parts = _parts(s3, f"{dataset}/predictions/many.{kind}/v{version}/")
        assert [f"s3://{ARTIFACTS}/{p}" for p in parts] == outcome.parts
        return [s3.get_object(Bucket=ARTIFACTS, Key=p)["Body"].read() for p in parts]

    def whole_file() -> list[bytes]:
        """The same file held whole in memory and parsed as one block, as a download was."""
        monkeypatch.setattr(logic, "CSV_BLOCK_BYTES", len(body) + 1)
        memory, memory_registry = InMemoryObjectStore(), InMemoryRegistry()
        memory.put(RAW, f"{dataset}/contract.json", s3.get_object(
            Bucket=RAW, Key=f"{dataset}/contract.json")["Body"].read())  # fmt: skip
        publish_live(memory, memory_registry, model)
        memory.put(RAW, key, body)
        outcome = score_batch(
            memory, memory_registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key,
            chunk_rows=250,
        )  # fmt: skip
        assert outcome.status == "scored", outcome
        return [memory.get_bytes(*parse_s3_uri(uri)) for uri in outcome.parts]

    # When it is streamed from S3, 250 rows a chunk, and scored from the whole file in memory
    parts = streamed()

    # Then the twelve parts are the whole-file result, byte for byte
    assert len(parts) == 12
    assert parts == whole_file()
    table = pa.concat_tables(pq.read_table(io.BytesIO(part)) for part in parts)
    assert table.column("row").to_pylist() == list(range(3_000))
    assert table.column("customer").to_pylist() == frame["customer"].tolist()
    # and no upload is left open, the raw file is as it was, and it was never downloaded
    assert _open_uploads(s3) == []
    assert s3.get_object(Bucket=RAW, Key=key)["Body"].read() == body


@pytest.mark.parametrize(
    "failure", ["bad cell in a later block", "S3 fails on part 3", "S3 stream breaks"]
)
def test_a_failure_mid_stream_leaves_no_output_object_and_no_open_upload(
    trained_models: dict[str, TrainedModel],
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    # Given a 3 000-row CSV read in 16 KiB blocks, 200 rows a chunk, and a failure after
    # several parts were already uploaded
    monkeypatch.setattr(logic, "CSV_BLOCK_BYTES", 16 << 10)
    model = trained_models["binary"]
    stores = {"S3 fails on part 3": FailingStore, "S3 stream breaks": BreakingStreamStore}
    store = stores.get(failure, NoDownloadStore)(s3)
    registry = InMemoryRegistry()
    version = _publish(store, model, registry)
    frame = _rows(model, 3_000)
    numeric = next(f.name for f in model.card.features if f.kind.value == "numeric")
    if failure.startswith("bad cell"):
        frame[numeric] = frame[numeric].astype(object)
        frame.loc[2_500, numeric] = "twelve"
    dataset = model.card.dataset
    key = f"{dataset}/batch/broken.csv"
    s3.put_object(Bucket=RAW, Key=key, Body=frame.to_csv(index=False).encode())

    # When it is scored
    def score() -> str:
        outcome = score_batch(
            store, registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key, chunk_rows=200
        )
        assert outcome.status == "rejected", outcome
        return outcome.reason

    if failure.startswith("bad cell"):
        reason = score()
        # Then the file is refused naming the cell, as before streaming
        assert reason.startswith(f"{key}: cannot read the file: ") and "'twelve'" in reason
        errors = f"{dataset}/predictions/broken.csv/_error.json"
        assert json.loads(s3.get_object(Bucket=ARTIFACTS, Key=errors)["Body"].read())["reason"]
    elif isinstance(store, FailingStore):
        # Then the error reaches the handler (which fails the invocation, so it is retried)
        with pytest.raises(ConnectionError, match="part 3"):
            score()
        assert store.staged == 3
    else:
        # Then a dropped connection is not the file's fault: it is raised, so the invocation is
        # retried, and no _error.json blames the file
        with pytest.raises(StoreReadError, match="reading it from the store failed"):
            score()
        # after as many ranged GETs resuming it as a stream is allowed
        assert isinstance(store, BreakingStreamStore)
        assert len([s for s in store.starts if s > 0]) >= logic._Stream.RESUMES
        errors = f"{dataset}/predictions/broken.csv/_error.json"
        assert s3.list_objects_v2(Bucket=ARTIFACTS, Prefix=errors).get("KeyCount") == 0
    # and no part is visible, no manifest says complete, and no upload is left open
    prefix = f"{dataset}/predictions/broken.csv/v{version}/"
    assert _parts(s3, prefix) == []
    assert s3.list_objects_v2(Bucket=ARTIFACTS, Prefix=prefix).get("KeyCount") == 0
    assert _open_uploads(s3) == []


def test_a_dropped_connection_is_resumed_where_it_broke_and_scores_the_same(
    trained_models: dict[str, TrainedModel], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 3 000-row CSV whose S3 stream drops once, 64 KiB in (a job reads for hours)
    monkeypatch.setattr(logic, "CSV_BLOCK_BYTES", 16 << 10)
    model = trained_models["binary"]
    flaky, registry = FlakyStreamStore(s3), InMemoryRegistry()
    version = _publish(flaky, model, registry)
    dataset = model.card.dataset
    key = f"{dataset}/batch/flaky.csv"
    s3.put_object(Bucket=RAW, Key=key, Body=_rows(model, 3_000).to_csv(index=False).encode())
    prefix = f"{dataset}/predictions/flaky.csv/v{version}/"

    def score(store: S3ObjectStore) -> list[bytes]:
        outcome = score_batch(
            store, registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key, chunk_rows=200
        )
        assert outcome.status == "scored" and outcome.rows == 3_000, outcome
        return [s3.get_object(Bucket=ARTIFACTS, Key=p)["Body"].read() for p in _parts(s3, prefix)]

    # When it is scored through the flaky connection, and again through a sound one
    resumed = score(flaky)
    sound = score(NoDownloadStore(s3))

    # Then each stream (the header's, the file's) was resumed by a ranged GET from the byte it
    # broke at, and the parts are those of the unbroken read, byte for byte
    assert {s for s in flaky.starts if s > 0} == {64 << 10}
    assert len(resumed) == 15 and resumed == sound


class ReplacedMidStreamStore(NoDownloadStore):
    """The object is replaced (another PUT) while its stream is read, 64 KiB in; with
    ``drop``, the connection drops there too, so the read is resumed against the new object."""

    def __init__(self, client: Any, body: bytes, *, drop: bool) -> None:
        super().__init__(client)
        self._body, self._drop, self.replaced = body, drop, False

    def _replace(self, bucket: str, key: str) -> None:
        self._s3.put_object(Bucket=bucket, Key=key, Body=self._body)
        self.replaced = True
        if self._drop:
            raise ConnectionResetError("Connection reset by peer")

    def open_read(
        self, bucket: str, key: str, *, start: int = 0, if_match: str | None = None
    ) -> BinaryIO:
        stream = super().open_read(bucket, key, start=start, if_match=if_match)
        if self.replaced or not key.endswith("moving.csv"):
            return stream
        replace = lambda: self._replace(bucket, key)  # noqa: E731
        return io.BufferedReader(_Tripwire(stream, 64 << 10, replace))


@pytest.mark.parametrize("drop", [False, True], ids=["read to the end", "connection drops"])
def test_a_file_replaced_while_it_is_scored_publishes_nothing_and_blames_nothing(
    trained_models: dict[str, TrainedModel],
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    drop: bool,
) -> None:
    # Given a 3 000-row CSV that another upload replaces while it is read, 64 KiB in
    monkeypatch.setattr(logic, "CSV_BLOCK_BYTES", 16 << 10)
    model = trained_models["binary"]
    replacement = _rows(model, 10).to_csv(index=False).encode()
    store, registry = ReplacedMidStreamStore(s3, replacement, drop=drop), InMemoryRegistry()
    version = _publish(store, model, registry)
    dataset = model.card.dataset
    key = f"{dataset}/batch/moving.csv"
    s3.put_object(Bucket=RAW, Key=key, Body=_rows(model, 3_000).to_csv(index=False).encode())

    # When it is scored
    outcome = score_batch(
        store, registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key, chunk_rows=200
    )

    # Then the old file's scoring is dropped (the replacement's own event scores it): nothing
    # is published, no _error.json blames the new file, and no upload is left open
    assert store.replaced
    assert outcome.status == "ignored" and "replaced or deleted" in outcome.reason, outcome
    listed = s3.list_objects_v2(Bucket=ARTIFACTS, Prefix=f"{dataset}/predictions/")
    assert listed.get("KeyCount") == 0
    assert _open_uploads(s3) == []
    # and the replacement, scored by its own event, is published whole
    again = score_batch(
        store, registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key, chunk_rows=200
    )
    assert again.status == "scored" and again.rows == 10, again
    assert len(_parts(s3, f"{dataset}/predictions/moving.csv/v{version}/")) == 1


def test_a_redelivered_event_gives_the_same_parts_and_leaves_no_upload_open(
    trained_models: dict[str, TrainedModel], s3: Any
) -> None:
    # Given a 1 000-row CSV already scored 300 rows a chunk
    model = trained_models["regression"]
    store, registry = NoDownloadStore(s3), InMemoryRegistry()
    version = _publish(store, model, registry)
    key = f"{model.card.dataset}/batch/again.csv"
    s3.put_object(Bucket=RAW, Key=key, Body=_rows(model, 1_000).to_csv(index=False).encode())
    prefix = f"{model.card.dataset}/predictions/again.csv/v{version}/"

    def deliver() -> list[bytes]:
        outcome = score_batch(
            store, registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key, chunk_rows=300
        )
        assert outcome.status == "scored" and outcome.rows == 1_000, outcome
        return [s3.get_object(Bucket=ARTIFACTS, Key=p)["Body"].read() for p in _parts(s3, prefix)]

    first = deliver()

    # When the same event is delivered twice more
    again = [deliver(), deliver()]

    # Then the same four parts are there, byte for byte, and no upload is open
    assert len(first) == 4 and again == [first, first]
    assert _open_uploads(s3) == []


# -- memory ---------------------------------------------------------------------------------


@pytest.mark.soak  # ≈ 10 s: a moto server, a fresh interpreter and a 72 MB file
def test_peak_memory_is_bounded_by_the_chunk_not_the_file(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a moto server (its memory is not the scorer's) holding a file of 8 chunks, which
    # fills every buffer the reader has (pyarrow reads up to 8 blocks ahead), and one of 120
    # (the allocator's few MB of slack from run to run must be small beside the file's growth)
    from moto.server import ThreadedMotoServer

    from infra.local.stack import free_port

    model = trained_models["binary"]
    chunk_rows, block_bytes = 5_000, 256 << 10
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for bucket in (RAW, ARTIFACTS):
            client.create_bucket(Bucket=bucket)
        registry = InMemoryRegistry()
        _publish(S3ObjectStore(client), model, registry)
        pointer = registry.live(model.card.dataset)
        assert pointer is not None
        sink = io.BytesIO()
        pacsv.write_csv(pa.Table.from_pandas(_rows(model, chunk_rows), preserve_index=False), sink)
        one_chunk = sink.getvalue()
        keys, sizes = [], []
        for name, chunks in (("warm.csv", 8), ("big.csv", 120)):
            body = one_chunk + one_chunk[one_chunk.index(b"\n") + 1 :] * (chunks - 1)
            keys.append(f"{model.card.dataset}/batch/{name}")
            sizes.append(len(body))
            client.put_object(Bucket=RAW, Key=keys[-1], Body=body)

        # When a fresh interpreter scores the first file, then the second, in 256 KiB blocks
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.integration.batch_memory_child",
                endpoint,
                pointer.model_dump_json(),
                str(chunk_rows),
                str(block_bytes),
                *keys,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        warm_peak, big_peak = json.loads(done.stdout.strip().splitlines()[-1])["peaks"]
        listed = client.list_objects_v2(Bucket=ARTIFACTS, Prefix=f"{model.card.dataset}/")
        big_parts = [
            o for o in listed["Contents"] if "/big.csv/" in o["Key"] and "/part-" in o["Key"]
        ]
    finally:
        server.stop()

    # Then every chunk was scored, and the 112 chunks more raised the peak by far less than the
    # file grew: holding the file, or its parsed table, would add at least that
    extra = sizes[1] - sizes[0]
    assert len(big_parts) == 120 and extra > 60e6
    grew = big_peak - warm_peak
    print(f"peak RSS {warm_peak / 1e6:.0f} MB after {sizes[0] / 1e6:.1f} MB, "
          f"{big_peak / 1e6:.0f} MB after {sizes[1] / 1e6:.1f} MB")  # fmt: skip
    assert grew < extra / 5, f"peak RSS grew {grew / 1e6:.1f} MB for {extra / 1e6:.1f} MB more file"
