"""Small real models for the tests that need one: trained once per test session with the real
entry point (candidates → ONNX → parity), on the deterministic datasets of tests/datasets.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from functions.shared.features import DatasetSchema
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.train import train
from tests import datasets

FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5)
KINDS: dict[str, Callable[[Path], DatasetSchema]] = {
    "binary": datasets.binary_numeric,
    "multiclass": datasets.multiclass_mixed,
    "regression": datasets.regression_prices,
}


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and the dataset version it came from (``version/{train,validation,test}``)."""

    kind: str
    schema: DatasetSchema
    version_dir: Path
    onnx: bytes
    card: ModelCard

    def split(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.version_dir / name / "part-0.parquet")

    @property
    def card_json(self) -> bytes:
        return self.card.model_dump_json(indent=2).encode()


def train_model(root: Path, kind: str, hyperparameters: Hyperparameters = FAST) -> TrainedModel:
    version = root / "version"
    schema = KINDS[kind](version)
    paths = SageMakerPaths(
        train=version / "train",
        validation=version / "validation",
        model=root / "model",
        output=root / "output",
        config=root / "config",
    )
    train(paths, hyperparameters, num_gpus=0)
    card = ModelCard.model_validate_json((paths.model / MODEL_CARD_FILE).read_text())
    return TrainedModel(kind, schema, version, (paths.model / MODEL_FILE).read_bytes(), card)
