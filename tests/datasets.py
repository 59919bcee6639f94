"""Deterministic dataset versions, shaped as preprocess writes them, for training tests and bench.

A version directory holds ``train/part-0.parquet``, ``train/dataset.json``,
``validation/part-0.parquet`` and ``test/part-0.parquet``. Numeric features are float64 with
NaN for missing values, categorical ones normalised strings with ``MISSING_CATEGORY``, the target
a class label (classification) or a float64 (regression). The same seed gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from functions.shared.contract import FeatureKind
from functions.shared.features import MISSING_CATEGORY, DatasetSchema, FeatureSpec
from functions.shared.layout import channel_key, part_split_key, version_prefix
from functions.shared.row_hash import ROW_HASH

Task = Literal["classification", "regression"]
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
# Category counts per categorical column, cycled; the 150-level column exceeds the training
# one-hot cap, so the infrequent-category path is exercised.
CARDINALITIES = (4, 150, 7, 12, 3)
# Bin labels in signal order; deliberately not in sorted order, so that a model that confused
# bin order with schema.classes order would fail its metric.
LABELS = {2: ("yes", "no"), 3: ("gold", "bronze", "silver")}


@dataclass(frozen=True)
class Generated:
    frame: pd.DataFrame
    schema: DatasetSchema


def synthetic(
    rows: int,
    *,
    task: Task,
    metric: str,
    n_numeric: int,
    n_categorical: int,
    n_classes: int = 2,
    class_shares: tuple[float, ...] | None = None,
    cardinalities: tuple[int, ...] = CARDINALITIES,
    missing: float = 0.05,
    target_offset: float = 0.0,
    target_scale: float = 1.0,
    extra_columns: bool = False,
    name: str = "synthetic",
    seed: int = 0,
) -> Generated:
    """A learnable table: the target mixes linear, interaction, non-linear and category effects,
    so both a linear model and boosted trees find signal and the trees find more."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    signal = np.zeros(rows)
    features: list[FeatureSpec] = []
    numeric = rng.normal(size=(rows, n_numeric))
    for i in range(n_numeric):
        name_i = f"num_{i}"
        columns[name_i] = numeric[:, i] * 10.0 ** (i % 3)  # mixed scales
        features.append(FeatureSpec(name=name_i, kind=FeatureKind.NUMERIC))
        signal += rng.normal() * numeric[:, i] / max(1, i)
    if n_numeric >= 3:
        signal += numeric[:, 0] * numeric[:, 1] + np.sin(3 * numeric[:, 2])
    for j in range(n_categorical):
        name_j = f"cat_{j}"
        levels = cardinalities[j % len(cardinalities)]
        # Zipf-like frequencies: a few common levels and a long tail of rare ones.
        weights = 1.0 / np.arange(1, levels + 1)
        codes = rng.choice(levels, size=rows, p=weights / weights.sum())
        effects = rng.normal(scale=0.8, size=levels)
        signal += effects[codes]
        columns[name_j] = np.array([f"level {k}" for k in codes], dtype=object)
        features.append(FeatureSpec(name=name_j, kind=FeatureKind.CATEGORICAL))
    signal += rng.normal(scale=0.3, size=rows)

    for spec in features:
        holes = rng.random(rows) < missing
        values = np.asarray(columns[spec.name])
        if spec.kind is FeatureKind.NUMERIC:
            values = np.where(holes, np.nan, values)
        else:
            values = np.where(holes, MISSING_CATEGORY, values)
        columns[spec.name] = values

    target = "label" if task == "classification" else "price"
    classes: list[str] | None = None
    if task == "classification":
        labels = LABELS[n_classes]
        # class_shares: each label's share of rows, in LABELS order (default: even)
        cuts = (
            np.cumsum(class_shares)[:-1] if class_shares else np.linspace(0, 1, n_classes + 1)[1:-1]
        )
        edges = np.quantile(signal, cuts)
        columns[target] = np.array(labels, dtype=object)[np.digitize(signal, edges)]
        classes = sorted(labels)
    else:
        columns[target] = target_offset + target_scale * signal

    id_column: str | None = None
    sensitive: list[str] = []
    if extra_columns:
        id_column, sensitive = "customer_id", ["region"]
        columns[id_column] = np.array([f"c-{k:07d}" for k in range(rows)], dtype=object)
        columns["region"] = rng.choice(np.array(["north", "south"], dtype=object), size=rows)

    frame = pd.DataFrame(columns)
    for spec in features:
        if spec.kind is FeatureKind.CATEGORICAL:
            frame[spec.name] = frame[spec.name].astype("str")
    if task == "classification":
        frame[target] = frame[target].astype("str")
    schema = DatasetSchema(
        dataset=name,
        dataset_version=f"v-{seed:04d}",
        task=task,
        target=target,
        metric=metric,
        features=features,
        classes=classes,
        id_column=id_column,
        sensitive=sensitive,
    )
    return Generated(frame=frame, schema=schema)


