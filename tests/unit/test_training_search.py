"""The budgeted search: seeded trials, the budget kept, every trial in the card, k-fold for
small datasets."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.shared.contract import Contract
from functions.shared.model_card import ModelCard
from functions.training import search
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.search import KFOLD_BELOW_CLASS_ROWS, KFOLDS, uses_k_fold
from functions.training.splits import load_split
from functions.training.train import train
from tests import datasets

# a trial count far inside a generous budget: the cap, not the clock, ends each family
CAPPED = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=3, budget_seconds=600)


def _train(root: Path, hp: Hyperparameters, rows: int = 2400) -> ModelCard:
    datasets.regression_prices(root / "version", rows=rows)
    return train(SageMakerPaths.for_version(root / "version", root), hp, num_gpus=0)


def _trials(card: ModelCard) -> list[tuple[str, list[object]]]:
    return [(c.name, [(t.params, t.score, t.state) for t in c.trials]) for c in card.families]


def test_the_same_data_and_budget_give_the_same_trials(tmp_path: Path) -> None:
    # Given one dataset trained twice with the same seed and trial cap
    first = _train(tmp_path / "a", CAPPED)
    second = _train(tmp_path / "b", CAPPED)
    # Then every family tried the same parameters and scored them the same
    assert _trials(first) == _trials(second)
    assert all(c.search and c.search.stopped_by == "max_trials" for c in first.families)
    # And a different seed searches elsewhere
    lightgbm = CAPPED.model_copy(update={"seed": 1, "candidates": ("lightgbm",)})
    other = _train(tmp_path / "c", lightgbm)
    assert _trials(other)[0] != _trials(first)[2]


def test_every_trial_is_recorded_with_params_score_and_seconds(tmp_path: Path) -> None:
    card = _train(tmp_path, CAPPED)
    for candidate in card.families:
        search = candidate.search
        assert search is not None and search.selection == "validation"
        assert [t.number for t in candidate.trials] == list(range(CAPPED.max_trials))
        assert all(t.params and t.seconds > 0 for t in candidate.trials)
        # the first trial is the configuration as given; the card's figure is the best trial's
        assert candidate.trials[0].params[
            "learning_rate" if candidate.name != "linear" else "alpha"
        ]
        scores = [t.score for t in candidate.trials if t.score is not None]
        assert candidate.metric_value == min(scores)  # rmse: lower is better
        assert candidate.trials[search.best_trial].score == candidate.metric_value
    # And the card reads back with them
    written = (tmp_path / "model" / "model_card.json").read_bytes()
    assert ModelCard.model_validate_json(written) == card


# a budget a few trials long, and room for a thousand trials per family: the budget ends each
BUDGETED = Hyperparameters(
    n_estimators=40, early_stopping_rounds=5, max_trials=1000, budget_seconds=3
)


def test_the_search_stops_when_its_budget_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a budget of 3 s, and no wall-clock guard (however loaded the machine)
    monkeypatch.setattr(search, "CLOCK_GUARD", 1e9)
    started = time.perf_counter()
    card = _train(tmp_path, BUDGETED)
    elapsed = time.perf_counter() - started
    # Then the budget ended each family, after its first trial at least
    for candidate in card.families:
        summary = candidate.search
        assert summary is not None and summary.stopped_by == "budget"
        assert summary.spent_seconds is not None and candidate.trials
        charges = [t.spent_seconds for t in candidate.trials]
        assert all(c is not None and c > 0 for c in charges)
        # at the first trial that reached the family's share, not before and not after
        within = sum(c for c in charges if c is not None)
        assert within >= summary.budget_seconds - 1e-3
        assert within - (charges[-1] or 0.0) < summary.budget_seconds
        assert summary.spent_seconds >= within - 1e-3  # and the chosen model's refits on top
    # And the families together spent the budget, overrunning it by at most a trial each
    spent = [c.search.spent_seconds for c in card.families if c.search]
    last = [c.trials[-1].spent_seconds or 0.0 for c in card.families]
    assert BUDGETED.budget_seconds - 1e-3 <= sum(s or 0.0 for s in spent)
    assert sum(s or 0.0 for s in spent) <= BUDGETED.budget_seconds + sum(last) + 1.0
    assert elapsed < 60  # load, export and parity on top, on a shared machine


def test_a_budget_stop_gives_the_same_trials_on_a_slower_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same data and budget, trained once as it is
    monkeypatch.setattr(search, "CLOCK_GUARD", 1e9)
    quick = _train(tmp_path / "a", BUDGETED)
    # and once on a "machine" where every fit takes 50 ms longer
    fit = search.fit_candidate

    def slower(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return fit(*args, **kwargs)

    monkeypatch.setattr(search, "fit_candidate", slower)
    slow = _train(tmp_path / "b", BUDGETED)
    # Then the budget, counted in work, stopped both after the same trials, scored the same
    assert _trials(slow) == _trials(quick)
    assert [c.search and c.search.spent_seconds for c in slow.families] == [
        c.search and c.search.spent_seconds for c in quick.families
    ]
    # while the wall clock saw the difference
    assert sum(t.seconds for c in slow.families for t in c.trials) > sum(
        t.seconds for c in quick.families for t in c.trials
    )


def test_the_clock_guard_ends_a_search_on_a_machine_far_slower_than_the_budget_assumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a generous budget but a wall-clock guard already past when the first trial ends
    monkeypatch.setattr(search, "CLOCK_GUARD", 0.0)
    card = _train(tmp_path, BUDGETED.model_copy(update={"budget_seconds": 600}))
    # Then each family stopped after its first trial, and its card says the clock did it
    for candidate in card.families:
        assert candidate.search is not None and candidate.search.stopped_by == "clock"
        assert len(candidate.trials) == 1


def test_small_datasets_select_by_k_fold(tmp_path: Path) -> None:
    # Given 1 500 rows (1 275 train + validation, under 2 000)
    card = _train(tmp_path, CAPPED.model_copy(update={"max_trials": 1}), rows=1500)
    # Then every family was selected on the folds of train + validation
    for candidate in card.families:
        assert candidate.search is not None
        assert candidate.search.selection == f"{KFOLDS}-fold"
    assert card.parity.passed


def test_a_rare_class_with_few_validation_rows_selects_by_k_fold(tmp_path: Path) -> None:
    # Given 3 000 rows (over 2 000) with 6 % positives: about 27 in the validation split
    schema = datasets.imbalanced_binary(tmp_path / "version")
    train_split = load_split(tmp_path / "version" / "train", schema, "train")
    validation = load_split(tmp_path / "version" / "validation", schema, "validation")
    assert train_split.rows + validation.rows >= 2_000
    assert int(np.bincount(validation.y).min()) < KFOLD_BELOW_CLASS_ROWS
    # Then the search ranks trials on folds of train + validation, not on those few rows
    assert uses_k_fold(schema, train_split, validation)
    # And the same rows as a regression, or as balanced classes, keep the validation split
    regression = schema.model_copy(update={"task": "regression"})
    assert not uses_k_fold(regression, train_split, validation)
    balanced = replace(validation, y=np.arange(validation.rows) % 2)
    assert not uses_k_fold(schema, train_split, balanced)
    # And training records the folds as the family's selection
    card = train(
        SageMakerPaths.for_version(tmp_path / "version", tmp_path),
        CAPPED.model_copy(update={"max_trials": 1, "candidates": ("linear",)}),
        num_gpus=0,
    )
    assert card.families[0].search is not None
    assert card.families[0].search.selection == f"{KFOLDS}-fold"


def test_the_contract_carries_the_budget_to_the_job() -> None:
    contract = Contract.model_validate(
        {"target": "y", "task": "regression", "metric": "rmse", "threshold": 1.0}
    )
    assert contract.training.budget_seconds == 30
    with pytest.raises(ValueError, match="budget_seconds"):
        Contract.model_validate(
            {
                "target": "y",
                "task": "regression",
                "metric": "rmse",
                "threshold": 1.0,
                "training": {"budget_seconds": 600, "max_runtime_seconds": 600},
            }
        )
