"""The model card: what a trained model is, how it was chosen and how it was checked.

Training writes ``model_card.json`` next to ``model.onnx``; the evaluate and inference functions
read it back. It imports only pydantic (and numpy through ``features``) because it is on the
inference path. A card only exists for a model whose ONNX export passed the parity check, so a
card with a failed parity report does not validate. Better-ranked candidates whose export failed
the check are listed in ``parity_failures``: the shipped model is then a fallback.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from functions.shared.features import (
    LABEL_OUTPUT,
    PREDICTION_OUTPUT,
    PROBABILITIES_OUTPUT,
    DatasetFacts,
    graph_columns,
)

MODEL_CARD_SCHEMA_VERSION: Literal[1] = 1
MODEL_FILE = "model.onnx"
MODEL_CARD_FILE = "model_card.json"
# The candidate that is a weighted blend of other candidates (training/ensemble.py).
ENSEMBLE = "ensemble"

Device = Literal["cpu", "cuda"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParityReport(_Frozen):
    """ONNX model versus the native model it was exported from, on the whole validation split.

    ``max_abs_diff`` is the largest absolute difference (probabilities for classification,
    predictions for regression). ``max_scaled_diff`` is the figure held against ``tolerance``:
    the same number for classification, ``|onnx - native| / max(1, |native|, rms(native))``
    for regression (``training/parity.py`` says why).
    ``ties`` counts label disagreements excused because the native model's top two
    probabilities were within ``tolerance`` of each other.
    """

    rows: int = Field(ge=0)
    tolerance: float = Field(gt=0)
    max_abs_diff: float
    max_scaled_diff: float
    label_agreement: float | None = Field(default=None, ge=0, le=1)
    ties: int = Field(default=0, ge=0)
    passed: bool


class ParityFailure(_Frozen):
    """A candidate ranked above the chosen one whose ONNX export failed the parity check."""

    candidate: str
    reason: str  # the ParityError message, figures included
    report: ParityReport | None = None  # None when the outputs could not even be compared

    @model_validator(mode="after")
    def _failed(self) -> Self:
        if self.report is not None and self.report.passed:
            raise ValueError(f"candidate '{self.candidate}' passed parity: not a failure")
        return self


class TensorInfo(_Frozen):
    name: str
    type: str  # onnxruntime's spelling, e.g. "tensor(float)"
    shape: list[int | str | None]


class OnnxInfo(_Frozen):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(gt=0)
    opset: dict[str, int]  # domain ("" = ai.onnx) -> version
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


class ClassWeighting(_Frozen):
    """Balanced class weights, tried because the rarest class is rare, and kept only when they
    improved the contract metric on validation (``training/candidates.py`` says when)."""

    rarest_class: str
    rarest_share: float = Field(ge=0, le=1)  # of the training rows
    unweighted: float | None  # the contract metric on validation without weights
    weighted: float | None  # ... and with balanced weights
    chosen: Literal["none", "balanced"]


class TrialRecord(_Frozen):
    """One trial of a family's hyperparameter search (``training/search.py``)."""

    number: int = Field(ge=0)
    params: dict[str, JsonValue]
    score: float | None  # the selection figure; None when pruned, failed or undefined
    seconds: float = Field(ge=0)  # wall-clock
    # what it charged the budget (SearchSummary.spent_seconds); None on older cards
    spent_seconds: float | None = Field(default=None, ge=0)
    state: str  # Optuna's: complete, pruned, fail


# what ended a family's search (training/search.py)
StoppedBy = Literal["max_trials", "budget", "clock"]


class SearchSummary(_Frozen):
    """How a family's search went: what it selected by, its share of the budget, why it
    stopped, and which trial won."""

    selection: str  # "validation", or "5-fold" (train + validation) for small datasets
    budget_seconds: float = Field(ge=0)  # this family's share of training.budget_seconds
    seconds: float = Field(ge=0)  # wall-clock
    # what the budget counted: reference seconds estimated from the work done (search.py);
    # None on cards written before the budget was counted in work
    spent_seconds: float | None = Field(default=None, ge=0)
    max_trials: int = Field(ge=1)
    # clock: the wall-clock guard (search.CLOCK_GUARD times the share) ended it first
    stopped_by: StoppedBy
    best_trial: int = Field(ge=0)


