"""Small real models for the tests that need one: trained once per test session with the real
entry point (candidates → ONNX → parity), on the deterministic datasets of tests/datasets.py."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from functions.preprocess.versions import materialise, read_manifest
from functions.shared import layout
from functions.shared.contract import FeatureKind
from functions.shared.features import DatasetSchema, FeatureSpec
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
from functions.shared.orchestration import StoppingCondition
from functions.shared.pipeline_state import PipelineState, TrainingOutcome
from functions.shared.registry import GateVerdict, ModelRegistry, NewModelVersion
from functions.shared.runs import training_job_name
from functions.shared.storage import ObjectStore, s3_uri
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.train import train
from tests import datasets
from tests.datasets import SPLITS

# No search, and one family ships: the session's models serve the predict and explain routes,
# whose tests hold a classifier's explanation to the served probability's log-odds (a blend's
# is its members' weighted log-odds; test_explain.py and test_training_ensemble.py train blends).
FAST = Hyperparameters(
    n_estimators=40, early_stopping_rounds=5, max_trials=1, max_ensemble_members=1
)
KINDS: dict[str, Callable[[Path], DatasetSchema]] = {
    "binary": datasets.binary_numeric,
    "multiclass": datasets.multiclass_mixed,
    "regression": datasets.regression_prices,
}


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and the dataset version it came from (``version/<split>/``)."""

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


def train_model(
    root: Path,
    kind: str,
    hyperparameters: Hyperparameters = FAST,
    *,
    generate: Callable[[Path], DatasetSchema] | None = None,
) -> TrainedModel:
    """Train one of ``KINDS``, or the dataset ``generate`` writes (``kind`` then names it)."""
    version = root / "version"
    schema = (generate or KINDS[kind])(version)
    paths = SageMakerPaths.for_version(version, root)
    train(paths, hyperparameters, num_gpus=0)
    card = ModelCard.model_validate_json((paths.model / MODEL_CARD_FILE).read_text())
    return TrainedModel(kind, schema, version, (paths.model / MODEL_FILE).read_bytes(), card)


def train_stored_version(
    store: ObjectStore,
    bucket: str,
    prefix: str,
    root: Path,
    hyperparameters: Hyperparameters = FAST,
) -> TrainedModel:
    """Train on a dataset version preprocessing wrote to ``store`` (``prefix`` ends in ``/``):
    it is laid out on disk as one folder per split (``versions.materialise``), then the real
    entry point runs."""
    dataset, _, name = prefix.rstrip("/").split("/")
    version = materialise(
        store, bucket, read_manifest(store, bucket, dataset, name), root / "version"
    )
    schema = DatasetSchema.model_validate_json((version / "dataset.json").read_bytes())
    paths = SageMakerPaths.for_version(version, root)
    train(paths, hyperparameters, num_gpus=0)
    card = ModelCard.model_validate_json((paths.model / MODEL_CARD_FILE).read_text())
    return TrainedModel("stored", schema, version, (paths.model / MODEL_FILE).read_bytes(), card)


def train_changed(
    root: Path,
    base: TrainedModel,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    features: dict[str, FeatureKind],
) -> TrainedModel:
    """A model of ``base``'s dataset trained on a later upload whose columns changed: every split
    of ``base`` passed through ``change``, declared with ``features``, as a new dataset version."""
    version = root / "version"
    for split in SPLITS:
        (version / split).mkdir(parents=True)
        change(base.split(split)).to_parquet(version / split / "part-0.parquet", index=False)
    schema = base.schema.model_copy(
        update={
            "dataset_version": f"{base.schema.dataset_version}-changed",
            "features": [FeatureSpec(name=n, kind=k) for n, k in features.items()],
        }
    )
    (version / "train" / "dataset.json").write_text(schema.model_dump_json(indent=2))
    paths = SageMakerPaths.for_version(version, root)
    train(paths, FAST, num_gpus=0)
    card = ModelCard.model_validate_json((paths.model / MODEL_CARD_FILE).read_text())
    return TrainedModel(base.kind, schema, version, (paths.model / MODEL_FILE).read_bytes(), card)


ARTIFACTS = "artifacts-bucket"


