"""The evaluation report: written as ``evaluation.json`` next to the model, kept in the registry."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from functions.shared.gate import GateDecision, GateInputs, MetricInterval

EVALUATION_FILE = "evaluation.json"
EVALUATION_SCHEMA_VERSION: Literal[1] = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelScore(_Frozen):
    """One model on the test split: the contract metric and the full report."""

    role: Literal["challenger", "champion"]
    version: int | None  # the registry version (the challenger's is allocated at registration)
    metric_value: float | None
    interval: MetricInterval | None = None  # bootstrap interval of metric_value; None in old
    # reports, and where too few resamples had a defined metric
    report: dict[str, JsonValue]  # classification_report / regression_report
    groups: dict[str, dict[str, dict[str, JsonValue]]] = Field(default_factory=dict)
    # sensitive column → group value → {"rows", the contract metric, headline figures}


class ChampionNote(_Frozen):
    """Whether the live champion was scored, and why not when it was not (no live model, it
    cannot be loaded, its features changed: the gate's evidence names the change)."""

    version: int | None
    scored: bool
    reason: str


class EvaluationReport(_Frozen):
    schema_version: Literal[1] = EVALUATION_SCHEMA_VERSION
    dataset: str
    dataset_version: str
    run_name: str
    task: Literal["classification", "regression"]
    metric: str
    test_rows: int = Field(gt=0)
    challenger: ModelScore
    champion: ModelScore | None
    champion_note: ChampionNote
    gate_inputs: GateInputs
    decision: GateDecision
    created_at: AwareDatetime


class EvaluateResult(_Frozen):
    """Evaluate's return value: the Choice state reads ``gate``; promote reads the versions."""

    model_version: int
    champion_version: int | None  # live at evaluation time, scored or not: promote expects it
    report_uri: str
    model_report_uri: str | None = None  # the model report's page (report/index.html)
    gate: GateInputs
    passed: bool  # the Python policy's verdict, for people reading the execution
    reasons: list[str]
