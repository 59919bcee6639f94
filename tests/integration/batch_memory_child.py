"""The scorer of test_batch_streaming's memory test, in a fresh interpreter that imports only
what the batch function does (plus the in-memory registry fake), so its peak RSS is the batch
function's: ``python -m tests.integration.batch_memory_child ENDPOINT POINTER_JSON CHUNK_ROWS
CSV_BLOCK_BYTES KEY…``
scores each key in turn and prints the peak RSS after each, as JSON."""

from __future__ import annotations

import json
import sys

import boto3

from functions.batch import logic
from functions.batch.logic import score_batch
from functions.shared.registry import LivePointer
from functions.shared.storage import S3ObjectStore
from tests.fakes import InMemoryRegistry


class OneLiveModel(InMemoryRegistry):
    """The registry as the batch function reads it: one live pointer."""

    def __init__(self, pointer: LivePointer) -> None:
        super().__init__()
        self.pointer = pointer

    def live(self, dataset: str) -> LivePointer | None:
        return self.pointer if dataset == self.pointer.dataset else None


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which starts afresh at exec; ``ru_maxrss`` does
    not (it keeps the forking parent's RSS, a whole pytest process)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def main(endpoint: str, pointer: str, chunk_rows: str, block_bytes: str, *keys: str) -> None:
    logic.CSV_BLOCK_BYTES = int(block_bytes)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    store, registry = S3ObjectStore(client), OneLiveModel(LivePointer.model_validate_json(pointer))
    peaks = []
    for key in keys:
        outcome = score_batch(
            store,
            registry,
            raw_bucket="raw-bucket",
            artifacts_bucket="artifacts-bucket",  # tests.models.ARTIFACTS
            key=key,
            chunk_rows=int(chunk_rows),
        )
        assert outcome.status == "scored", outcome
        peaks.append(peak_rss())
    print(json.dumps({"peaks": peaks}))


if __name__ == "__main__":
    main(*sys.argv[1:])
