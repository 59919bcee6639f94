"""In-memory fakes for the ports: fast, honest, and with no mocking of call signatures."""

from __future__ import annotations

import hashlib
from pathlib import Path

from functions.shared.orchestration import Orchestrator, RunInput, RunStart
from functions.shared.storage import ObjectInfo, ObjectStore


class InMemoryObjectStore(ObjectStore):
    """A versioned bucket store: every put is a new version, like S3 with versioning on."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], list[tuple[bytes, str]]] = {}
        self.writes: list[tuple[str, str]] = []

    def put(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        versions = self.objects.setdefault((bucket, key), [])
        versions.append((data, f"v{len(versions) + 1}"))
        self.writes.append((bucket, key))
        info = self.head(bucket, key)
        assert info is not None
        return info

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        versions = self.objects.get((bucket, key))
        if not versions:
            return None
        data, version = versions[-1]
        return ObjectInfo(bucket, key, len(data), hashlib.md5(data).hexdigest(), version)

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        found = [self.head(b, k) for (b, k) in self.objects if b == bucket and k.startswith(prefix)]
        return sorted((o for o in found if o is not None), key=lambda o: o.key)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.objects[(bucket, key)][-1][0]

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/json"
    ) -> None:
        self.put(bucket, key, data)

    def download(self, bucket: str, key: str, dest: Path, version_id: str | None = None) -> str:
        versions = self.objects[(bucket, key)]
        data = next(d for d, v in versions if v == version_id) if version_id else versions[-1][0]
        dest.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def upload(self, src: Path, bucket: str, key: str) -> None:
        self.put(bucket, key, src.read_bytes())

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return [o.key for o in self.list(bucket, prefix)]


class RecordingOrchestrator(Orchestrator):
    """Keeps runs by name, refusing a second run of the same name as Step Functions does."""

    def __init__(self) -> None:
        self.runs: dict[str, RunInput] = {}

    def run_exists(self, name: str) -> bool:
        return name in self.runs

    def start_run(self, run: RunInput) -> RunStart:
        if run.run_name in self.runs:
            return RunStart(run.run_name, f"run:{run.run_name}", started=False)
        self.runs[run.run_name] = run
        return RunStart(run.run_name, f"run:{run.run_name}", started=True)
