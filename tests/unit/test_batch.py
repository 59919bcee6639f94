"""Batch predictions: a file under ``<dataset>/batch/`` scored by the live model, in chunks."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from functions.batch.logic import ROW_COLUMN, score_batch
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, publish_live

RAW = "raw-bucket"


class World:
    def __init__(self) -> None:
        self.store = InMemoryObjectStore()
        self.registry = InMemoryRegistry()

    def publish(self, model: TrainedModel, *, onnx: bytes | None = None) -> int:
        return publish_live(self.store, self.registry, model, onnx=onnx)

    def score(self, key: str, chunk_rows: int = 50_000) -> dict[str, object]:
        outcome = score_batch(
            self.store,
            self.registry,
            raw_bucket=RAW,
            artifacts_bucket=ARTIFACTS,
            key=key,
            chunk_rows=chunk_rows,
        )
        return json.loads(outcome.model_dump_json())  # type: ignore[no-any-return]

    def predictions(self, prefix: str) -> pd.DataFrame:
        parts = sorted(k for k in self.store.keys(ARTIFACTS, prefix) if k.endswith(".parquet"))
        return pd.concat(
            [
                pq.read_table(io.BytesIO(self.store.get_bytes(ARTIFACTS, k))).to_pandas()
                for k in parts
            ],
            ignore_index=True,
        )


def _features(model: TrainedModel, rows: int) -> pd.DataFrame:
    frame = model.split("test").head(rows)
    return frame[[f.name for f in model.card.features]]


def test_a_csv_is_scored_in_chunks_exactly_as_the_model_scores_it(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given the multiclass model live and a CSV of 130 rows dropped under batch/
    model = trained_models["multiclass"]
    world = World()
    version = world.publish(model)
    frame = _features(model, 130)
    raw = frame.to_csv(index=False).encode()
    dataset = model.card.dataset
    world.store.put(RAW, f"{dataset}/batch/may.csv", raw)

    # When it is scored 50 rows at a time
    outcome = world.score(f"{dataset}/batch/may.csv", chunk_rows=50)

    # Then three parts and a manifest hold one prediction per row, in file order
    assert outcome["status"] == "scored" and outcome["rows"] == 130
    assert outcome["model_version"] == version and len(outcome["parts"]) == 3  # type: ignore[arg-type]
    prefix = f"{dataset}/predictions/may.csv/v{version}/"
    manifest = json.loads(world.store.get_bytes(ARTIFACTS, prefix + "_manifest.json"))
    assert manifest["rows"] == 130 and manifest["model_sha256"] == model.card.onnx.sha256
    written = world.predictions(prefix)
    assert written[ROW_COLUMN].tolist() == list(range(130))
    # and they are the model's own answers for those rows
    from functions.shared.scoring import ScoringModel

    direct = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256).score(
        {c: frame[c].to_numpy() for c in frame.columns}
    )
    assert written["label"].tolist() == direct.labels
    assert direct.probabilities is not None
    for i, name in enumerate(model.card.classes or []):
        assert np.allclose(written[f"p_{name}"], direct.probabilities[:, i], atol=1e-6)
    # and the raw file is untouched
    assert world.store.get_bytes(RAW, f"{dataset}/batch/may.csv") == raw


def test_a_parquet_file_and_a_regression_model(trained_models: dict[str, TrainedModel]) -> None:
    model = trained_models["regression"]
    world = World()
    version = world.publish(model)
    frame = _features(model, 40)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    dataset = model.card.dataset
    world.store.put(RAW, f"{dataset}/batch/prices.parquet", buffer.getvalue())

    outcome = world.score(f"{dataset}/batch/prices.parquet")

    assert outcome["status"] == "scored" and outcome["rows"] == 40
    written = world.predictions(f"{dataset}/predictions/prices.parquet/v{version}/")
    assert np.isfinite(written["value"]).all() and len(written) == 40


def test_the_contract_id_column_is_carried_into_the_predictions(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["binary"]
    world = World()
    version = world.publish(model)
    dataset = model.card.dataset
    contract = {
        "target": model.card.target,
        "task": "classification",
        "metric": model.card.metric,
        "threshold": 0.5,
        "id_column": "customer",
    }
    world.store.put(RAW, f"{dataset}/contract.json", json.dumps(contract).encode())
    frame = _features(model, 5).assign(customer=[f"C{i}" for i in range(5)])
    world.store.put(RAW, f"{dataset}/batch/ids.csv", frame.to_csv(index=False).encode())

    assert world.score(f"{dataset}/batch/ids.csv")["status"] == "scored"

    written = world.predictions(f"{dataset}/predictions/ids.csv/v{version}/")
    assert written["customer"].tolist() == [f"C{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no live model", "has no live model"),
        ("missing column", "the model needs the columns"),
        ("text in a numeric column", "cannot read the file"),
        ("empty file", "no rows"),
        ("tampered model", "is refused"),
    ],
)
def test_a_file_that_cannot_be_scored_is_rejected_with_the_reason(
    trained_models: dict[str, TrainedModel], case: str, message: str
) -> None:
    model = trained_models["binary"]
    world = World()
    if case != "no live model":
        world.publish(model, onnx=model.onnx + b"\x00" if case == "tampered model" else None)
    frame = _features(model, 10)
    numeric = next(f.name for f in model.card.features if f.kind.value == "numeric")
    if case == "missing column":
        frame = frame.drop(columns=[numeric])
    if case == "text in a numeric column":
        frame[numeric] = frame[numeric].astype(object)
        frame.loc[3, numeric] = "twelve"
    if case == "empty file":
        frame = frame.head(0)
    dataset = model.card.dataset
    world.store.put(RAW, f"{dataset}/batch/bad.csv", frame.to_csv(index=False).encode())

    outcome = world.score(f"{dataset}/batch/bad.csv")

    assert outcome["status"] == "rejected", outcome
    assert message in str(outcome["reason"])
    error = json.loads(
        world.store.get_bytes(ARTIFACTS, f"{dataset}/predictions/bad.csv/_error.json")
    )
    assert error["reason"] == outcome["reason"]
    assert not [k for k in world.store.keys(ARTIFACTS, "") if k.endswith(".parquet")]


@pytest.mark.parametrize(
    "key", ["churn/data/x.csv", "churn/batch/", "../batch/x.csv", "churn/batch/x.txt"]
)
def test_keys_that_are_not_batch_files_are_ignored(key: str) -> None:
    world = World()
    assert world.score(key)["status"] == "ignored"