def fixed_now() -> datetime:
    """The clock evaluate and the registry get in tests: one instant, so reports compare."""
    return datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def model_archive(onnx: bytes, card_json: bytes) -> bytes:
    """``model.tar.gz`` as SageMaker packs SM_MODEL_DIR."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in ((MODEL_FILE, onnx), (MODEL_CARD_FILE, card_json)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def stage_run(
    store: ObjectStore,
    model: TrainedModel,
    *,
    run_name: str = "run-1",
    test_frame: pd.DataFrame | None = None,
    archive: bytes | None = None,
    threshold: float | None = None,
    tolerance: float = 0.01,
    sensitive: tuple[str, ...] = (),
    accept_schema_change: bool = False,
) -> PipelineState:
    """Put a trained model's archive and a test split where a run after its Train state would
    have them, and return the state Evaluate receives."""
    schema = model.schema
    job = training_job_name(run_name)
    version_prefix = layout.version_prefix(schema.dataset, schema.dataset_version)
    test_prefix = f"{version_prefix}{run_name}/test/"
    frame = model.split("test") if test_frame is None else test_frame
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.put_bytes(ARTIFACTS, f"{test_prefix}part-0.parquet", buffer.getvalue())
    artifact_key = f"{layout.model_prefix(schema.dataset, job)}output/model.tar.gz"
    store.put_bytes(ARTIFACTS, artifact_key, archive or model_archive(model.onnx, model.card_json))
    default_threshold = {"roc_auc": 0.6, "f1_macro": 0.4, "rmse": 1e9}[schema.metric]
    return PipelineState(
        run_name=run_name,
        training_job_name=job,
        dataset=schema.dataset,
        dataset_version=schema.dataset_version,
        artifacts_bucket=ARTIFACTS,
        train_uri=s3_uri(ARTIFACTS, f"{version_prefix}train/"),
        validation_uri=s3_uri(ARTIFACTS, f"{version_prefix}validation/"),
        test_uri=s3_uri(ARTIFACTS, test_prefix),
        output_uri=s3_uri(ARTIFACTS, layout.models_prefix(schema.dataset)),
        checkpoint_uri=s3_uri(ARTIFACTS, layout.checkpoint_prefix(schema.dataset, run_name)),
        task=schema.task,
        metric=schema.metric,
        threshold=default_threshold if threshold is None else threshold,
        tolerance=tolerance,
        sensitive=list(sensitive),
        accept_schema_change=accept_schema_change,
        instance_type="ml.m5.large",
        spot=False,
        stopping_condition=StoppingCondition(MaxRuntimeInSeconds=600),
        hyperparameters={},
        training=TrainingOutcome(
            job_name=job, model_artifacts=s3_uri(ARTIFACTS, artifact_key), training_seconds=3
        ),
    )


def publish_live(
    store: ObjectStore,
    registry: ModelRegistry,
    model: TrainedModel,
    *,
    run_name: str = "run-1",
    onnx: bytes | None = None,
    dataset: str | None = None,
    promote: bool = True,
    metric_value: float = 0.9,
    gate: GateVerdict | None = None,
) -> int:
    """A model as a promotion leaves it: its files in the artifacts bucket, a version registered
    and (unless ``promote`` is false) live. ``onnx`` replaces the file, not the sha256 the
    registry records; ``dataset`` files it under another name than its card's."""
    dataset = dataset or model.card.dataset
    prefix = f"{dataset}/models/{run_name}/"
    store.put_bytes(ARTIFACTS, prefix + MODEL_FILE, model.onnx if onnx is None else onnx)
    store.put_bytes(ARTIFACTS, prefix + MODEL_CARD_FILE, model.card_json)
    uri = s3_uri(ARTIFACTS, prefix)
    version = registry.register(
        NewModelVersion(
            dataset=dataset,
            run_name=run_name,
            dataset_version=model.card.dataset_version,
            model_uri=uri + MODEL_FILE,
            card_uri=uri + MODEL_CARD_FILE,
            report_uri=uri + "evaluation.json",
            artifact_uri=uri + "output/model.tar.gz",
            sha256=model.card.onnx.sha256,
            metric=model.card.metric,
            metric_value=metric_value,
            gate=gate,
            gate_reasons=[f"gate {gate} (test)"] if gate else [],
        ),
        actor="test",
    ).version
    if not promote:
        return version
    live = registry.live(dataset)
    registry.promote(
        dataset,
        version,
        expected_live=None if live is None else live.version,
        actor="test",
        reason="published by a test",
    )
    return version
