"""The script-mode contract: paths, hyperparameters as SageMaker encodes them, failure reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from functions.shared.errors import TrainingError
from functions.training.script_mode import (
    FAILURE_REASON_LIMIT,
    Hyperparameters,
    SageMakerPaths,
    failure_reason,
    load_hyperparameters,
    parse_hyperparameters,
    write_failure,
)


def test_paths_default_to_the_container_layout() -> None:
    paths = SageMakerPaths.from_env({})
    assert paths.train == Path("/opt/ml/input/data/train")
    assert paths.validation == Path("/opt/ml/input/data/validation")
    assert paths.model == Path("/opt/ml/model")
    assert paths.failure_file == Path("/opt/ml/output/failure")
    assert paths.hyperparameters_file == Path("/opt/ml/input/config/hyperparameters.json")


def test_paths_follow_the_sm_variables(tmp_path: Path) -> None:
    env = {
        "SM_CHANNEL_TRAIN": str(tmp_path / "t"),
        "SM_CHANNEL_VALIDATION": str(tmp_path / "v"),
        "SM_MODEL_DIR": str(tmp_path / "m"),
        "SM_OUTPUT_DIR": str(tmp_path / "o"),
        "SM_INPUT_CONFIG_DIR": str(tmp_path / "c"),
    }
    paths = SageMakerPaths.from_env(env)
    assert (paths.train, paths.validation, paths.model) == (
        tmp_path / "t",
        tmp_path / "v",
        tmp_path / "m",
    )
    assert paths.failure_file == tmp_path / "o" / "failure"
    assert paths.hyperparameters_file == tmp_path / "c" / "hyperparameters.json"


def test_defaults() -> None:
    hp = parse_hyperparameters({})
    assert hp == Hyperparameters()
    assert hp.candidates == ("linear", "xgboost", "lightgbm")
    assert (hp.seed, hp.n_estimators, hp.max_depth) == (0, 1000, 6)
    assert (hp.budget_seconds, hp.max_trials, hp.num_leaves) == (30, 30, 31)
    assert (hp.learning_rate, hp.early_stopping_rounds) == (0.1, 20)


def test_values_encoded_by_the_sagemaker_sdk_are_decoded() -> None:
    # Given what the SDK writes: every value a JSON-encoded string, plus its own keys
    raw = {
        "candidates": '"xgboost, linear"',
        "n_estimators": "50",
        "learning_rate": "0.05",
        "seed": "7",
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://bucket/code.tar.gz"',
    }
    # When parsed
    hp = parse_hyperparameters(raw)
    # Then values have their types, the candidate order is kept and sagemaker_* keys are gone
    assert hp.candidates == ("xgboost", "linear")
    assert (hp.n_estimators, hp.learning_rate, hp.seed) == (50, 0.05, 7)


def test_plain_strings_and_lists_are_accepted_for_candidates() -> None:
    assert parse_hyperparameters({"candidates": "linear"}).candidates == ("linear",)
    listed = parse_hyperparameters({"candidates": '["xgboost", "xgboost"]'})
    assert listed.candidates == ("xgboost",)


def test_an_unknown_key_names_itself_and_the_known_ones() -> None:
    with pytest.raises(TrainingError) as caught:
        parse_hyperparameters({"max_dept": "4"})
    message = str(caught.value)
    assert "'max_dept'" in message
    for known in ("candidates", "early_stopping_rounds", "learning_rate", "max_depth", "seed"):
        assert known in message


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"candidates": "linear,forest"}, "candidates"),
        ({"candidates": ""}, "candidates"),
        ({"n_estimators": "0"}, "n_estimators"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"max_depth": "2.5"}, "max_depth"),
    ],
)
def test_bad_values_are_training_errors_naming_the_field(raw: dict[str, str], field: str) -> None:
    with pytest.raises(TrainingError, match=rf"invalid hyperparameters: {field}"):
        parse_hyperparameters(raw)


def test_a_job_without_a_hyperparameters_file_uses_the_defaults(tmp_path: Path) -> None:
    assert load_hyperparameters(tmp_path / "hyperparameters.json") == Hyperparameters()


def test_a_hyperparameters_file_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps(["n_estimators", "5"]))
    with pytest.raises(TrainingError, match="must be a JSON object"):
        load_hyperparameters(path)


def test_failure_reason_is_one_bounded_paragraph(tmp_path: Path) -> None:
    # Given an error with a long, multi-line message
    error = TrainingError("first line\nsecond   line " + "x" * 5000)
    # When it becomes SageMaker's FailureReason
    reason = failure_reason(error)
    write_failure(SageMakerPaths.from_env({"SM_OUTPUT_DIR": str(tmp_path / "out")}), reason)
    # Then it is one line, names the class, and fits the limit
    assert reason.startswith("TrainingError: first line second line x")
    assert len(reason) == FAILURE_REASON_LIMIT
    assert reason.endswith("...")
    assert (tmp_path / "out" / "failure").read_text() == reason
