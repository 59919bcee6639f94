"""The dataset contract: ``<dataset>/contract.json`` in the raw bucket, a product interface.

Unknown keys are an error, not a silent default: a typo such as ``"treshold"`` must not let a
model through a gate the user thought they had set.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from functions.shared.errors import ContractError
from functions.shared.metrics import METRICS, UnknownMetricError, metric_info


class FeatureKind(StrEnum):
    """How a column reaches the model (docs/decisions.md, "Column roles"): numbers as they are,
    categories one-hot encoded, booleans as 0/1, dates and datetimes as derived numeric parts
    (year, month, day, weekday, hour, days since 1970) computed by ``features.onnx_feeds``."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"
    DATETIME = "datetime"


HyperparameterValue = str | int | float | bool
DEFAULT_BUDGET_SECONDS = 30


class TrainingConfig(BaseModel):
    """Where and how the training job runs; every field has a production default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_type: str = Field(default="ml.g5.xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    spot: bool = True
    max_runtime_seconds: int = Field(default=3600, ge=60, le=5 * 24 * 3600)
    max_wait_seconds: int | None = Field(default=None, ge=60, le=5 * 24 * 3600)
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    # the hyperparameter search's time budget (training/search.py); docs/decisions.md
    # (2026-12-03) says why 30 s
    budget_seconds: int = Field(default=DEFAULT_BUDGET_SECONDS, ge=1, le=5 * 24 * 3600)
    # refit the chosen model on train + validation before export (training/refit.py);
    # docs/decisions.md (2026-12-03) says why it is on by default and when to turn it off
    refit: bool = True

    @model_validator(mode="after")
    def _wait_covers_runtime(self) -> Self:
        if self.max_wait_seconds is not None and self.max_wait_seconds < self.max_runtime_seconds:
            raise ValueError("max_wait_seconds must be >= max_runtime_seconds (spot waits + runs)")
        if self.budget_seconds >= self.max_runtime_seconds:
            raise ValueError(
                f"budget_seconds ({self.budget_seconds}) must be under max_runtime_seconds "
                f"({self.max_runtime_seconds}): the job also loads, exports and checks the model"
            )
        if "budget_seconds" in self.hyperparameters:
            raise ValueError(
                "hyperparameters.budget_seconds: set the budget as training.budget_seconds"
            )
        if "refit" in self.hyperparameters:
            raise ValueError("hyperparameters.refit: set it as training.refit")
        return self


class Contract(BaseModel):
    """What a dataset is, and what a model trained on it must achieve to go live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(min_length=1)
    task: Literal["classification", "regression"]
    metric: str
    threshold: float
    features: dict[str, FeatureKind] | None = None
    id_column: str | None = None
    passthrough: list[str] = Field(default_factory=list)
    # columns copied unchanged from a batch file into its predictions, beside the id_column
    # (docs/api.md, "Batch predictions"); training does not look at this list
    tolerance: float = Field(default=0.0, ge=0.0)
    sensitive: list[str] = Field(default_factory=list)
    # the largest gap between groups of a sensitive column the model report accepts before it
    # flags the gap (docs/registry.md, "The model report"): demographic parity and equal
    # opportunity differences (0..1) for classification, the MAE gap (target units) for
    # regression. Flags, never gates.
    fairness_threshold: float | None = Field(default=None, gt=0)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    accept_schema_change: bool = False
    # True: a model whose features the live model cannot score (removed, renamed, re-typed, or
    # another target) may go live on the threshold alone; false refuses it, naming the change

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        try:
            metric_info(value)
        except UnknownMetricError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("threshold", "tolerance", "fairness_threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("passthrough")
    @classmethod
    def _distinct_names(cls, value: list[str]) -> list[str]:
        if any(not name for name in value):
            raise ValueError("column names must not be empty")
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"names {repeated} more than once")
        return value

    @field_validator("features")
    @classmethod
    def _some_features(cls, value: dict[str, FeatureKind] | None) -> dict[str, FeatureKind] | None:
        if value is not None and not value:
            raise ValueError("must name at least one feature, or be left out to infer them")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        info = METRICS[self.metric]
        if info.task != self.task:
            fitting = sorted(m.name for m in METRICS.values() if m.task == self.task)
            raise ValueError(
                f"metric '{self.metric}' is a {info.task} metric but task is '{self.task}'; "
                f"use one of {', '.join(fitting)}"
            )
        features = self.features or {}
        if self.target in features:
            raise ValueError(f"target '{self.target}' cannot also be a feature")
        if self.id_column is not None and self.id_column in (self.target, *features):
            raise ValueError(f"id_column '{self.id_column}' cannot be the target or a feature")
        if self.id_column is not None and self.id_column in self.passthrough:
            raise ValueError(
                f"passthrough: '{self.id_column}' is the id_column, which always passes through; "
                "leave it out of passthrough"
            )
        if self.target in self.sensitive:
            raise ValueError(f"target '{self.target}' cannot be a sensitive column")
        if self.fairness_threshold is not None:
            if not self.sensitive:
                raise ValueError(
                    "fairness_threshold needs at least one 'sensitive' column to measure gaps on"
                )
            if self.task == "classification" and self.fairness_threshold > 1:
                raise ValueError(
                    f"fairness_threshold {self.fairness_threshold} is over 1: classification "
                    "gaps are differences of rates, between 0 and 1"
                )
        return self

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    def data_digest(self) -> str:
        """A digest of the fields preprocessing reads (``DATA_FIELDS``): a dataset's parts are
        built under it, so editing the threshold, the metric or the training settings rebuilds
        no part (docs/decisions.md, "Per-file parts")."""
        fields = self.model_dump(mode="json", include=set(DATA_FIELDS))
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def required_columns(self) -> list[str]:
        """Columns every data file must carry."""
        cols = [self.target, *(self.features or {})]
        if self.id_column:
            cols.append(self.id_column)
        cols.extend(c for c in self.sensitive if c not in cols)
        return cols

    def unexpected_columns(self, columns: Iterable[str]) -> list[str]:
        """Columns a file carries that a contract with declared features does not know (a
        ``passthrough`` column is known: batch files and data files may share one layout)."""
        if self.features is None:
            return []
        known = {*self.required_columns(), *self.passthrough}
        return [c for c in columns if c not in known]


# What preprocessing reads of a contract: how rows are typed, cleaned, hashed and split.
DATA_FIELDS = ("target", "task", "features", "id_column", "passthrough", "sensitive")


def parse_contract(raw: bytes, *, source: str) -> Contract:
    """Parse contract bytes, raising ContractError that names every problem and its field."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ContractError(f"{source}: must be a JSON object, got {type(document).__name__}")
    try:
        return Contract.model_validate(document)
    except ValidationError as exc:
        raise ContractError(f"{source}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field path: readable in a report and a log."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(document)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (not part of the contract)"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)