class RefitRecord(_Frozen):
    """The chosen configuration fitted again on train + validation, the model that ships
    (``training/refit.py``). The record it sits in keeps the train-only fit's figures: those are
    what selection saw; the refit has no held-out figure until the evaluate step's test split.

    ``iterations`` is the refit's boosting rounds: the rounds early stopping kept on validation
    (``selected_iterations``) scaled by ``rows`` over the train rows; both None for a linear
    model.
    """

    rows: int = Field(gt=0)  # train + validation rows the shipped model was fitted on
    iterations: int | None = Field(default=None, ge=1)
    selected_iterations: int | None = Field(default=None, ge=1)
    class_weight: Literal["balanced"] | None = None  # carried over from the train-only fit
    seconds: float = Field(ge=0)

    @model_validator(mode="after")
    def _iterations_paired(self) -> Self:
        if (self.iterations is None) != (self.selected_iterations is None):
            raise ValueError("a refit records both iteration counts (boosted) or neither")
        return self


class EnsembleMember(_Frozen):
    """One family in a blend: its weight (``count`` of the selection rounds kept, over their
    number) in the averaged probabilities or values."""

    name: str
    weight: float = Field(gt=0, le=1)
    count: int = Field(ge=1)


class CandidateRecord(_Frozen):
    """One model family tried during training, chosen or not, or the ensemble of them
    (``name`` "ensemble", with ``members``; ``params`` then say how it was selected)."""

    name: str
    params: dict[str, JsonValue]
    fit_seconds: float = Field(ge=0)
    metric_value: float | None  # the contract metric on validation; None where undefined
    validation: dict[str, JsonValue]  # classification_report / regression_report
    # None where no class is rare (and on regression); cards before issue 17 have none
    class_weighting: ClassWeighting | None = None
    # every trial of the search, in order; ``metric_value`` is the best one's selection figure
    trials: list[TrialRecord] = Field(default_factory=list)
    search: SearchSummary | None = None
    # the shipped candidate's refit on train + validation; None for the others, when the refit
    # is switched off (training.refit), and on cards written before it existed
    refit: RefitRecord | None = None
    # the ensemble's families and weights, in rank order; empty for a family (and older cards)
    members: list[EnsembleMember] = Field(default_factory=list)

    @model_validator(mode="after")
    def _members_make_an_ensemble(self) -> Self:
        if (self.name == ENSEMBLE) != bool(self.members):
            raise ValueError(f"only the '{ENSEMBLE}' candidate has members, and it needs them")
        names = [m.name for m in self.members]
        if len(set(names)) < len(names) or ENSEMBLE in names:
            raise ValueError(f"ensemble members must be distinct families, got {names}")
        if self.members and abs(sum(m.weight for m in self.members) - 1.0) > 1e-6:
            raise ValueError(
                f"ensemble weights must sum to 1, got {[m.weight for m in self.members]}"
            )
        return self


class CalibrationFigures(_Frozen):
    """Probability quality on the validation split (metrics.classification_report's figures)."""

    log_loss: float = Field(ge=0)
    brier: float = Field(ge=0, le=2)
    ece: float = Field(ge=0, le=1)


class CalibrationRecord(_Frozen):
    """Whether the shipped graph scales its probabilities by a temperature, and why.

    ``before`` is the raw model on validation; ``after`` the same rows calibrated out of fold
    (each fold by a temperature fitted on the others: training/calibration.py), the figures the
    decision compared. ``temperature`` is the one fitted on the whole split: shipped when
    ``applied``, shown for reference otherwise (None when too few rows to fit).
    """

    applied: bool
    method: Literal["temperature"] = "temperature"
    temperature: float | None = Field(default=None, gt=0)
    probability_floor: float = Field(gt=0, lt=1)
    folds: int = Field(ge=2)
    before: CalibrationFigures
    after: CalibrationFigures | None = None
    reason: str

    @model_validator(mode="after")
    def _applied_only_when_better(self) -> Self:
        if self.applied and (
            self.temperature is None
            or self.after is None
            or self.after.log_loss >= self.before.log_loss
        ):
            raise ValueError(
                "calibration is applied only with a temperature that lowered the cross-fitted "
                "log loss"
            )
        return self


