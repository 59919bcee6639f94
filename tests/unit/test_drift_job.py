"""The drift job: captured live inputs of the live model against its training profile."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from functions.drift.job import run_drift
from functions.preprocess.profile import build_profile
from functions.shared import layout
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, publish_live

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def _world(model: TrainedModel) -> tuple[InMemoryObjectStore, InMemoryRegistry, str]:
    store, registry = InMemoryObjectStore(), InMemoryRegistry()
    dataset = model.card.dataset
    publish_live(store, registry, model)
    profile = build_profile(model.version_dir / "train" / "part-0.parquet", model.schema)
    key = f"{layout.version_prefix(dataset, model.card.dataset_version)}profile.json"
    store.put(ARTIFACTS, key, json.dumps(profile).encode())
    return store, registry, dataset


def _capture(
    store: InMemoryObjectStore, dataset: str, frame: pd.DataFrame, at: datetime, version: str = "1"
) -> None:
    records = json.loads(frame.to_json(orient="records"))
    lines = [
        json.dumps(
            {
                "request_id": f"r{i}",
                "index": 0,
                "at": at.isoformat().replace("+00:00", "Z"),
                "model_version": version,
                "instance": record,
                "prediction": None,
            }
        )
        for i, record in enumerate(records)
    ]
    key = f"{layout.capture_hour_prefix(dataset, at)}{version}-{at:%Y%m%dT%H%M%SZ}-0.jsonl.gz"
    store.put(ARTIFACTS, key, gzip.compress("\n".join(lines).encode()))


def _live_inputs(model: TrainedModel, rows: int) -> pd.DataFrame:
    frame = pd.concat([model.split("test"), model.split("validation")], ignore_index=True)
    return frame[[f.name for f in model.card.features]].head(rows)


def _run(store: InMemoryObjectStore, registry: InMemoryRegistry, dataset: str) -> Any:
    return run_drift(store, registry, artifacts_bucket=ARTIFACTS, dataset=dataset, now=NOW)


def test_traffic_like_the_training_data_shows_no_major_drift(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["binary"]
    store, registry, dataset = _world(model)
    _capture(store, dataset, _live_inputs(model, 600), NOW - timedelta(hours=1))

    outcome = _run(store, registry, dataset)

    assert outcome.status == "measured" and outcome.live_rows == 600
    assert outcome.result.level != "major", outcome.result.max_psi
    latest = json.loads(store.get_bytes(ARTIFACTS, f"{dataset}/drift/latest.json"))
    assert latest["report"] == outcome.report_uri and latest["model_version"] == 1
    html = store.get_bytes(ARTIFACTS, outcome.report_uri.split("/", 3)[3][:-4] + "html")
    assert b"<svg" in html


def test_a_shifted_feature_is_major_drift_and_says_which(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["binary"]
    store, registry, dataset = _world(model)
    frame = _live_inputs(model, 600)
    shifted = model.card.features[0].name
    frame[shifted] = frame[shifted] + 3 * float(np.nanstd(frame[shifted]))
    _capture(store, dataset, frame, NOW - timedelta(minutes=5))

    outcome = _run(store, registry, dataset)

    assert outcome.result.level == "major"
    worst = max(
        (f for f in outcome.result.features if f.psi is not None), key=lambda f: f.psi or 0.0
    )
    assert worst.feature == shifted
    names = {name for name, _, _ in outcome.result.metrics()}
    assert {"FeaturePSI", "DatasetDriftPSI", "DriftedFeatures"} <= names


def test_only_the_window_and_the_live_version_count(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["binary"]
    store, registry, dataset = _world(model)
    _capture(store, dataset, _live_inputs(model, 300), NOW - timedelta(hours=2))
    _capture(store, dataset, _live_inputs(model, 200), NOW - timedelta(hours=30))  # too old
    _capture(store, dataset, _live_inputs(model, 100), NOW - timedelta(hours=1), version="9")

    assert _run(store, registry, dataset).live_rows == 300


def test_a_feature_excluded_from_capture_is_reported_missing_not_drifted(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["binary"]
    store, registry, dataset = _world(model)
    excluded = model.card.features[0].name
    _capture(store, dataset, _live_inputs(model, 600).drop(columns=[excluded]), NOW)

    outcome = _run(store, registry, dataset)

    [feature] = [f for f in outcome.result.features if f.feature == excluded]
    assert feature.status == "missing_column" and feature.psi is None


def test_no_captured_traffic_is_skipped_without_a_report(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["binary"]
    store, registry, dataset = _world(model)
    _capture(store, dataset, _live_inputs(model, 300), NOW - timedelta(hours=30))  # too old

    outcome = _run(store, registry, dataset)

    assert outcome.status == "skipped" and outcome.result is None
    assert outcome.reason.startswith("no captured requests of model version")
    assert store.keys(ARTIFACTS, f"{dataset}/drift/") == []


def test_no_live_model_is_skipped(trained_models: dict[str, TrainedModel]) -> None:
    outcome = run_drift(
        InMemoryObjectStore(), InMemoryRegistry(), artifacts_bucket=ARTIFACTS, dataset="x", now=NOW
    )
    assert (outcome.status, outcome.reason) == ("skipped", "no live model")


def test_the_handler_publishes_each_drift_figure_as_an_emf_document(
    trained_models: dict[str, TrainedModel], monkeypatch: Any
) -> None:
    from functions.drift.handler import publish

    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    model = trained_models["binary"]
    store, registry, dataset = _world(model)
    _capture(store, dataset, _live_inputs(model, 600), NOW)
    outcome = _run(store, registry, dataset)
    printed: list[str] = []

    assert publish(outcome, emit=printed.append) == len(outcome.result.metrics())

    documents = [json.loads(line) for line in printed]
    overall = next(d for d in documents if "DatasetDriftPSI" in d)
    assert overall["dataset"] == dataset
    assert overall["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["dataset"]]
    assert overall["DatasetDriftPSI"] == outcome.result.max_psi
    per_feature = [d for d in documents if "FeaturePSI" in d]
    assert {d["feature"] for d in per_feature} == {f.name for f in model.card.features}


def test_one_broken_dataset_fails_alone_naming_its_key(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given two datasets with a live model and traffic, and one whose model card was deleted
    from functions.drift.job import run_drift_each
    from functions.shared.model_card import MODEL_CARD_FILE

    model = trained_models["binary"]
    store, registry, dataset = _world(model)
    publish_live(store, registry, model, dataset="broken")
    for name in (dataset, "broken"):
        _capture(store, name, _live_inputs(model, 200), NOW)
    card_key = f"broken/models/run-1/{MODEL_CARD_FILE}"
    store.delete(ARTIFACTS, card_key)

    # When the drift job runs over both, the broken one first
    results = list(
        run_drift_each(store, registry, ["broken", dataset], artifacts_bucket=ARTIFACTS, now=NOW)
    )

    # Then the broken one fails, naming itself and the missing key, and the other is measured
    (broken, error), (healthy, none) = results
    assert (broken.dataset, broken.status) == ("broken", "failed")
    assert broken.missing_key == f"s3://{ARTIFACTS}/{card_key}"
    assert broken.reason == f"ObjectNotFoundError: s3://{ARTIFACTS}/{card_key} does not exist"
    assert error is not None
    assert (healthy.dataset, healthy.status, none) == (dataset, "measured", None)
    assert healthy.live_rows == 200
