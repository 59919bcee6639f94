"""The scorer of test_batch_streaming's memory test, in a fresh interpreter that imports only
what the batch function does (plus the in-memory registry fake), so its peak RSS is the batch
function's: ``python -m tests.integration.batch_memory_child ENDPOINT POINTER_JSON CHUNK_ROWS
CSV_BLOCK_BYTES KEY…``
scores each key in turn and prints the peak RSS after each, as JSON."""

from __future__ import annotations

import importlib.abc
import json
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# Not in the batch function's layer (pyproject.toml's `batch` extra): the scorer must work
# without them. pyarrow imports pandas lazily when it is installed; here, as in the layer, it
# finds none and does without.
LAYER_LACKS = ("pandas", "sklearn", "scipy")


class _NotInTheLayer(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.split(".")[0] in LAYER_LACKS:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the batch layer)")
        return None


assert not set(LAYER_LACKS) & set(sys.modules), "imported before the batch layer was mimicked"
sys.meta_path.insert(0, _NotInTheLayer())

import boto3  # noqa: E402

from functions.batch import logic  # noqa: E402
from functions.batch.logic import score_batch  # noqa: E402
from functions.shared.registry import LivePointer  # noqa: E402
from functions.shared.storage import S3ObjectStore  # noqa: E402
from tests.fakes import InMemoryRegistry  # noqa: E402


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