class TrainingInfo(_Frozen):
    seconds: float = Field(ge=0)
    load_seconds: float = Field(ge=0)
    export_seconds: float = Field(ge=0)
    parity_seconds: float = Field(ge=0)
    rows_train: int = Field(gt=0)
    rows_validation: int = Field(gt=0)
    gpus: int = Field(ge=0)
    device: Device
    hyperparameters: dict[str, JsonValue]
    libraries: dict[str, str]


class ModelCard(DatasetFacts):
    schema_version: Literal[1] = MODEL_CARD_SCHEMA_VERSION
    chosen: str
    candidates: list[CandidateRecord] = Field(min_length=1)
    # the shipped graph on validation (calibrated if applied); after a refit, the train-only fit
    # selection saw, calibrated the same way: the refit has seen the validation rows
    validation: dict[str, JsonValue]
    parity: ParityReport
    # Better-ranked candidates whose export failed parity, best first; empty when the best
    # candidate shipped. Cards written before the fallback existed have none.
    parity_failures: list[ParityFailure] = Field(default_factory=list)
    onnx: OnnxInfo
    # Classification cards since calibration existed; None for regression and older cards.
    calibration: CalibrationRecord | None = None
    # Feature name (the user's header) -> the graph input it feeds (features.onnx_input_name).
    # Cards written before the mapping existed have none: their inputs are the feature names.
    onnx_input_names: dict[str, str] | None = None
    training: TrainingInfo
    created_at: AwareDatetime

    @model_validator(mode="after")
    def _card_consistent(self) -> Self:
        names = [c.name for c in self.candidates]
        if self.chosen not in names:
            raise ValueError(f"chosen candidate '{self.chosen}' is not among {names}")
        if not self.parity.passed:
            raise ValueError("a model card is only written for a model that passed parity")
        failed = [f.candidate for f in self.parity_failures]
        if self.chosen in failed or not set(failed) <= set(names):
            raise ValueError(
                f"parity failures {failed} must be candidates {names} other than the chosen one"
            )
        families = {c.name for c in self.candidates if c.name != ENSEMBLE}
        for candidate in self.candidates:
            if not {m.name for m in candidate.members} <= families:
                raise ValueError(
                    f"ensemble members {[m.name for m in candidate.members]} must be the "
                    f"card's other candidates {sorted(families)}"
                )
        mapping = self.onnx_input_names
        if mapping is not None and (
            mapping.keys() != {f.name for f in self.features}
            or len(set(mapping.values())) < len(mapping)
        ):
            raise ValueError("onnx_input_names must map each feature to an input of its own")
        rows = self.training.rows_train + self.training.rows_validation
        if any(c.refit is not None and c.refit.rows != rows for c in self.candidates):
            raise ValueError(f"a refit is fitted on the train + validation rows ({rows})")
        if self.calibration is not None and self.task != "classification":
            raise ValueError("only a classification model has its probabilities calibrated")
        expected = [name for name, _ in graph_columns(self.features, self.input_names)]
        if [i.name for i in self.onnx.inputs] != expected:
            raise ValueError(
                f"ONNX inputs must be the features' graph columns in order: {expected}"
            )
        return self

    @property
    def input_names(self) -> dict[str, str]:
        """Feature name -> graph input name, for ``features.onnx_feeds``."""
        if self.onnx_input_names is not None:
            return self.onnx_input_names
        return {f.name: f.name for f in self.features}

    @property
    def families(self) -> list[CandidateRecord]:
        """The model families searched, in the order tried: every candidate but the ensemble."""
        return [c for c in self.candidates if c.name != ENSEMBLE]

    @property
    def chosen_candidate(self) -> CandidateRecord:
        return next(c for c in self.candidates if c.name == self.chosen)

    @property
    def fitted_rows(self) -> int:
        """The rows the shipped model was fitted on: train + validation after a refit, else
        train."""
        refit = self.chosen_candidate.refit
        return self.training.rows_train if refit is None else refit.rows

    @property
    def parity_fallback(self) -> str | None:
        """One line for people when the shipped model is not the best candidate, else None."""
        if not self.parity_failures:
            return None
        failed = "; ".join(f.reason for f in self.parity_failures)
        return f"'{self.chosen}' shipped because a better candidate failed parity: {failed}"

    @property
    def output_names(self) -> list[str]:
        if self.task == "classification":
            return [LABEL_OUTPUT, PROBABILITIES_OUTPUT]
        return [PREDICTION_OUTPUT]
