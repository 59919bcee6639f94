"""The dataset contract: every mistake a user can make gets an error naming the field."""

from __future__ import annotations

import json

import pytest

from functions.shared.contract import Contract, FeatureKind, parse_contract
from functions.shared.errors import ContractError
from functions.shared.manifest import Manifest, RowCounts
from functions.shared.runs import run_input

VALID = {"target": "churned", "task": "classification", "metric": "f1_macro", "threshold": 0.7}


def parse(**overrides: object) -> Contract:
    return parse_contract(json.dumps({**VALID, **overrides}).encode(), source="churn/contract.json")


def rejects(needle: str, raw: bytes | None = None, **overrides: object) -> None:
    raw = raw if raw is not None else json.dumps({**VALID, **overrides}).encode()
    with pytest.raises(ContractError) as caught:
        parse_contract(raw, source="churn/contract.json")
    assert needle in str(caught.value)
    assert str(caught.value).startswith("churn/contract.json: ")


def test_a_minimal_contract_gets_production_defaults() -> None:
    contract = parse()
    assert contract.features is None
    assert contract.tolerance == 0.0
    assert contract.training.instance_type == "ml.g5.xlarge"
    assert contract.training.spot is True
    assert contract.accept_schema_change is False
    assert contract.higher_is_better is True
    assert contract.required_columns() == ["churned"]


def test_a_full_contract_round_trips() -> None:
    contract = parse(
        features={"tenure": "numeric", "plan": "categorical"},
        id_column="customer_id",
        tolerance=0.01,
        sensitive=["gender"],
        training={"instance_type": "ml.g4dn.xlarge", "spot": False, "hyperparameters": {"seed": 3}},
        accept_schema_change=True,
    )
    assert contract.accept_schema_change is True
    assert contract.features == {"tenure": FeatureKind.NUMERIC, "plan": FeatureKind.CATEGORICAL}
    assert contract.required_columns() == ["churned", "tenure", "plan", "customer_id", "gender"]
    assert contract.unexpected_columns(["tenure", "churned", "extra"]) == ["extra"]
    assert contract.training.hyperparameters == {"seed": 3}


def test_unknown_keys_are_errors_not_silent_defaults() -> None:
    rejects("treshold: unknown key", treshold=0.5)
    rejects("training.spots: unknown key", training={"spots": True})


def test_unknown_metric_lists_the_known_ones() -> None:
    rejects("metric: unknown metric 'f2'; known metrics: accuracy", metric="f2")


@pytest.mark.parametrize(
    ("task", "metric"), [("classification", "rmse"), ("regression", "roc_auc")]
)
def test_a_metric_must_fit_the_task(task: str, metric: str) -> None:
    rejects(f"metric '{metric}' is a", task=task, metric=metric)


def test_lower_is_better_metrics_are_known_as_such() -> None:
    assert parse(task="regression", metric="rmse", threshold=3.0).higher_is_better is False


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"task": "ranking"}, "task: Input should be 'classification' or 'regression'"),
        ({"threshold": "high"}, "threshold: Input should be a valid number"),
        ({"tolerance": -0.1}, "tolerance: Input should be greater than or equal to 0"),
        ({"features": {"churned": "numeric"}}, "target 'churned' cannot also be a feature"),
        ({"features": {"tenure": "ordinal"}}, "features.tenure: Input should be 'numeric'"),
        ({"features": {}}, "features: must name at least one feature"),
        ({"id_column": "churned"}, "id_column 'churned' cannot be the target"),
        ({"sensitive": ["churned"]}, "target 'churned' cannot be a sensitive column"),
        (
            {"training": {"instance_type": "g5.xlarge"}},
            "training.instance_type: String should match",
        ),
        ({"training": {"max_runtime_seconds": 7200, "max_wait_seconds": 3600}}, "max_wait_seconds"),
    ],
)
def test_invalid_fields_are_named(overrides: dict[str, object], needle: str) -> None:
    rejects(needle, **overrides)


def test_missing_required_fields_are_each_named() -> None:
    rejects("target: Field required; task: Field required", raw=b'{"metric": "accuracy"}')


def test_non_finite_thresholds_are_refused() -> None:
    rejects(
        "threshold: must be a finite number",
        raw=json.dumps({**VALID, "threshold": float("nan")}).encode(),
    )


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unparseable_contracts_are_refused(raw: bytes, needle: str) -> None:
    rejects(needle, raw=raw)


def test_passthrough_names_batch_columns_and_is_checked() -> None:
    contract = parse(id_column="customer_id", passthrough=["Customer Name", "region"])
    assert contract.passthrough == ["Customer Name", "region"]
    assert parse().passthrough == []
    # not required in data files, but known to a contract with declared features
    declared = parse(features={"tenure": "numeric"}, passthrough=["region"])
    assert declared.required_columns() == ["churned", "tenure"]
    assert declared.unexpected_columns(["tenure", "churned", "region", "x"]) == ["x"]
    rejects("passthrough: Input should be a valid list", passthrough="region")
    rejects("passthrough: names ['region'] more than once", passthrough=["region", "region"])
    rejects("passthrough: column names must not be empty", passthrough=[""])
    rejects(
        "passthrough: 'customer_id' is the id_column, which always passes through",
        id_column="customer_id",
        passthrough=["customer_id"],
    )


def test_a_fairness_threshold_reaches_the_run_that_evaluates_the_model() -> None:
    # Given a contract that flags fairness gaps over 0.1 between its regions
    contract = parse(sensitive=["region"], fairness_threshold=0.1)
    split_keys = {
        s: f"churn/versions/v1/{s}/part-0.parquet" for s in ("train", "validation", "test")
    }
    manifest = Manifest(
        dataset="churn",
        dataset_version="v1",
        created_at="2026-12-03T00:00:00Z",
        contract_sha256="0" * 64,
        sources=[],
        rows=RowCounts(read=1, duplicates_dropped=0, rejected={}, accepted=1, per_split={}),
        row_issues=[],
        split={},
        schema_key="churn/versions/v1/dataset.json",
        profile_key="churn/versions/v1/profile.json",
        split_keys=split_keys,
    )

    # When a run is started over it, then the run carries the threshold to evaluate
    assert run_input("run-1", manifest, contract, "artifacts").fairness_threshold == 0.1
    assert run_input("run-1", manifest, parse(), "artifacts").fairness_threshold is None


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"fairness_threshold": 0.1}, "fairness_threshold needs at least one 'sensitive' column"),
        ({"sensitive": ["region"], "fairness_threshold": 1.5}, "is over 1"),
        ({"sensitive": ["region"], "fairness_threshold": 0}, "fairness_threshold"),
        ({"sensitive": ["region"], "fairness_threshold": -0.1}, "fairness_threshold"),
        ({"sensitive": ["region"], "fairness_threshold": "high"}, "fairness_threshold"),
    ],
)
def test_a_bad_fairness_threshold_is_refused_naming_it(
    overrides: dict[str, object], needle: str
) -> None:
    rejects(needle, **overrides)


def test_a_regression_fairness_threshold_is_in_target_units_and_may_exceed_one() -> None:
    contract = parse(
        task="regression",
        metric="rmse",
        threshold=1e9,
        sensitive=["region"],
        fairness_threshold=2500.0,
    )
    assert contract.fairness_threshold == 2500.0
