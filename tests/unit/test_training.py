"""The training entry point end to end, in-process: candidates, ONNX export, parity, model card."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from functions.shared.errors import TrainingError
from functions.shared.features import DatasetSchema, onnx_feeds
from functions.shared.metrics import METRICS, classification_report, regression_report
from functions.shared.model_card import ModelCard, ParityReport
from functions.shared.row_hash import ROW_HASH
from functions.training import train as train_module
from functions.training.calibration import CalibratedClassifier
from functions.training.candidates import build_candidates, fit_candidate, score
from functions.training.ensemble import NativeBlend
from functions.training.refit import refit_candidate
from functions.training.script_mode import (
    Hyperparameters,
    SageMakerPaths,
    num_gpus_from_env,
)
from functions.training.splits import load_schema, load_split, read_channel_frame
from functions.training.train import main, train
from infra.local.channels import download_channel
from tests import datasets
from tests.fakes import InMemoryObjectStore

# Small forests keep the suite fast; early stopping still gets exercised.
FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1)  # no search
GENERATORS: dict[str, Callable[[Path], DatasetSchema]] = {
    "binary": datasets.binary_numeric,
    "multiclass": datasets.multiclass_mixed,
    "regression": datasets.regression_prices,
}


@dataclass(frozen=True)
class Trained:
    schema: DatasetSchema
    paths: SageMakerPaths
    card: ModelCard
    hyperparameters: Hyperparameters


def _paths(root: Path) -> SageMakerPaths:
    return SageMakerPaths.for_version(root / "version", root)


def _train(root: Path, kind: str, hp: Hyperparameters) -> Trained:
    schema = GENERATORS[kind](root / "version")
    paths = _paths(root)
    return Trained(schema, paths, train(paths, hp, num_gpus=0), hp)


@pytest.fixture(
    scope="module",
    params=[
        *GENERATORS,
        "multiclass-linear",
        "regression-linear",
        *(f"{kind}-lightgbm" for kind in GENERATORS),
    ],
)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Each dataset trained once per module: every candidate, then linear alone for the two
    datasets where a boosted family wins and LightGBM alone on all three (binary, multiclass and
    regression, with categoricals and missing values), so that every exporter goes through
    parity."""
    kind, _, only = str(request.param).partition("-")
    hp = FAST.model_copy(update={"candidates": (only,)}) if only else FAST
    return _train(tmp_path_factory.mktemp(str(request.param)), kind, hp)


