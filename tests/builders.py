"""Builders for raw uploads: contracts, CSV files and the events S3 would send for them."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from functions.shared.s3_events import UploadedObject
from functions.shared.storage import ObjectInfo

EVENTS = Path(__file__).resolve().parents[1] / "events"
RAW = "raw-bucket"
ARTIFACTS = "artifacts-bucket"

CHURN_CONTRACT: dict[str, Any] = {
    "target": "churned",
    "task": "classification",
    "metric": "f1_macro",
    "threshold": 0.6,
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