def write_dataset_version(root: Path, generated: Generated) -> DatasetSchema:
    """Shuffle, split 70/15/15 and write the version directory under ``root``."""
    frame = generated.frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    bounds = np.cumsum([0, *(round(f * len(frame)) for f in SPLIT_FRACTIONS)])
    bounds[-1] = len(frame)
    for split, start, stop in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        directory = root / split
        directory.mkdir(parents=True, exist_ok=True)
        frame.iloc[start:stop].to_parquet(directory / "part-0.parquet", index=False)
    (root / "train" / "dataset.json").write_text(generated.schema.model_dump_json(indent=2))
    return generated.schema


def with_row_hash(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus the ``__row_hash`` column a format-2 part's file carries (a hash of the
    row over every column; equal rows, equal hash)."""
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)
    return frame.assign(**{ROW_HASH: hashes})


def write_parts_version(
    version: Path, root: Path, prefix_uri: str, *, parts: int = 2, repeat: int = 3
) -> dict[str, str]:
    """Lay the format-1 version directory ``version`` out under ``root`` (a dataset's folder,
    whose S3 uri is ``prefix_uri``) as a format-2 version: each split's rows dealt to ``parts``
    parts in order, each part after the first also holding the first ``repeat`` rows of the one
    before (the same rows, so readers keep the earlier file's copy), the schema at
    ``versions/<v>/dataset.json`` and one channel manifest per split. Read back, every split
    holds exactly the rows of ``version``, in the same order. Returns split -> manifest key
    (relative to ``root``)."""
    schema = DatasetSchema.model_validate_json((version / "train" / "dataset.json").read_bytes())
    dataset, name = schema.dataset, schema.dataset_version
    strip = f"{dataset}/"
    (root / version_prefix(dataset, name).removeprefix(strip)).mkdir(parents=True, exist_ok=True)
    schema_key = f"{version_prefix(dataset, name)}dataset.json".removeprefix(strip)
    (root / schema_key).write_bytes((version / "train" / "dataset.json").read_bytes())
    channels: dict[str, str] = {}
    for split in SPLITS:
        frame = pd.read_parquet(version / split / "part-0.parquet")
        bounds = np.linspace(0, len(frame), parts + 1).round().astype(int)
        keys = []
        for index in range(parts):
            start = bounds[index] - (repeat if index else 0)
            chunk = with_row_hash(frame.iloc[max(start, 0) : bounds[index + 1]])
            key = part_split_key(dataset, f"p{index:04d}", split).removeprefix(strip)
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            chunk.to_parquet(root / key, index=False)
            keys.append(key)
        manifest = [{"prefix": prefix_uri}, *keys, *([schema_key] if split == "train" else [])]
        channels[split] = channel_key(dataset, name, split).removeprefix(strip)
        (root / channels[split]).parent.mkdir(parents=True, exist_ok=True)
        (root / channels[split]).write_text(json.dumps(manifest))
    return channels


def binary_numeric(root: Path, rows: int = 2000, seed: int = 1) -> DatasetSchema:
    """Two classes, numeric features only (with missing values)."""
    generated = synthetic(
        rows,
        task="classification",
        metric="roc_auc",
        n_numeric=6,
        n_categorical=0,
        name="binary",
        seed=seed,
    )
    return write_dataset_version(root, generated)


def imbalanced_binary(root: Path, rows: int = 3000, seed: int = 4) -> DatasetSchema:
    """Two classes, 6 % positives ("yes", the low-signal end), numeric and categorical
    features with gaps, scored on f1_macro: the rare class decides the metric."""
    generated = synthetic(
        rows,
        task="classification",
        metric="f1_macro",
        n_numeric=6,
        n_categorical=2,
        class_shares=(0.06, 0.94),
        name="imbalanced",
        seed=seed,
    )
    return write_dataset_version(root, generated)


def multiclass_mixed(root: Path, rows: int = 3000, seed: int = 2) -> DatasetSchema:
    """Three classes; numeric and categorical features, both with missing values; an id column
    and a sensitive column that training must ignore."""
    generated = synthetic(
        rows,
        task="classification",
        metric="f1_macro",
        n_numeric=5,
        n_categorical=3,
        n_classes=3,
        missing=0.08,
        extra_columns=True,
        name="multiclass",
        seed=seed,
    )
    return write_dataset_version(root, generated)


def regression_prices(root: Path, rows: int = 3000, seed: int = 3) -> DatasetSchema:
    """A price-like target around 2e5 (float32 spacing there is ~0.016), with categoricals."""
    generated = synthetic(
        rows,
        task="regression",
        metric="rmse",
        n_numeric=5,
        n_categorical=2,
        target_offset=200_000.0,
        target_scale=40_000.0,
        name="prices",
        seed=seed,
    )
    return write_dataset_version(root, generated)


def one_categorical(root: Path, task: Task, rows: int = 1000, seed: int = 5) -> DatasetSchema:
    """Three numerics and ONE categorical feature of 150 Zipf-distributed levels: the 25 or so
    most common are on 5 or more training rows, the long tail on fewer, so the one-hot encoder
    has infrequent categories and a single input (the case onnx/sklearn-onnx#1026 refuses)."""
    generated = synthetic(
        rows,
        task=task,
        metric="f1_macro" if task == "classification" else "rmse",
        n_numeric=3,
        n_categorical=1,
        cardinalities=(150,),
        name="one-categorical",
        seed=seed,
    )
    return write_dataset_version(root, generated)


def used_car_prices(root: Path, rows: int = 40_000, seed: int = 7) -> DatasetSchema:
    """Used-car prices: lognormal, 500 to 200 000, median about 12 000, a long upper tail.

    Price is multiplicative in the features (age, mileage, make, ...), so a model of the raw
    price sums terms of the size of the mean price for every car, and the linear model predicts
    values near zero and below for the cheapest ones: where float32 rounding of those terms is
    largest relative to the prediction.
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 20, rows)
    mileage = np.clip(age * 12_000 + rng.normal(0, 20_000, rows), 0, None)
    power = rng.lognormal(4.7, 0.35, rows)
    doors = rng.choice([2.0, 3.0, 4.0, 5.0], rows)
    makes, fuels, bodies = 30, 4, 6
    make = rng.integers(0, makes, rows)
    fuel = rng.integers(0, fuels, rows)
    body = rng.integers(0, bodies, rows)
    log_price = (
        10.6
        - 0.11 * age
        - 2e-6 * mileage
        + 0.9 * np.log(power / 110)
        + 0.03 * doors
        + rng.normal(0, 0.45, makes)[make]
        + rng.normal(0, 0.1, fuels)[fuel]
        + rng.normal(0, 0.15, bodies)[body]
        + rng.normal(0, 0.25, rows)
    )
    frame = pd.DataFrame(
        {
            "age": age,
            "mileage": mileage,
            "power": power,
            "doors": doors,
            "make": [f"make {k}" for k in make],
            "fuel": [f"fuel {k}" for k in fuel],
            "body": [f"body {k}" for k in body],
            "price": np.clip(np.exp(log_price), 500, 200_000),
        }
    )
    numeric, categorical = FeatureKind.NUMERIC, FeatureKind.CATEGORICAL
    schema = DatasetSchema(
        dataset="used-cars",
        dataset_version=f"v-{seed:04d}",
        task="regression",
        target="price",
        metric="rmse",
        features=[
            *(FeatureSpec(name=n, kind=numeric) for n in ("age", "mileage", "power", "doors")),
            *(FeatureSpec(name=n, kind=categorical) for n in ("make", "fuel", "body")),
        ],
    )
    return write_dataset_version(root, Generated(frame=frame, schema=schema))


# Headers as real files spell them: spaces, punctuation, non-ASCII, a leading digit, the graph's
# output names, and three spellings ("a b", "a_b", "a-b") that sanitise alike.
AWKWARD_HEADERS = (
    "a b",
    "a_b",
    "a-b",
    "od280/od315_of_diluted_wines",
    "revenu €",
    "label",
    "2024 sales",
    "probabilities",
    "variable",
    "e.f",
)


def awkward_headers(
    root: Path, rows: int = 1500, seed: int = 5, task: Task = "classification"
) -> DatasetSchema:
    """Seven numeric and three categorical features named ``AWKWARD_HEADERS``, with a target
    named with a space and punctuation too."""
    classification = task == "classification"
    generated = synthetic(
        rows,
        task=task,
        metric="f1_macro" if classification else "rmse",
        n_numeric=7,
        n_categorical=3,
        target_offset=0.0 if classification else 50_000.0,
        target_scale=1.0 if classification else 10_000.0,
        name="awkward",
        seed=seed,
    )
    original = generated.schema
    renames = dict(zip([f.name for f in original.features], AWKWARD_HEADERS, strict=True))
    renames[original.target] = "quality class" if classification else "price (€)"
    schema = DatasetSchema.model_validate(
        {
            **original.model_dump(),
            "target": renames[original.target],
            "features": [{"name": renames[f.name], "kind": f.kind} for f in original.features],
        }
    )
    frame = generated.frame.rename(columns=renames)
    return write_dataset_version(root, Generated(frame=frame, schema=schema))