def _session(trained: Trained) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(trained.paths.model / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def _native(trained: Trained, *, refit: bool = True) -> Any:
    """Fit the chosen candidate again: training is deterministic for a seed, so this is the
    model that was exported (refit on train + validation where the card says it was; with
    ``refit=False``, the train-only fit selection saw), followed by the card's temperature
    where calibration was applied."""
    train_split = load_split(trained.paths.train, trained.schema, "train")
    validation = load_split(trained.paths.validation, trained.schema, "validation")
    pipelines = build_candidates(trained.schema, trained.hyperparameters, num_gpus=0)

    def fitted(name: str) -> Any:
        assert name in ("linear", "xgboost", "lightgbm")
        family = fit_candidate(name, pipelines[name], trained.schema, train_split, validation)
        record = next(c for c in trained.card.families if c.name == name)
        if refit and record.refit is not None:
            family = refit_candidate(family, trained.schema, train_split, validation)
        return family.pipeline

    chosen = trained.card.chosen_candidate
    native: Any
    if chosen.members:  # the ensemble: its members fitted again, with the graph's weights
        models = tuple(fitted(m.name) for m in chosen.members)
        weights = tuple(float(np.float32(m.weight)) for m in chosen.members)
        native = NativeBlend(models, weights, trained.schema.task)
    else:
        native = fitted(chosen.name)
    calibration = trained.card.calibration
    if calibration is not None and calibration.applied:
        assert calibration.temperature is not None
        return CalibratedClassifier(native, calibration.temperature)
    return native


def _raw_validation(trained: Trained) -> pd.DataFrame:
    return pd.read_parquet(trained.paths.validation / "part-0.parquet")


def test_parity_passes_and_is_recorded(trained: Trained) -> None:
    # Given a dataset version trained end to end
    parity = trained.card.parity
    # Then the export matched the native model on every validation row
    assert parity.passed
    assert parity.rows == trained.card.training.rows_validation
    assert parity.max_scaled_diff <= parity.tolerance == 1e-4
    if trained.schema.task == "classification":
        assert parity.label_agreement == 1.0
        assert parity.max_abs_diff < 1e-5
    else:
        assert parity.label_agreement is None


def test_onnx_file_alone_reproduces_native_predictions(trained: Trained) -> None:
    # Given only model.onnx and the raw validation parquet, fed through features.onnx_feeds
    raw = _raw_validation(trained)
    feeds = onnx_feeds(trained.schema.features, {c: raw[c].to_numpy() for c in raw.columns})
    outputs = _session(trained).run(None, feeds)
    # When the native model predicts the same rows
    native = _native(trained)
    frame = load_split(trained.paths.validation, trained.schema, "validation").frame
    # Then ONNX reproduces it, labels as class indices and probabilities in classes order
    if trained.schema.task == "classification":
        labels, proba = outputs
        assert labels.dtype == np.int64
        assert proba.shape == (len(raw), len(trained.schema.classes or []))
        np.testing.assert_allclose(proba, native.predict_proba(frame), atol=1e-5)
        np.testing.assert_array_equal(labels, native.predict(frame))
    else:
        (pred,) = outputs
        np.testing.assert_allclose(pred.ravel(), native.predict(frame), rtol=1e-5)


def test_onnx_metrics_match_the_card(trained: Trained) -> None:
    # Given the card's validation report, computed from the native model during training: the
    # train-only fit's, which selection saw (the shipped graph is its refit, which has seen
    # these rows), so the graph is held to the refit native model's report on them
    expected = trained.card.validation
    if trained.card.chosen_candidate.refit is not None:
        split = load_split(trained.paths.validation, trained.schema, "validation")
        assert score(_native(trained, refit=False), trained.schema, split)[0] == expected
        expected = score(_native(trained), trained.schema, split)[0]
    raw = _raw_validation(trained)
    feeds = onnx_feeds(trained.schema.features, {c: raw[c].to_numpy() for c in raw.columns})
    target = raw[trained.schema.target].to_numpy()
    # When the ONNX outputs are scored the same way
    outputs = _session(trained).run(None, feeds)
    report: dict[str, Any]
    if trained.schema.task == "classification":
        classes = trained.schema.classes or []
        y = np.array([classes.index(v) for v in target])
        report = classification_report(y, np.clip(outputs[1].astype(np.float64), 0, 1), classes)
        # Then the confusion matrix is identical
        assert report["confusion_matrix"] == expected["confusion_matrix"]
    else:
        report = regression_report(target, outputs[0].ravel().astype(np.float64))
    # And the contract metric agrees to float32 rounding
    metric = trained.card.metric
    assert report[metric] == pytest.approx(expected[metric], rel=1e-5, abs=1e-6)


def test_card_validates_and_its_sha256_matches_the_file(trained: Trained) -> None:
    # Given the files written to SM_MODEL_DIR
    model_bytes = (trained.paths.model / "model.onnx").read_bytes()
    card_json = (trained.paths.model / "model_card.json").read_text()
    # When the card is read back as the evaluate and inference functions will
    card = ModelCard.model_validate_json(card_json)
    # Then it describes this exact file, this dataset and every candidate tried
    assert card == trained.card
    assert card.onnx.sha256 == hashlib.sha256(model_bytes).hexdigest()
    assert card.onnx.bytes == len(model_bytes)
    assert card.onnx.opset[""] <= 17  # skl2onnx uses the lowest opset that suffices
    assert card.onnx.opset["ai.onnx.ml"] <= 3
    assert card.dataset_version == trained.schema.dataset_version
    assert card.features == trained.schema.features
    assert card.classes == trained.schema.classes
    assert [c.name for c in card.families] == list(trained.hyperparameters.candidates)
    assert all(c.fit_seconds > 0 for c in card.candidates)
    calibrated = card.calibration is not None and card.calibration.applied
    assert (card.validation == card.chosen_candidate.validation) is not calibrated
    assert (card.calibration is None) is (card.task == "regression")
    assert card.training.device == "cpu"
    assert card.training.libraries["scikit-learn"]


def test_model_inputs_are_the_features_and_outputs_are_named(trained: Trained) -> None:
    # Given the exported graph
    session = _session(trained)
    # Then there is one (None, 1) input per feature, in schema order, typed by kind
    inputs = session.get_inputs()
    assert [i.name for i in inputs] == [f.name for f in trained.schema.features]
    for node, spec in zip(inputs, trained.schema.features, strict=True):
        expected = "tensor(float)" if spec.kind == "numeric" else "tensor(string)"
        assert (node.type, node.shape[1]) == (expected, 1)
    # And the outputs are the names inference looks up
    assert [o.name for o in session.get_outputs()] == trained.card.output_names


def test_chosen_candidate_is_best_on_the_contract_metric(trained: Trained) -> None:
    # Given every candidate's validation figure
    card = trained.card
    values = {c.name: c.metric_value for c in card.candidates}
    assert all(v is not None for v in values.values())
    # Then the chosen one is the best in the metric's direction
    best = max if METRICS[card.metric].higher_is_better else min
    assert values[card.chosen] == best(v for v in values.values() if v is not None)


def test_boosted_trees_stopped_early_or_ran_out_of_rounds(trained: Trained) -> None:
    # Given the boosted candidates (xgboost, lightgbm) of a run
    boosted = [c for c in trained.card.candidates if c.name in ("xgboost", "lightgbm")]
    if not boosted:  # the linear-only runs tried exactly what they were asked to
        assert [c.name for c in trained.card.candidates] == ["linear"]
        return
    for record in boosted:
        # Then the card records how many rounds the validation split kept
        best_iteration = record.params["best_iteration"]
        assert isinstance(best_iteration, int)
        assert 0 <= best_iteration < FAST.n_estimators
        if record.name == "xgboost":
            assert record.params["device"] == "cpu"
        else:
            assert record.params["early_stopping_round"] == FAST.early_stopping_rounds


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train(tmp_path_factory.mktemp("unseen"), "multiclass", FAST)


def test_unseen_and_respelled_categories_do_not_break_the_model(multiclass: Trained) -> None:
    # Given inputs with categories never seen in training, and seen ones spelled differently
    raw = _raw_validation(multiclass).head(50).copy()
    respelled = raw.copy()
    for name in multiclass.schema.categorical:
        raw[name] = "a category nobody has seen"
        respelled[name] = respelled[name].str.upper().str.replace(" ", "   ")
    session = _session(multiclass)

    def run(frame: pd.DataFrame) -> Any:
        columns = {c: frame[c].to_numpy() for c in frame.columns}
        return session.run(None, onnx_feeds(multiclass.schema.features, columns))

    original = run(_raw_validation(multiclass).head(50))
    # When the ONNX model scores them
    labels, proba = run(raw)
    _, respelled_proba = run(respelled)
    # Then it answers (unseen = no category column set), with valid probabilities
    assert labels.shape == (50,)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # And it matches the native model, which ignores unknown categories the same way
    native = _native(multiclass)
    frame = pd.DataFrame(
        {k: v.ravel() for k, v in onnx_feeds(multiclass.schema.features, raw).items()}
    )
    np.testing.assert_allclose(proba, native.predict_proba(frame), atol=1e-5)
    # And a different spelling of a known category is the same category
    np.testing.assert_allclose(respelled_proba, original[1], atol=1e-7)


def test_sm_num_gpus_puts_xgboost_on_cuda(tmp_path: Path) -> None:
    # Given a schema and the GPU count SageMaker announces
    schema = datasets.multiclass_mixed(tmp_path, rows=200)
    for env, device in (({"SM_NUM_GPUS": "1"}, "cuda"), ({}, "cpu")):
        # When the candidates are built (not fitted)
        pipelines = build_candidates(schema, Hyperparameters(), num_gpus=num_gpus_from_env(env))
        # Then xgboost is configured for that device, with hist and every core
        params = pipelines["xgboost"].named_steps["model"].get_params()
        assert params["device"] == device
        assert params["tree_method"] == "hist"
        assert params["n_jobs"] >= 1


def test_sm_num_gpus_must_be_a_count() -> None:
    with pytest.raises(TrainingError, match="SM_NUM_GPUS"):
        num_gpus_from_env({"SM_NUM_GPUS": "one"})


# --- main(): the script-mode process contract ------------------------------------------------


def _env(root: Path, hyperparameters: dict[str, str]) -> dict[str, str]:
    datasets.binary_numeric(root / "version", rows=600)
    (root / "config").mkdir()
    (root / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return {
        "SM_CHANNEL_TRAIN": str(root / "version" / "train"),
        "SM_CHANNEL_VALIDATION": str(root / "version" / "validation"),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_INPUT_CONFIG_DIR": str(root / "config"),
        "SM_NUM_GPUS": "0",
    }


def test_main_trains_with_sagemaker_encoded_hyperparameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given hyperparameters as the SageMaker SDK writes them, and the argv it appends
    hps = {
        "n_estimators": "20",
        "candidates": '"xgboost"',
        "budget_seconds": "2",
        "sagemaker_program": '"train.py"',
    }
    env = _env(tmp_path, hps)
    # When the entry point runs
    code = main(["--n_estimators", "20", "--candidates", "xgboost"], env)
    # Then it succeeds, writes model and card, and prints a summary
    assert code == 0
    assert (tmp_path / "model" / "model.onnx").is_file()
    card = ModelCard.model_validate_json((tmp_path / "model" / "model_card.json").read_bytes())
    assert [c.name for c in card.candidates] == ["xgboost"]
    assert card.candidates[0].params["n_estimators"] == 20
    assert not (tmp_path / "output" / "failure").exists()
    assert "parity passed" in capsys.readouterr().out


def test_main_with_an_unknown_hyperparameter_fails_with_a_reason(tmp_path: Path) -> None:
    # Given a typo in a hyperparameter name
    env = _env(tmp_path, {"n_estimator": "20"})
    # When the entry point runs
    code = main([], env)
    # Then it exits non-zero, names the key and the known ones, and writes no model
    assert code != 0
    reason = (tmp_path / "output" / "failure").read_text()
    assert reason.startswith("TrainingError: unknown hyperparameter 'n_estimator'")
    assert "n_estimators" in reason and "candidates" in reason
    assert len(reason) <= 1024 and "\n" not in reason
    assert not (tmp_path / "model" / "model.onnx").exists()


def test_main_fails_closed_when_parity_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an export whose parity measurement comes out wrong
    failing = ParityReport(
        rows=90, tolerance=1e-4, max_abs_diff=0.03, max_scaled_diff=0.03,
        label_agreement=0.9, ties=1, passed=False,
    )  # fmt: skip
    monkeypatch.setattr(train_module, "measure_parity", lambda *_: failing)
    env = _env(tmp_path, {"n_estimators": "5", "max_trials": "1"})
    # When the entry point runs
    code = main([], env)
    # Then the job fails with the figures, and no model is written
    assert code != 0
    reason = (tmp_path / "output" / "failure").read_text()
    assert reason.startswith("ParityError:")
    assert "0.03" in reason and "90 validation rows" in reason and "90.0000%" in reason
    assert not (tmp_path / "model" / "model.onnx").exists()


# --- inputs training refuses ---------------------------------------------------------------


def test_missing_dataset_json_is_a_training_error(tmp_path: Path) -> None:
    datasets.binary_numeric(tmp_path / "version", rows=300)
    (tmp_path / "version" / "train" / "dataset.json").unlink()
    with pytest.raises(TrainingError, match=r"no dataset\.json"):
        train(_paths(tmp_path), FAST, num_gpus=0)


def test_a_class_absent_from_training_is_a_training_error(tmp_path: Path) -> None:
    # Given a training split that lost every row of one class
    schema = datasets.multiclass_mixed(tmp_path / "version", rows=600)
    part = tmp_path / "version" / "train" / "part-0.parquet"
    frame = pd.read_parquet(part)
    frame[frame[schema.target] != "gold"].to_parquet(part, index=False)
    # Then training refuses, naming the class
    with pytest.raises(TrainingError, match=r"\['gold'\] have no rows in the train split"):
        train(_paths(tmp_path), FAST, num_gpus=0)


def test_a_label_outside_the_classes_is_a_training_error(tmp_path: Path) -> None:
    # Given a validation split with a label the schema does not know
    schema = datasets.binary_numeric(tmp_path / "version", rows=300)
    part = tmp_path / "version" / "validation" / "part-0.parquet"
    frame = pd.read_parquet(part)
    frame.loc[0, schema.target] = "maybe"
    frame.to_parquet(part, index=False)
    # Then training refuses, showing the label
    with pytest.raises(TrainingError, match=r"1 rows whose label .* \['maybe'\]"):
        train(_paths(tmp_path), FAST, num_gpus=0)


def test_a_metric_of_the_other_task_is_a_training_error(tmp_path: Path) -> None:
    datasets.binary_numeric(tmp_path / "version", rows=300)
    path = tmp_path / "version" / "train" / "dataset.json"
    path.write_text(path.read_text().replace('"roc_auc"', '"rmse"'))
    with pytest.raises(TrainingError, match="'rmse' is a regression metric"):
        train(_paths(tmp_path), FAST, num_gpus=0)


def test_a_numeric_column_with_no_values_still_exports_with_parity(tmp_path: Path) -> None:
    # Given a numeric feature that is missing on every training and validation row
    schema = datasets.regression_prices(tmp_path / "version", rows=600)
    for split in ("train", "validation"):
        part = tmp_path / "version" / split / "part-0.parquet"
        frame = pd.read_parquet(part)
        frame[schema.numeric[0]] = np.nan
        frame.to_parquet(part, index=False)
    # When trained
    card = train(_paths(tmp_path), FAST, num_gpus=0)
    # Then the graph still takes that feature, and matches the native model
    assert card.parity.passed
    assert card.onnx.inputs[0].name == schema.numeric[0]


# --- format-2 channels: parts with row hashes ---------------------------------------------------


def _manifest_channel(store: InMemoryObjectStore, dataset_root: Path, key: str, to: Path) -> Path:
    """The channel SageMaker would download for the channel manifest ``key`` of a dataset
    folder laid out by ``datasets.write_parts_version``."""
    for path in sorted(dataset_root.rglob("*")):
        if path.is_file():
            store.put("art", f"ds/{path.relative_to(dataset_root).as_posix()}", path.read_bytes())
    download_channel(store, f"s3://art/ds/{key}", to)
    return to


def test_rows_shared_by_parts_are_read_once_from_the_first_file(tmp_path: Path) -> None:
    # Given a schema and two hand-written parts of the train split: row 1 is in both
    schema = datasets.binary_numeric(tmp_path / "version", rows=300)
    rows = pd.read_parquet(tmp_path / "version" / "train" / "part-0.parquet").iloc[:5]
    channel = tmp_path / "channel"
    first, second = channel / "parts" / "a" / "train-a.parquet", channel / "parts" / "b"
    second.mkdir(parents=True)
    first.parent.mkdir(parents=True)
    datasets.with_row_hash(rows.iloc[[0, 1, 2]]).to_parquet(first, index=False)
    # ... the second file (found first on disk, but named after) holds the same row 1
    datasets.with_row_hash(rows.iloc[[3, 1, 4]]).to_parquet(second / "train-b.parquet")
    (channel / "versions" / "v").mkdir(parents=True)
    (channel / "versions" / "v" / "dataset.json").write_text(schema.model_dump_json())

    # When the channel is read
    assert load_schema(channel) == schema  # found below the root, where a manifest puts it
    split = load_split(channel, schema, "train")

    # Then row 1 is there once, where the first file has it, and the hash reached no model
    expected = load_split(_legacy(tmp_path / "legacy", rows, schema), schema, "train")
    assert split.rows == 5
    pd.testing.assert_frame_equal(split.frame, expected.frame)
    np.testing.assert_array_equal(split.y, expected.y)
    assert ROW_HASH not in split.frame.columns


def _legacy(channel: Path, rows: pd.DataFrame, schema: DatasetSchema) -> Path:
    channel.mkdir(parents=True)
    rows.to_parquet(channel / "part-0.parquet", index=False)
    (channel / "dataset.json").write_text(schema.model_dump_json())
    return channel


def test_a_legacy_channel_reads_its_one_file_as_it_is(tmp_path: Path) -> None:
    schema = datasets.multiclass_mixed(tmp_path / "version", rows=600)
    channel = tmp_path / "version" / "train"
    split = load_split(channel, schema, "train")
    frame = pd.read_parquet(channel / "part-0.parquet")
    assert split.rows == len(frame)
    codes = pd.Index(schema.class_keys).get_indexer(frame[schema.target])
    np.testing.assert_array_equal(split.y, codes)
    assert load_schema(channel) == schema


def test_a_manifest_channel_reads_the_same_rows_as_its_format_1_version(tmp_path: Path) -> None:
    # Given a version laid out as three parts sharing rows, downloaded as a ManifestFile
    schema = datasets.multiclass_mixed(tmp_path / "version", rows=600)
    channels = datasets.write_parts_version(
        tmp_path / "version", tmp_path / "ds", "s3://art/ds/", parts=3, repeat=4
    )
    store = InMemoryObjectStore()
    for split in ("train", "validation"):
        channel = _manifest_channel(store, tmp_path / "ds", channels[split], tmp_path / split)
        # Then each split holds exactly the format-1 version's rows, in its order
        got, want = (load_split(c, schema, split) for c in (channel, tmp_path / "version" / split))
        pd.testing.assert_frame_equal(got.frame, want.frame)
        np.testing.assert_array_equal(got.y, want.y)
    assert load_schema(tmp_path / "train") == schema


def test_a_channel_mixing_hashed_and_plain_files_is_refused(tmp_path: Path) -> None:
    schema = datasets.binary_numeric(tmp_path / "version", rows=300)
    channel = tmp_path / "version" / "train"
    rows = pd.read_parquet(channel / "part-0.parquet")
    datasets.with_row_hash(rows.iloc[:3]).to_parquet(channel / "train-a.parquet", index=False)
    with pytest.raises(TrainingError, match=r"mixes part files .*\['part-0\.parquet'\]"):
        load_split(channel, schema, "train")


def test_two_schemas_in_a_channel_are_refused(tmp_path: Path) -> None:
    schema = datasets.binary_numeric(tmp_path / "version", rows=300)
    for folder in ("a", "b"):
        (tmp_path / "channel" / folder).mkdir(parents=True)
        (tmp_path / "channel" / folder / "dataset.json").write_text(schema.model_dump_json())
    with pytest.raises(TrainingError, match=r"holds 2 dataset\.json files"):
        load_schema(tmp_path / "channel")


def test_a_channel_read_whole_keeps_every_column_but_the_hash(tmp_path: Path) -> None:
    # What the bench scripts read a version's split with, either layout
    datasets.binary_numeric(tmp_path / "version", rows=300)
    rows = pd.read_parquet(tmp_path / "version" / "test" / "part-0.parquet")
    channel = tmp_path / "parts"
    channel.mkdir()
    datasets.with_row_hash(rows.iloc[10:]).to_parquet(channel / "test-b.parquet", index=False)
    datasets.with_row_hash(rows.iloc[:12]).to_parquet(channel / "test-a.parquet", index=False)
    for folder in (channel, tmp_path / "version" / "test"):
        pd.testing.assert_frame_equal(read_channel_frame(folder), rows)
