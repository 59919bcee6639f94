"""The SageMaker script-mode contract: where inputs and outputs live, and the hyperparameters.

SageMaker (and infra/local/training_runner.py, its local stand-in) hands the job its inputs as
directories and environment variables. Everything the entry point reads from that contract is
parsed here, once, into typed values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from functions.shared.contract import DEFAULT_BUDGET_SECONDS, describe_validation_error
from functions.shared.errors import TrainingError

HYPERPARAMETERS_FILE = "hyperparameters.json"
FAILURE_FILE = "failure"
# SageMaker truncates FailureReason to this many characters.
FAILURE_REASON_LIMIT = 1024

DEFAULT_MAX_TRIALS = 30
# Families in one shipped blend at most: what keeps 1-row predict within its budget
# (training/ensemble.py; docs/decisions.md, 2026-12-03).
MAX_ENSEMBLE_MEMBERS = 3
# Trees in one blend at most, unless the family that would ship alone holds more: a blend is
# never bigger than a single model may be (docs/decisions.md, 2026-12-03, has the figures).
MAX_ENSEMBLE_TREES = 1000

CandidateName = Literal["linear", "xgboost", "lightgbm"]
ALL_CANDIDATES: tuple[CandidateName, ...] = ("linear", "xgboost", "lightgbm")


@dataclass(frozen=True)
class SageMakerPaths:
    """The container's directories, from the ``SM_*`` variables or SageMaker's defaults."""

    train: Path
    validation: Path
    model: Path
    output: Path
    config: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SageMakerPaths:
        return cls(
            train=Path(env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")),
            validation=Path(env.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation")),
            model=Path(env.get("SM_MODEL_DIR", "/opt/ml/model")),
            output=Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output")),
            config=Path(env.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")),
        )

    @classmethod
    def for_version(cls, version: Path, root: Path) -> SageMakerPaths:
        """A local run's tree: channels read from a dataset version directory
        (``version/train``, ``version/validation``), outputs written under ``root``."""
        return cls(
            train=version / "train",
            validation=version / "validation",
            model=root / "model",
            output=root / "output",
            config=root / "config",
        )

    @property
    def hyperparameters_file(self) -> Path:
        return self.config / HYPERPARAMETERS_FILE

    @property
    def failure_file(self) -> Path:
        return self.output / FAILURE_FILE


def num_gpus_from_env(env: Mapping[str, str]) -> int:
    raw = env.get("SM_NUM_GPUS", "0")
    try:
        count = int(raw)
    except ValueError:
        raise TrainingError(f"SM_NUM_GPUS must be an integer, got {raw!r}") from None
    if count < 0:
        raise TrainingError(f"SM_NUM_GPUS must be >= 0, got {count}")
    return count


class Hyperparameters(BaseModel):
    """The knobs a contract's ``training.hyperparameters`` may turn; anything else is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: tuple[CandidateName, ...] = Field(default=ALL_CANDIDATES, min_length=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # a cap: early stopping on validation decides the rounds (300 cut one regression short)
    n_estimators: int = Field(default=1000, ge=1, le=100_000)
    max_depth: int = Field(default=6, ge=1, le=32)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    num_leaves: int = Field(default=31, ge=2, le=131_072)  # LightGBM's tree size
    early_stopping_rounds: int = Field(default=20, ge=1)
    # the search (training/search.py): the contract's training.budget_seconds, passed by the
    # run; trials per family at most (1: the configuration above, no search)
    budget_seconds: float = Field(default=DEFAULT_BUDGET_SECONDS, gt=0, le=5 * 24 * 3600)
    max_trials: int = Field(default=DEFAULT_MAX_TRIALS, ge=1, le=10_000)
    # the contract's training.refit, passed by the run: fit the chosen configuration again on
    # train + validation before export (training/refit.py); false ships the train-only fit
    refit: bool = True

    # families a shipped blend may hold (1: never blend); the default is the serving cap
    max_ensemble_members: int = Field(default=MAX_ENSEMBLE_MEMBERS, ge=1, le=MAX_ENSEMBLE_MEMBERS)

    @field_validator("candidates", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``"linear, xgboost"`` (how SageMaker passes it) or a list; duplicates dropped."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return tuple(dict.fromkeys(value))
        return value


def parse_hyperparameters(raw: Mapping[str, Any]) -> Hyperparameters:
    """Validate hyperparameters as SageMaker delivers them.

    SageMaker passes every value as a string, and the SageMaker SDK JSON-encodes values first
    (``300`` arrives as ``"300"``, ``"linear"`` as ``"\\"linear\\""``), so each string that
    parses as JSON is decoded. Keys SageMaker adds itself (``sagemaker_*``) are ignored; any
    other unknown key raises TrainingError naming it and the known keys.
    """
    known = sorted(Hyperparameters.model_fields)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith("sagemaker_"):
            continue
        if key not in Hyperparameters.model_fields:
            raise TrainingError(
                f"unknown hyperparameter '{key}'; known hyperparameters: {', '.join(known)}"
            )
        values[key] = _decode(value)
    try:
        return Hyperparameters.model_validate(values)
    except ValidationError as exc:
        raise TrainingError(f"invalid hyperparameters: {describe_validation_error(exc)}") from None


def load_hyperparameters(path: Path) -> Hyperparameters:
    """Read ``hyperparameters.json``; a job started without hyperparameters has none."""
    if not path.exists():
        return Hyperparameters()
    try:
        document = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise TrainingError(f"{path}: must be a JSON object, got {type(document).__name__}")
    return parse_hyperparameters(document)


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def failure_reason(exc: BaseException) -> str:
    """One paragraph, at most FAILURE_REASON_LIMIT characters: the error class and message."""
    text = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}").strip()
    if len(text) > FAILURE_REASON_LIMIT:
        text = text[: FAILURE_REASON_LIMIT - 3] + "..."
    return text


def write_failure(paths: SageMakerPaths, reason: str) -> None:
    """Leave the reason where SageMaker reads it into DescribeTrainingJob's FailureReason."""
    paths.output.mkdir(parents=True, exist_ok=True)
    paths.failure_file.write_text(reason, encoding="utf-8")
