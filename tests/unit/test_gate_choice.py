"""The promotion gate exists twice: as Python (``functions/shared/gate.py``, used for the report
and the tests) and as the ``Gate`` Choice state of the pipeline definition (what decides on
AWS). This runs the real Choice state on ``gate_inputs`` and checks it agrees with ``decide``
everywhere: every metric, missing/NaN/infinite values, the exact boundaries, and schema changes
(none, columns added, a blocking change refused or accepted by the contract)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.shared.gate import GateEvidence, GateInputs, decide, gate_inputs
from functions.shared.metrics import METRICS
from functions.shared.schema_change import NamedFeature, RetypedFeature, SchemaChange
from infra.local.asl import load_definition, run

PIPELINE = Path(__file__).resolve().parents[2] / "infra" / "statemachine" / "pipeline.asl.json"
PLACEHOLDERS = (
    "Region",
    "TrainingImage",
    "TrainingRoleArn",
    "TrainingSourceUri",
    "EvaluateFunctionArn",
    "PromoteFunctionArn",
    "RejectFunctionArn",
)
GATE_MACHINE = {
    "StartAt": "Gate",
    "States": {
        "Gate": load_definition(PIPELINE, {name: f"dummy-{name}" for name in PLACEHOLDERS})[
            "States"
        ]["Gate"],
        "Promote": {"Type": "Succeed"},
        "Reject": {"Type": "Succeed"},
    },
}


def gate_route(gate: dict[str, Any]) -> str:
    """The state the real Gate sends this gate document to. The document goes through strict
    JSON first, as it would between Lambda and Step Functions (no NaN, no Infinity)."""
    document = json.loads(json.dumps({"evaluation": {"gate": gate}}, allow_nan=False))
    execution = run(
        GATE_MACHINE,
        document,
        tasks={},
        execution_name="gate-agreement",
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert execution.status == "SUCCEEDED", execution.cause
    return execution.path[-1]


ADDED = SchemaChange(champion_version=1, added=[NamedFeature(name="x", kind="numeric")])
RETYPED = SchemaChange(
    champion_version=1, retyped=[RetypedFeature(name="age", old="numeric", new="categorical")]
)
SCHEMA_CHANGES: dict[str, SchemaChange | None] = {
    "none": None,
    "added": ADDED,
    "retyped": RETYPED,
    "retyped-accepted": RETYPED.model_copy(update={"accepted": True}),
}


def assert_agreement(
    metric: str,
    challenger: float | None,
    champion: float | None,
    threshold: float,
    tolerance: float,
    schema_change: SchemaChange | None = None,
) -> bool:
    """Run both gates on the same inputs, fail if they disagree, return the verdict."""
    evidence = GateEvidence(schema_change=schema_change)
    inputs = gate_inputs(
        metric, challenger, champion, threshold=threshold, tolerance=tolerance, evidence=evidence
    )
    decision = decide(
        metric,
        challenger,
        champion,
        threshold=threshold,
        tolerance=tolerance,
        comparable=inputs.comparable,
        evidence=evidence,
    )
    route = gate_route(inputs.model_dump())
    assert (route == "Promote") is decision.passed, (route, decision.reasons, inputs)
    return decision.passed


FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
UNMEASURABLE = st.sampled_from([None, math.nan, math.inf, -math.inf])


@st.composite
def gate_cases(
    draw: st.DrawFn,
) -> tuple[str, float | None, float | None, float, float, SchemaChange | None]:
    """Inputs biased towards the edges: challengers exactly at (or one float beside) the
    threshold or the champion's floor, champions or challengers that are not numbers, and
    every kind of schema change."""
    metric = draw(st.sampled_from(sorted(METRICS)))
    threshold = draw(FINITE)
    tolerance = draw(st.floats(min_value=0, max_value=1e3))
    champion = draw(st.one_of(UNMEASURABLE, FINITE, st.just(threshold)))
    floor = gate_inputs(metric, None, champion, threshold=threshold, tolerance=tolerance)
    edges = [threshold] + ([] if floor.champion_floor is None else [floor.champion_floor])
    edge = draw(st.sampled_from(edges))
    beside = draw(
        st.sampled_from([edge, math.nextafter(edge, math.inf), math.nextafter(edge, -math.inf)])
    )
    challenger = draw(st.one_of(UNMEASURABLE, FINITE, st.just(beside)))
    schema_change = SCHEMA_CHANGES[draw(st.sampled_from(sorted(SCHEMA_CHANGES)))]
    return metric, challenger, champion, threshold, tolerance, schema_change


@settings(max_examples=600, deadline=None, database=None)
@given(gate_cases())
def test_the_gate_choice_state_agrees_with_decide(
    case: tuple[str, float | None, float | None, float, float, SchemaChange | None],
) -> None:
    # Given any metric, challenger, champion, threshold, tolerance and schema change
    # When both gates decide; Then they agree
    assert_agreement(*case)


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "threshold", "tolerance", "passed"),
    [
        pytest.param("roc_auc", 0.82, None, 0.75, 0.01, True, id="pass-first-model"),
        pytest.param("roc_auc", 0.85, 0.84, 0.75, 0.01, True, id="pass-beats-champion"),
        pytest.param("roc_auc", 0.70, None, 0.75, 0.01, False, id="fail-threshold"),
        pytest.param("roc_auc", 0.79, 0.81, 0.75, 0.01, False, id="fail-vs-champion"),
        pytest.param("f1_macro", 0.75, None, 0.75, 0.0, True, id="boundary-threshold"),
        pytest.param("f1_macro", 0.8, 0.8, 0.75, 0.0, True, id="boundary-champion"),
        pytest.param("f1_macro", 0.5, 0.75, 0.25, 0.25, True, id="boundary-floor"),
        pytest.param("rmse", 10.5, 10.0, 15.0, 1.0, True, id="rmse-within-tolerance"),
        pytest.param("rmse", 12.0, 10.0, 15.0, 1.0, False, id="rmse-worse-than-champion"),
        pytest.param("rmse", 16.0, None, 15.0, 1.0, False, id="rmse-above-threshold"),
        pytest.param("rmse", 15.0, None, 15.0, 1.0, True, id="rmse-boundary"),
        pytest.param("log_loss", 0.3, 0.35, 0.5, 0.0, True, id="log-loss-better"),
        pytest.param("log_loss", 0.36, 0.35, 0.5, 0.0, False, id="log-loss-worse"),
        pytest.param("log_loss", 0.6, None, 0.5, 0.0, False, id="log-loss-threshold"),
        pytest.param("accuracy", math.nan, 0.5, 0.0, 1.0, False, id="nan-challenger"),
        pytest.param("accuracy", None, None, 0.0, 1.0, False, id="missing-challenger"),
        pytest.param("rmse", math.inf, None, 1e9, 0.0, False, id="infinite-challenger"),
        pytest.param("accuracy", 0.9, math.nan, 0.8, 0.0, True, id="nan-champion-ignored"),
        pytest.param("rmse", 5.0, -math.inf, 10.0, 0.0, True, id="infinite-champion-ignored"),
    ],
)
def test_named_gate_cases(
    metric: str,
    challenger: float | None,
    champion: float | None,
    threshold: float,
    tolerance: float,
    passed: bool,
) -> None:
    # Given a named situation
    # When both gates decide
    verdict = assert_agreement(metric, challenger, champion, threshold, tolerance)

    # Then they agree (checked inside), on the verdict the policy promises
    assert verdict is passed


def test_a_gate_document_without_a_challenger_routes_to_reject() -> None:
    # Given an otherwise passing gate document whose challenger key is absent altogether
    gate = gate_inputs("accuracy", 0.9, None, threshold=0.5, tolerance=0.0).model_dump()
    del gate["challenger"]

    # When the real Gate decides; Then the IsPresent guard sends it to Reject, not to an error
    assert gate_route(gate) == "Reject"


@pytest.mark.parametrize(
    ("change", "passed"),
    [("none", True), ("added", True), ("retyped", False), ("retyped-accepted", True)],
)
def test_a_blocking_schema_change_is_refused_unless_the_contract_accepts_it(
    change: str, passed: bool
) -> None:
    # Given a challenger that clears the threshold, with no measurable champion (as when the
    # champion cannot score the new rows)
    # When both gates decide under each kind of schema change
    verdict = assert_agreement("roc_auc", 0.9, None, 0.7, 0.0, SCHEMA_CHANGES[change])

    # Then only the blocking change the contract did not accept refuses it
    assert verdict is passed


@pytest.mark.parametrize("comparable", [None, "true", 1], ids=["absent", "string", "number"])
def test_a_gate_document_without_a_boolean_comparable_routes_to_reject(comparable: Any) -> None:
    # Given an otherwise passing gate document whose comparable flag is absent or not a boolean
    gate = gate_inputs("accuracy", 0.9, None, threshold=0.5, tolerance=0.0).model_dump()
    if comparable is None:
        del gate["comparable"]
    else:
        gate["comparable"] = comparable

    # When the real Gate decides; Then it rejects, and the Python policy on a document without
    # the flag refuses too (fail closed on both sides)
    assert gate_route(gate) == "Reject"
    if comparable is None:
        assert not GateInputs.model_validate(gate).decide().passed
