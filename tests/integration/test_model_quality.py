"""Model quality: what sluice trains and evaluates is as good as what a user would get from a
plain scikit-learn model on the same split. Default hyperparameters (the ones a run uses), so
this is slower than the unit tests and lives here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from functions.evaluate.logic import evaluate
from functions.shared.metrics import compute_metric
from functions.training.script_mode import Hyperparameters
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import TrainedModel, fixed_now, stage_run, train_model


def _plain_sklearn_metric(model: TrainedModel) -> float:
    """What a user would get from a default scikit-learn model on the same train/test split."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    schema = model.schema
    train, test = model.split("train"), model.split("test")
    encode = ColumnTransformer(
        [
            ("num", SimpleImputer(), schema.numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), schema.categorical),
        ],
        sparse_threshold=0,
    )
    if schema.task == "classification":
        classes = schema.classes or []
        pipeline = make_pipeline(encode, HistGradientBoostingClassifier(random_state=0))
        pipeline.fit(train[[f.name for f in schema.features]], train[schema.target])
        proba = pipeline.predict_proba(test[[f.name for f in schema.features]])
        order = [list(pipeline.classes_).index(c) for c in classes]
        codes = np.array([classes.index(v) for v in test[schema.target]])
        return compute_metric(schema.metric, codes, proba=proba[:, order])
    regressor = make_pipeline(encode, HistGradientBoostingRegressor(random_state=0))
    regressor.fit(train[[f.name for f in schema.features]], train[schema.target])
    pred = regressor.predict(test[[f.name for f in schema.features]])
    return compute_metric(schema.metric, test[schema.target].to_numpy(), pred=pred)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_test_metrics_are_close_to_a_plain_scikit_learn_model_on_the_same_split(
    kind: str, tmp_path: Path
) -> None:
    # Given the model sluice trains with its default settings, and a default sklearn model
    model = train_model(tmp_path, kind, Hyperparameters(max_trials=1))
    baseline = _plain_sklearn_metric(model)
    # When sluice evaluates its model on the same test split
    store, registry = InMemoryObjectStore(), InMemoryRegistry()
    ours = evaluate(stage_run(store, model), store=store, registry=registry, clock=fixed_now)
    # Then it is close to (or better than) the baseline, in the metric's direction
    assert ours.gate.challenger is not None
    # (`pytest -s` shows the figures the README and the issue notes quote)
    print(
        f"{kind}: sluice {model.schema.metric} {ours.gate.challenger:.4f} vs sklearn {baseline:.4f}"
    )
    if ours.gate.higher_is_better:
        assert ours.gate.challenger >= baseline - 0.03, (ours.gate.challenger, baseline)
    else:
        assert ours.gate.challenger <= baseline * 1.10, (ours.gate.challenger, baseline)
