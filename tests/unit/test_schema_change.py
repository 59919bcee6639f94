"""The difference between the champion's features and the challenger's, named for a person."""

from __future__ import annotations

from functions.shared.features import DatasetFacts
from functions.shared.schema_change import SchemaChange, diff_schema


def facts(
    features: dict[str, str], *, target: str = "churned", task: str = "classification"
) -> DatasetFacts:
    classification = task == "classification"
    return DatasetFacts.model_validate(
        {
            "dataset": "churn",
            "dataset_version": "v",
            "task": task,
            "target": target,
            "metric": "roc_auc" if classification else "rmse",
            "features": [{"name": n, "kind": k} for n, k in features.items()],
            "classes": ["no", "yes"] if classification else None,
        }
    )


V1 = {"tenure": "numeric", "monthly_charges": "numeric", "age": "numeric", "plan": "categorical"}


def test_the_same_features_are_no_change() -> None:
    assert diff_schema(facts(V1), facts(dict(reversed(V1.items()))), champion_version=1) is None


def test_columns_only_added_do_not_block() -> None:
    change = diff_schema(facts(V1), facts({**V1, "region": "categorical"}), champion_version=3)
    assert change is not None and not change.blocking
    assert [f.name for f in change.added] == ["region"]
    assert change.describe() == "added: region (categorical)"


def test_the_issues_upload_names_every_change() -> None:
    # Given the second upload of the issue: one column added, one removed, one renamed, and a
    # number turned into text bands
    new = {
        "tenure_months": "numeric",  # renamed from tenure
        "monthly_charges": "numeric",
        "age": "categorical",  # "18-25", "26-40"... bands
        "region": "categorical",  # added
    }  # plan removed

    change = diff_schema(facts(V1), facts(new), champion_version=1)

    # Then each change is named, and the champion cannot score the new rows
    assert change is not None and change.blocking
    assert [(r.old, r.new) for r in change.renamed] == [("tenure", "tenure_months")]
    assert [(r.name, r.old, r.new) for r in change.retyped] == [("age", "numeric", "categorical")]
    assert [f.name for f in change.removed] == ["plan"]
    assert [f.name for f in change.added] == ["region"]
    assert change.describe() == (
        "removed: plan (categorical); renamed: tenure → tenure_months (numeric); "
        "re-typed: age (numeric → categorical); added: region (categorical)"
    )


def test_a_rename_pairs_the_closest_names_of_the_same_kind_only() -> None:
    old = {"monthly_charges": "numeric", "contract": "categorical", "id": "numeric"}
    new = {"monthly_charge": "numeric", "contract_type": "numeric", "paid": "numeric"}
    change = diff_schema(facts(old), facts(new), champion_version=1)
    assert change is not None
    # monthly_charges → monthly_charge (same kind, ratio 0.97); contract is categorical and
    # contract_type numeric: no rename across kinds; "id" inside "paid" is chance, not a rename
    assert [(r.old, r.new) for r in change.renamed] == [("monthly_charges", "monthly_charge")]
    assert sorted(f.name for f in change.removed) == ["contract", "id"]
    assert sorted(f.name for f in change.added) == ["contract_type", "paid"]


def test_kinds_are_compared_as_strings_so_new_kinds_need_no_change() -> None:
    # A card is read as validated; the diff only ever looks at the kind's string value
    change = diff_schema(facts({"a": "numeric"}), facts({"a": "categorical"}), champion_version=2)
    assert change is not None and change.retyped[0].old == "numeric"
    assert SchemaChange.model_validate_json(change.model_dump_json()) == change


def test_another_target_or_task_blocks() -> None:
    change = diff_schema(
        facts(V1, target="price", task="regression"), facts(V1), champion_version=1
    )
    assert change is not None and change.blocking
    assert change.describe() == (
        "target changed: 'price' (regression) → 'churned' (classification)"
    )
