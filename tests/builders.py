"""Builders for raw uploads: contracts, CSV files and the events S3 would send for them, and a
world of in-memory fakes to run preprocessing in."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from functions.preprocess.logic import Policy, PreprocessOutcome, process_upload
from functions.preprocess.versions import read_manifest, split_frame
from functions.shared import layout
from functions.shared.s3_events import UploadedObject
from functions.shared.storage import ObjectInfo
from tests.fakes import InMemoryObjectStore, RecordingOrchestrator

EVENTS = Path(__file__).resolve().parents[1] / "events"
RAW = "raw-bucket"
ARTIFACTS = "artifacts-bucket"

CHURN_CONTRACT: dict[str, Any] = {
    "target": "churned",
    "task": "classification",
    "metric": "f1_macro",
    "threshold": 0.6,
    # a tiny search budget keeps every pipeline run in the suite short
    "training": {"budget_seconds": 2},
}


def churn_frame(rows: int = 400, seed: int = 0, start_id: int = 0) -> pd.DataFrame:
    """A small customer-churn table: numeric and categorical features, a few gaps."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, rows).astype(float)
    charges = np.round(rng.normal(70, 25, rows), 2)
    plan = rng.choice(["Basic", "Standard", "Premium"], rows)
    region = rng.choice(["north", "south", "east", "west"], rows)
    risk = -0.05 * tenure + 0.03 * charges + (plan == "Basic") * 1.0 + rng.normal(0, 1, rows)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{start_id + i:06d}" for i in range(rows)],
            "tenure": tenure,
            "monthly_charges": charges,
            "plan": plan,
            "region": region,
            "churned": np.where(risk > np.median(risk), "yes", "no"),
        }
    )
    frame.loc[rng.random(rows) < 0.03, "monthly_charges"] = np.nan
    frame.loc[rng.random(rows) < 0.03, "region"] = None
    return frame


def csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def contract_bytes(**overrides: Any) -> bytes:
    return json.dumps({**CHURN_CONTRACT, **overrides}).encode()


def upload_of(info: ObjectInfo) -> UploadedObject:
    """The upload event S3 would deliver for the object version just written."""
    return UploadedObject(
        bucket=info.bucket,
        key=info.key,
        size=info.size,
        etag=info.etag,
        version_id=info.version_id,
        sequencer=hashlib.sha256(f"{info.key}|{info.version_id}".encode()).hexdigest()[:16],
    )


def eventbridge_event(info: ObjectInfo) -> dict[str, Any]:
    """events/s3_object_created.eventbridge.json, re-addressed to a real object."""
    event: dict[str, Any] = json.loads((EVENTS / "s3_object_created.eventbridge.json").read_text())
    event["resources"] = [f"arn:aws:s3:::{info.bucket}"]
    event["detail"]["bucket"]["name"] = info.bucket
    event["detail"]["object"].update(
        {"key": info.key, "size": info.size, "etag": info.etag, "version-id": info.version_id}
    )
    return event


class World:
    """A raw bucket, an artifacts bucket and a pipeline, all in memory."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.store = InMemoryObjectStore()
        self.pipeline = RecordingOrchestrator()
        self.policy = policy

    def contract(self, dataset: str = "churn", **overrides: object) -> None:
        self.store.put(RAW, layout.contract_key(dataset), contract_bytes(**overrides))

    def upload(self, key: str, data: bytes, *, size: int | None = None) -> PreprocessOutcome:
        info = self.store.put(RAW, key, data, size=size)
        return self.process(info)

    def process(self, info: object) -> PreprocessOutcome:
        return process_upload(
            upload_of(info),  # type: ignore[arg-type]
            store=self.store,
            orchestrator=self.pipeline,
            artifacts_bucket=ARTIFACTS,
            policy=self.policy,
        )

    def split(self, outcome: PreprocessOutcome, name: str) -> pd.DataFrame:
        """A version's split as training reads it (``versions.split_frame``)."""
        assert outcome.dataset and outcome.dataset_version
        manifest = read_manifest(self.store, ARTIFACTS, outcome.dataset, outcome.dataset_version)
        return split_frame(self.store, ARTIFACTS, manifest, name)

    def report(self, outcome: PreprocessOutcome) -> dict[str, Any]:
        assert outcome.report_key
        report: dict[str, Any] = json.loads(self.store.get_bytes(ARTIFACTS, outcome.report_key))
        return report


def assert_rejected(
    world: World, key: str, data: bytes, *, size: int | None = None
) -> dict[str, Any]:
    """Upload ``data`` at ``key``; assert it was rejected with a report where the user looks,
    the raw object exactly as uploaded (bytes and one version), no dataset version written and
    no run started (so no model trained, the live one unchanged). Returns the report."""
    outcome = world.upload(key, data, size=size)
    assert outcome.status == "rejected", outcome
    dataset = key.split("/", 1)[0]
    assert world.store.get_bytes(RAW, key) == data
    assert len(world.store.objects[(RAW, key)]) == 1
    assert world.pipeline.runs == {}
    assert outcome.report_key == f"{dataset}/rejected/{outcome.run_name}.json"
    assert world.store.keys(ARTIFACTS, f"{dataset}/versions/") == []
    return world.report(outcome)
