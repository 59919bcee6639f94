"""The budgeted hyperparameter search: per family, Optuna TPE within a share of the time budget.

Every family's first trial is its default configuration (the pipeline ``build_candidates``
makes from the hyperparameters as given), so the search can only match or beat what training
shipped before it existed, on the figure it selects by. Later trials are TPE's, seeded with
``hp.seed``. A family stops at ``hp.max_trials`` trials or when its share of
``hp.budget_seconds`` is spent, whichever comes first; the budget is checked between trials, so
a family overruns it by at most one trial (two where it chooses its target, below). The budget
is counted in work, not read off a clock (``COST``, ``Searcher.charge``): the same data, seed and
budget give the same trials on any machine. Only the wall-clock guard (``CLOCK_GUARD`` times the
share, for a machine far slower than the reference) can cut a run sooner, and the card's
``search.stopped_by`` says which stop ended each family (docs/decisions/, 2026-12-04, "The
search's budget is counted in work").

Selection figure: the contract metric on the validation split, or its mean over ``KFOLDS``
folds of train + validation for datasets under ``KFOLD_BELOW_ROWS`` train + validation rows
and for classification whose rarest class has under ``KFOLD_BELOW_CLASS_ROWS`` validation rows
(one split of a few hundred rows, or a few dozen of a rare class, is too noisy to rank trials
by; ``uses_k_fold``). Boosted trials
report their validation loss every ``PRUNE_EVERY`` rounds and k-fold trials their running mean
per fold, and Optuna's median rule prunes a trial that falls behind the completed ones.

Target: for a positive, right-skewed regression target (``target.eligible``) each tree family's
default configuration is first scored on the selection figure both as it is and fitted on
``log(y)`` (target.py), however little time is left; the better fixes the family's target for
all its trials, so the pruner only ever compares losses in one unit, and the winner's
evaluation is the family's first trial.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
from numpy.typing import NDArray
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from xgboost.callback import TrainingCallback

from functions.shared.features import DatasetSchema
from functions.shared.metrics import METRICS
from functions.shared.model_card import ClassWeighting, SearchSummary, StoppedBy, TrialRecord
from functions.training.candidates import (
    FittedCandidate,
    HeldOutPredictions,
    balanced_weights,
    build_candidates,
    fit_candidate,
    rarest_class,
)
from functions.training.ensemble import on_split, predictions
from functions.training.script_mode import CandidateName, Hyperparameters
from functions.training.splits import Split, join_splits
from functions.training.target import IDENTITY, LOG_TARGET, eligible, with_log_target

log = logging.getLogger(__name__)

KFOLD_BELOW_ROWS = 2_000
# k-fold too when the rarest class has fewer validation rows than this: ISLR/Caravan's ~40
# positives in validation ranked its trials by noise (docs/decisions.md, 2026-12-03)
KFOLD_BELOW_CLASS_ROWS = 100
KFOLDS = 5
PRUNE_EVERY = 10  # boosting rounds between reports to the pruner
PRUNE_STARTUP_TRIALS = 3  # completed trials before any is pruned
# the pseudo-parameter that carries a family's target (target.py) with its estimator parameters
TARGET_PARAM = "target"

# What a fit costs in the budget's unit, estimated from the work it did rather than read off a
# clock, so that the same data, seed and budget give the same trials on any machine and under
# any load: ``a + b * steps * leaves + c * units`` reference seconds (``COST[name] = (a, b, c)``),
# where steps are trees built (the boosted families; a pruned trial's, the rounds it boosted) or
# solver iterations (the linear family), leaves a tree's leaves at most by its parameters
# (``_leaves``; 1 for linear), and units are rows x encoded columns x steps. The rates are what
# the reference machine (2 cores, docs/training.md) took, fitted by ``python -m
# bench.search_cost``; a faster machine spends fewer wall seconds on the same budget, a slower one
# more (docs/decisions/, "The search's budget is counted in work").
# (2026-12-04: 1 180 fits over bench.quality's ten tables at budget 15 s, bench.search_cost;
# charged / wall seconds per table within 0.51-1.24 for XGBoost, 0.67-1.10 for LightGBM and
# 0.43-2.04 for the linear family, whose fits are the cheapest)
COST: dict[CandidateName, tuple[float, float, float]] = {
    "linear": (0.026, 0.0, 1.06e-9),
    "xgboost": (0.144, 4.8e-6, 1.17e-8),
    "lightgbm": (0.0994, 1.44e-4, 1.98e-8),
}
# A family also stops when its wall-clock time reaches this multiple of its share: a machine
# many times slower than the reference (or starved by others) still ends its search; the card
# says ``stopped_by: clock`` when this, not the budget, ended it
CLOCK_GUARD = 3.0

optuna.logging.set_verbosity(optuna.logging.WARNING)


def suggest(name: CandidateName, trial: optuna.Trial, task: str) -> dict[str, Any]:
    """The family's search space, as estimator parameters."""
    if name == "linear":
        key = "C" if task == "classification" else "alpha"
        return {key: trial.suggest_float(key, 1e-3, 1e3, log=True)}
    common = {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }
    if name == "xgboost":
        return {
            **common,
            "max_depth": trial.suggest_int("max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        }
    return {
        **common,
        "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
        "subsample_freq": 1,  # LightGBM bags rows only with a frequency
    }


def defaults(name: CandidateName, hp: Hyperparameters, task: str) -> dict[str, Any]:
    """What the first trial fits, in the search space's terms, for the card: the pipeline
    ``build_candidates`` makes, unchanged."""
    if name == "linear":
        return {"C": 1.0} if task == "classification" else {"alpha": 1.0}
    common = {
        "learning_rate": hp.learning_rate,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "reg_lambda": 1.0 if name == "xgboost" else 0.0,
    }
    if name == "xgboost":
        return {**common, "max_depth": hp.max_depth, "min_child_weight": 1.0}
    return {**common, "num_leaves": hp.num_leaves, "min_child_samples": 20}


def uses_k_fold(schema: DatasetSchema, train: Split, validation: Split) -> bool:
    """Select by k-fold rather than on the validation split: under ``KFOLD_BELOW_ROWS`` train +
    validation rows, or, for classification, under ``KFOLD_BELOW_CLASS_ROWS`` validation rows
    of the rarest class (a ranking figure such as roc_auc then rests on a few dozen rows)."""
    if train.rows + validation.rows < KFOLD_BELOW_ROWS:
        return True
    if schema.task != "classification":
        return False
    counts = np.bincount(validation.y, minlength=len(schema.classes or []))
    return int(counts.min()) < KFOLD_BELOW_CLASS_ROWS


@dataclass(frozen=True)
class Folds:
    """Train + validation, cut into KFOLDS (stratified for classification) with the seed."""

    pairs: list[tuple[Split, Split]]
    held: list[NDArray[np.intp]]  # each fold's held-out rows of train + validation
    y: NDArray[Any]  # train + validation's target, in that order

    @classmethod
    def of(cls, schema: DatasetSchema, train: Split, validation: Split, seed: int) -> Folds:
        joined = join_splits(train, validation)
        splitter = (
            StratifiedKFold(KFOLDS, shuffle=True, random_state=seed)
            if schema.task == "classification"
            else KFold(KFOLDS, shuffle=True, random_state=seed)
        )
        cuts = list(splitter.split(joined.frame, joined.y))
        pairs = [
            (_subset(joined, fit_rows, f"fold {k} fit"), _subset(joined, held, f"fold {k}"))
            for k, (fit_rows, held) in enumerate(cuts)
        ]
        return cls(pairs, [held for _, held in cuts], joined.y)

    def assemble(self, per_fold: list[NDArray[np.float64]]) -> HeldOutPredictions:
        """Each fold's predictions on its held-out rows, put back in train + validation order."""
        values = np.empty((self.y.shape[0], *per_fold[0].shape[1:]), dtype=np.float64)
        fold = np.empty(self.y.shape[0], dtype=np.intp)
        for k, (rows, predicted) in enumerate(zip(self.held, per_fold, strict=True)):
            values[rows] = predicted
            fold[rows] = k
        return HeldOutPredictions(values, self.y, fold)


# a configuration's selection figure, its model fitted on train (validation selection) and its
# out-of-fold predictions (k-fold selection): Searcher._evaluate
_Evaluation = tuple[float | None, FittedCandidate | None, HeldOutPredictions | None]


class Searcher:
    """Searches each family in turn within what is left of the budget."""

    def __init__(
        self,
        schema: DatasetSchema,
        hp: Hyperparameters,
        train: Split,
        validation: Split,
        *,
        num_gpus: int,
        n_jobs: int | None = None,
    ) -> None:
        self.schema, self.hp, self.train, self.validation = schema, hp, train, validation
        self.num_gpus, self.n_jobs = num_gpus, n_jobs
        self.folds = (
            Folds.of(schema, train, validation, hp.seed)
            if uses_k_fold(schema, train, validation)
            else None
        )
        self.higher_is_better = METRICS[schema.metric].higher_is_better
        self.log_target_eligible = eligible(schema, train.y)
        self.width = max(1, len(schema.numeric) + len(schema.categorical))
        self.spent = 0.0  # reference seconds charged so far, every family (``charge``)
        self.fits: list[FitCost] = []  # what each charge was made of (bench.search_cost)

    @property
    def selection(self) -> str:
        return "validation" if self.folds is None else f"{KFOLDS}-fold"

    def search(self, name: CandidateName, families_left: int) -> FittedCandidate:
        """Search one family with its share of the remaining budget; return the best trial's
        model (fitted on train, early-stopped on validation) with every trial in its record."""
        started, spent_before = time.perf_counter(), self.spent
        seconds = max(0.0, self.hp.budget_seconds - self.spent) / max(1, families_left)
        study = optuna.create_study(
            direction="maximize" if self.higher_is_better else "minimize",
            sampler=optuna.samplers.TPESampler(seed=self.hp.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS),
        )
        fitted: dict[int, FittedCandidate] = {}
        held_out: dict[int, HeldOutPredictions] = {}  # k-fold trials' out-of-fold predictions
        seconds_of: dict[int, float] = {}
        spent_of: dict[int, float] = {}  # what each trial charged the budget
        target, target_scores, evaluated_first = self._choose_target(name)
        target_spent = self.spent - spent_before  # both targets' evaluations: trial 0's charge

        def objective(trial: optuna.Trial) -> float:
            clock, charged = time.perf_counter(), self.spent
            if trial.number == 0:
                charged -= target_spent
            try:
                first = trial.number == 0  # the default configuration, as built
                if first and evaluated_first is not None:  # scored when choosing the target
                    (score, model, out_of_fold), seconds = evaluated_first
                    clock -= seconds
                else:
                    params = {} if first else suggest(name, trial, self.schema.task)
                    evaluated = self._evaluate(name, {**params, **target}, None, trial)
                    score, model, out_of_fold = evaluated
            finally:
                seconds_of[trial.number] = time.perf_counter() - clock
                spent_of[trial.number] = self.spent - charged
            if model is not None:
                fitted[trial.number] = model
            if out_of_fold is not None:
                held_out[trial.number] = out_of_fold
            return math.nan if score is None else score

        # the first trial always runs, however small the budget: a family needs one model
        study.optimize(objective, n_trials=1)
        stopped_by: StoppedBy = "max_trials"
        while len(study.trials) < self.hp.max_trials:
            if self.spent - spent_before >= seconds:
                stopped_by = "budget"
                break
            if time.perf_counter() - started >= CLOCK_GUARD * seconds:
                stopped_by = "clock"
                break
            study.optimize(objective, n_trials=1)
        first = defaults(name, self.hp, self.schema.task)
        trials = [
            _record(t, seconds_of.get(t.number, 0.0), spent_of.get(t.number), first, target)
            for t in study.trials
        ]
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = study.best_trial if complete else study.trials[0]
        bagging = {"subsample_freq": 1} if name == "lightgbm" and best.params else {}
        params = {**best.params, **bagging, **target}
        score = best.value if complete else None
        chosen = fitted.get(best.number) or self._fit_on_train(name, params, None)
        chosen = replace(chosen, held_out=held_out.get(best.number))
        chosen = self._weighted_if_better(name, params, chosen, score)
        if chosen.held_out is None:  # validation selection: the chosen model on validation
            chosen = replace(
                chosen, held_out=on_split(chosen.pipeline, self.schema, self.validation)
            )
        summary = SearchSummary(
            selection=self.selection,
            budget_seconds=round(seconds, 3),
            seconds=round(time.perf_counter() - started, 3),
            spent_seconds=round(self.spent - spent_before, 3),
            max_trials=self.hp.max_trials,
            stopped_by=stopped_by,
            best_trial=best.number,
        )
        update: dict[str, Any] = {
            "trials": trials,
            "search": summary,
            "fit_seconds": round(sum(seconds_of.values()), 3),
        }
        if target_scores is not None:
            update["params"] = {**chosen.record.params, "target_scores": target_scores}
        record = chosen.record.model_copy(update=update)
        log.info(
            "searched %s: %d trials in %.1f s (%s), best #%d %s=%s",
            name,
            len(trials),
            summary.seconds,
            summary.stopped_by,
            best.number,
            self.schema.metric,
            record.metric_value,
        )
        return replace(chosen, record=record)

    def _choose_target(
        self, name: CandidateName
    ) -> tuple[dict[str, Any], dict[str, float | None] | None, tuple[_Evaluation, float] | None]:
        """The family's target (``{}`` as it is, or the log pseudo-parameter), each target's
        selection figure for the card, and the chosen one's evaluation of the default
        configuration with its seconds, which becomes the family's first trial. Only tree
        families of an eligible regression choose, and only in a search (``max_trials`` > 1);
        the others get ``({}, None, None)``.

        Both evaluations run however little of the family's share is left, as the first trial
        always does: the target is a bigger choice than any trial's, and a choice made by the
        clock would differ between a quiet machine and a loaded one (on ames under a load of 8
        the first evaluation alone spent the share). Such a family may overrun its share by two
        evaluations instead of one."""
        if name == "linear" or not self.log_target_eligible or self.hp.max_trials < 2:
            return {}, None, None
        clock = time.perf_counter()
        identity = self._evaluate(name, {}, None, None)
        identity_seconds, clock = time.perf_counter() - clock, time.perf_counter()
        logged = self._evaluate(name, {TARGET_PARAM: LOG_TARGET}, None, None)
        logged_seconds = time.perf_counter() - clock
        scores = {IDENTITY: identity[0], LOG_TARGET: logged[0]}
        better = logged[0] is not None and (
            identity[0] is None
            or (logged[0] > identity[0] if self.higher_is_better else logged[0] < identity[0])
        )
        log.info("%s: %s target chosen (%s)", name, LOG_TARGET if better else IDENTITY, scores)
        if better:
            return {TARGET_PARAM: LOG_TARGET}, scores, (logged, logged_seconds)
        return {}, scores, (identity, identity_seconds)

    def _pipeline(self, name: CandidateName, params: dict[str, Any]) -> Pipeline:
        pipeline = build_candidates(
            self.schema,
            self.hp.model_copy(update={"candidates": (name,)}),
            num_gpus=self.num_gpus,
            n_jobs=self.n_jobs,
        )[name]
        estimator = dict(params)
        target = estimator.pop(TARGET_PARAM, IDENTITY)
        pipeline.named_steps["model"].set_params(**estimator)
        if target == LOG_TARGET:
            pipeline.steps[-1] = ("model", with_log_target(pipeline.named_steps["model"]))
        return pipeline

    def _fit_on_train(
        self, name: CandidateName, params: dict[str, Any], weights: NDArray[np.float64] | None
    ) -> FittedCandidate:
        return self._fit(name, self._pipeline(name, params), self.train, self.validation, weights)

    def _fit(
        self,
        name: CandidateName,
        pipeline: Pipeline,
        fit_part: Split,
        held: Split,
        weights: NDArray[np.float64] | None,
        trial: optuna.Trial | None = None,
    ) -> FittedCandidate:
        """``fit_candidate``, charged to the budget (``charge``); a trial pruned mid-fit is
        charged for the rounds it boosted before the pruner stopped it."""
        rounds = [0]
        callbacks = _pruning_callbacks(name, trial, self.higher_is_better, rounds)
        clock = time.perf_counter()
        try:
            fitted = fit_candidate(
                name, pipeline, self.schema, fit_part, held, weights, callbacks=callbacks
            )
        except optuna.TrialPruned:
            steps = rounds[0] * _trees_per_round(self.schema)
            self._charge_fit(name, pipeline, fit_part.rows, steps, time.perf_counter() - clock)
            raise
        self._charge_fit(name, pipeline, fit_part.rows, None, time.perf_counter() - clock)
        return fitted

    def _charge_fit(
        self, name: CandidateName, pipeline: Pipeline, rows: int, steps: int | None, wall: float
    ) -> None:
        """Charge a fit (``steps`` None: a completed one, its steps read off the model)."""
        width = _encoded_width(pipeline.named_steps["features"], self.width)
        model = pipeline.named_steps["model"]
        if steps is None:
            steps = _work_steps(name, model, width)
        self.charge(name, rows, width, steps, _leaves(name, model, rows), wall)

    def charge(
        self, name: CandidateName, rows: int, width: int, steps: int, leaves: int, wall: float
    ) -> float:
        """Add one fit's reference seconds to what the budget has spent; ``width`` is the
        columns the estimator saw (after encoding), ``steps`` trees built or solver iterations,
        ``leaves`` a tree's leaves at most (1 for linear). Deterministic: no clock in it
        (``wall`` is only kept in ``fits`` for bench.search_cost to fit the rates against)."""
        steps = max(1, steps)
        units = float(rows) * width * steps
        per_fit, per_leaf, per_unit = COST[name]
        cost = per_fit + per_leaf * steps * leaves + per_unit * units
        self.spent += cost
        self.fits.append(FitCost(name, rows, width, steps, leaves, units, cost, wall))
        return cost

    def _evaluate(
        self,
        name: CandidateName,
        params: dict[str, Any],
        balanced: bool | None,
        trial: optuna.Trial | None,
    ) -> _Evaluation:
        """The selection figure for these parameters, the model fitted on train where the
        figure came from it (validation selection), and the out-of-fold predictions over
        train + validation where it came from the folds (k-fold selection)."""
        n_classes = len(self.schema.classes or [])
        if self.folds is None:
            weights = balanced_weights(self.train.y, n_classes) if balanced else None
            pipeline = self._pipeline(name, params)
            model = self._fit(name, pipeline, self.train, self.validation, weights, trial)
            return model.record.metric_value, model, None
        scores: list[float] = []
        out_of_fold: list[NDArray[np.float64]] = []
        for step, (fit_part, held) in enumerate(self.folds.pairs):
            weights = balanced_weights(fit_part.y, n_classes) if balanced else None
            pipeline = self._pipeline(name, params)
            value = self._fit(name, pipeline, fit_part, held, weights)
            if value.record.metric_value is None:
                return None, None, None
            scores.append(value.record.metric_value)
            out_of_fold.append(predictions(value.pipeline, self.schema, held))
            if trial is not None:
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned
        return float(np.mean(scores)), None, self.folds.assemble(out_of_fold)

    def _weighted_if_better(
        self,
        name: CandidateName,
        params: dict[str, Any],
        plain: FittedCandidate,
        plain_score: float | None,
    ) -> FittedCandidate:
        """Where a class is rare, the best parameters again with balanced weights; kept only if
        they score strictly better on the selection figure (docs/decisions.md, 2026-12-03)."""
        rare = rarest_class(self.schema, self.train.y)
        if rare is None:
            return _with_selection_score(plain, plain_score)
        weighted_score, weighted, weighted_held_out = self._evaluate(name, params, True, None)
        better = weighted_score is not None and (
            plain_score is None
            or (
                weighted_score > plain_score
                if self.higher_is_better
                else weighted_score < plain_score
            )
        )
        if better and weighted is None:  # k-fold selection: fit the weighted model on train
            weights = balanced_weights(self.train.y, len(self.schema.classes or []))
            weighted = replace(
                self._fit_on_train(name, params, weights), held_out=weighted_held_out
            )
        kept = weighted if better and weighted is not None else plain
        kept = _with_selection_score(kept, weighted_score if better else plain_score)
        index, share = rare
        weighting = ClassWeighting(
            rarest_class=(self.schema.classes or [])[index],
            rarest_share=round(share, 6),
            unweighted=plain_score,
            weighted=weighted_score,
            chosen="balanced" if better else "none",
        )
        params_out = {**kept.record.params, "class_weight": "balanced" if better else None}
        record = kept.record.model_copy(update={"class_weighting": weighting, "params": params_out})
        return replace(kept, record=record)


def _with_selection_score(model: FittedCandidate, score: float | None) -> FittedCandidate:
    """Rank by the selection figure: under k-fold, the mean over folds, not the one split."""
    return replace(model, record=model.record.model_copy(update={"metric_value": score}))


def _record(
    trial: optuna.trial.FrozenTrial,
    seconds: float,
    spent: float | None,
    first: dict[str, Any],
    target: dict[str, Any],
) -> TrialRecord:
    value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
    return TrialRecord(
        number=trial.number,
        params={**(dict(trial.params) if trial.number else first), **target},
        score=None if value is None or math.isnan(value) else float(value),
        seconds=round(seconds, 3),
        spent_seconds=None if spent is None else round(spent, 4),
        state=trial.state.name.lower(),
    )


def _pruning_callbacks(
    name: CandidateName, trial: optuna.Trial | None, higher_is_better: bool, rounds: list[int]
) -> list[Any] | None:
    """Report the validation loss every PRUNE_EVERY rounds; prune a trial behind the median.
    ``rounds[0]`` follows the rounds boosted, for the budget's charge of a pruned trial.

    The boosting losses (logloss, mlogloss, l2, rmse) are lower-better, and the median rule
    compares values in the study's direction, so a maximising study is told ``-loss``."""
    if trial is None or name == "linear":
        return None
    sign = -1.0 if higher_is_better else 1.0

    def report(round_: int, loss: float) -> None:
        rounds[0] = round_ + 1
        if round_ % PRUNE_EVERY:
            return
        trial.report(sign * loss, round_)
        if trial.should_prune():
            raise optuna.TrialPruned

    if name == "xgboost":
        return [_XGBoostReport(report)]

    def lightgbm_callback(env: Any) -> None:
        _, _, loss, higher = env.evaluation_result_list[0][:4]
        report(env.iteration, -loss if higher else loss)

    return [lightgbm_callback]


class _XGBoostReport(TrainingCallback):
    def __init__(self, report: Callable[[int, float], None]) -> None:
        super().__init__()
        self._report = report

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        for metrics in evals_log.values():
            for values in metrics.values():
                self._report(epoch, float(values[-1]))
                return False
        return False


def _subset(split: Split, rows: NDArray[Any], name: str) -> Split:
    return Split(
        name=name,
        frame=split.frame.iloc[rows].reset_index(drop=True),
        feeds={k: v[rows] for k, v in split.feeds.items()},
        y=split.y[rows],
    )


@dataclass(frozen=True)
class FitCost:
    """One fit as the budget counted it, with the wall seconds it took (bench.search_cost)."""

    name: CandidateName
    rows: int
    width: int
    steps: int
    leaves: int
    units: float
    cost: float  # reference seconds charged
    wall: float


def _trees_per_round(schema: DatasetSchema) -> int:
    classes = len(schema.classes or [])
    return classes if schema.task == "classification" and classes > 2 else 1


def _encoded_width(features: Any, default: int) -> int:
    """The columns a fitted ``build_features`` transformer gives the estimator (one-hot columns
    counted), read off its output slices; ``default`` when it has none."""
    slices = getattr(features, "output_indices_", None)
    if not slices:
        return default
    return max(1, max(int(part.stop) for part in slices.values()))


def _leaves(name: CandidateName, model: Any, rows: int) -> int:
    """A tree's leaves at most, from its parameters: what a boosted tree's cost grows with
    beyond its rows and columns (each leaf is a split search); 1 for the linear family."""
    if name == "linear":
        return 1
    params = model.get_params()
    cap: int
    if name == "xgboost":
        cap = 2 ** int(params.get("max_depth") or 6)
    else:
        smallest = max(1, int(params.get("min_child_samples") or 20))
        cap = min(int(params.get("num_leaves") or 31), max(2, rows // smallest))
    return int(max(2, min(cap, rows)))


def _work_steps(name: CandidateName, model: Any, width: int) -> int:
    """Trees a fitted boosted model built (every class's, as many as it kept), or the linear
    solver's iterations; a ridge regression, solved in closed form (rows x columns², like
    ``width`` iterations), counts ``width``."""
    if name == "xgboost":
        booster = model.get_booster()
        classes = int(getattr(model, "n_classes_", 0) or 0)
        return int(booster.num_boosted_rounds()) * (classes if classes > 2 else 1)
    if name == "lightgbm":
        return int(model.booster_.num_trees())
    iterations = getattr(model, "n_iter_", None)
    if iterations is None:
        return width
    return int(np.max(iterations))
