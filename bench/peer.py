"""The peer: what a user would deploy instead of sluice's inference function.

A scikit-learn ``Pipeline`` (``ColumnTransformer``: numeric features passed through, categorical
ones imputed with the missing-category token and one-hot encoded, then a
``HistGradientBoostingClassifier``, which takes NaN natively) trained on the same split as
sluice's model, saved with joblib, and served by a handler equivalent to sluice's: the API
Gateway event's JSON body to a pandas ``DataFrame``, ``predict_proba``, a JSON response with
each instance's label and probabilities. It validates nothing and reads no registry: every
shortcut is in the peer's favour.

``bench.predict`` times its warm handler, ``bench.coldstart`` a fresh process to its first
answer. Imported by the benchmarks only: scikit-learn, pandas and joblib never reach the
inference path (tests/unit/test_inference_imports.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from functions.shared.features import MISSING_CATEGORY, DatasetSchema

PEER_FILE = "peer.joblib"


def fit_peer(schema: DatasetSchema, train: pd.DataFrame) -> Pipeline:
    """The peer's pipeline, fitted on the training split sluice's model was trained on."""
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    columns = ColumnTransformer(
        [
            ("numeric", "passthrough", schema.numeric),
            ("categorical", categorical, schema.categorical),
        ]
    )
    pipeline = Pipeline(
        [("columns", columns), ("model", HistGradientBoostingClassifier(random_state=0))]
    )
    names = [f.name for f in schema.features]
    pipeline.fit(train[names], train[schema.target])
    return pipeline


def save_peer(pipeline: Pipeline, directory: Path) -> Path:
    path = directory / PEER_FILE
    joblib.dump(pipeline, path)
    return path


def peer_response(
    pipeline: Pipeline, features: Sequence[str], event: dict[str, Any]
) -> dict[str, Any]:
    """The peer's handler: API Gateway event in, API Gateway response out, sluice's JSON shape."""
    instances = json.loads(event["body"])["instances"]
    frame = pd.DataFrame.from_records(instances, columns=list(features))
    probabilities = pipeline.predict_proba(frame)
    classes = [str(c) for c in pipeline.classes_]
    labels = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)].tolist()
    predictions = [
        {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
        for label, row in zip(labels, probabilities.tolist(), strict=True)
    ]
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"predictions": predictions}),
    }
