"""What a blend costs to serve: warm 1-row predict through the handler and session creation,
for the best family alone and blends of 2 and 3 families, and a 3-family blend at the tree cap.

``python -m bench.ensemble [--quick] [--json]``. Fits the three families with their default
configuration (no search) on bench/predict.py's churn-like table, blends the top 1, 2 and 3 of
them as training would (``ensemble.blend_graphs``, equal weights: the weights do not change the
cost), and adds a blend whose two boosted members hold ``MAX_ENSEMBLE_TREES`` trees between
them (early stopping off), the largest a blend may be. Each graph is published as its own
dataset in a moto registry and bucket, then, interleaved in short rounds so that the machine's
other load weighs on all alike: ``lambda_handler`` on the stored predict event with one row
(warm, capture and serving metrics off, as bench/predict.py's "sluice"), ``InferenceSession.run``
on feeds built once (the floor), and ``InferenceSession`` creation (the part of a cold start a
bigger graph changes). Targets: the handler at most ``TARGET_US`` (issue 17), and session
creation adding at most 10 % of bench/coldstart.py's cold start over the single family's.
"""

from __future__ import annotations

import functools
import hashlib
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import onnx
import onnxruntime as ort
from moto import mock_aws
from sklearn.pipeline import Pipeline

from bench.predict import (  # first: it sets the Powertools environment the handler reads
    BUCKET,
    CONTEXT,
    TABLE,
    median_p99,
    predict_event,
    publish,
    sample,
    synthetic_version,
)
from bench.report import Figure, Section, run_cli
from functions.shared.features import DatasetSchema, onnx_feeds, onnx_input_names
from functions.shared.model_card import ModelCard
from functions.shared.scoring import session_options
from functions.shared.storage import S3ObjectStore
from functions.training.candidates import (
    FittedCandidate,
    build_candidates,
    rank_candidates,
)
from functions.training.ensemble import blend_graphs, tree_count
from functions.training.export import describe_onnx, to_onnx
from functions.training.script_mode import (
    MAX_ENSEMBLE_TREES,
    CandidateName,
    Hyperparameters,
    SageMakerPaths,
)
from functions.training.search import Searcher
from functions.training.splits import Split, load_schema, load_split, read_channel_frame
from functions.training.train import train

TARGET_US = 150.0  # warm 1-row predict through the handler (issue 17)
COLD_START_SECONDS = 0.40  # bench/coldstart.py's sluice figure (README, 2026-12-03)
COLD_START_SHARE = 0.10  # a blend's session may add this share of it
SECONDS, QUICK_SECONDS = 12.0, 3.0
ROUND = 50
CREATIONS, QUICK_CREATIONS = 15, 5
FAMILIES: tuple[CandidateName, ...] = ("linear", "xgboost", "lightgbm")


def _fitted(root: Path) -> tuple[list[FittedCandidate], DatasetSchema, Split, Split, ModelCard]:
    """The three families as training fits them with no search, best first, and the card of a
    training run on the same data (to publish each graph with, its ``onnx`` replaced)."""
    synthetic_version(root / "version")
    paths = SageMakerPaths.for_version(root / "version", root)
    card = train(paths, Hyperparameters(max_trials=1), num_gpus=0)
    schema = load_schema(paths.train)
    train_split = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    searcher = Searcher(schema, Hyperparameters(max_trials=1), train_split, validation, num_gpus=0)
    fitted = [searcher.search(name, len(FAMILIES) - i) for i, name in enumerate(FAMILIES)]
    return rank_candidates(fitted, schema.metric), schema, train_split, validation, card


def _at_the_cap(schema: DatasetSchema, train_split: Split) -> list[Pipeline]:
    """XGBoost and LightGBM with MAX_ENSEMBLE_TREES / 2 rounds each, early stopping off."""
    pipelines = build_candidates(
        schema, Hyperparameters(n_estimators=MAX_ENSEMBLE_TREES // 2), num_gpus=0
    )
    pipelines["xgboost"].named_steps["model"].set_params(early_stopping_rounds=None)
    pipelines["lightgbm"].named_steps["model"].set_params(early_stopping_round=None)
    return [
        pipelines[name].fit(train_split.frame, train_split.y) for name in ("xgboost", "lightgbm")
    ]


def configurations(root: Path) -> tuple[dict[str, tuple[bytes, int]], DatasetSchema, ModelCard]:
    """What is measured: name -> (graph, trees)."""
    ranked, schema, train_split, _, card = _fitted(root)
    pipelines = [c.pipeline for c in ranked]
    linear = next(c.pipeline for c in ranked if c.name == "linear")
    capped = [*_at_the_cap(schema, train_split), linear]
    names = [c.name for c in ranked]
    chosen = {
        f"{names[0]} alone": pipelines[:1],
        f"{names[0]} + {names[1]}": pipelines[:2],
        " + ".join(names): pipelines,
        f"3 families, {MAX_ENSEMBLE_TREES} trees (the cap)": capped,
    }
    out: dict[str, tuple[bytes, int]] = {}
    for name, members in chosen.items():
        graphs = [to_onnx(p, schema) for p in members]
        weights = [1.0 / len(members)] * len(members)
        graph = graphs[0] if len(graphs) == 1 else blend_graphs(graphs, weights, schema)
        out[name] = (graph, sum(tree_count(p) for p in members))
    return out, schema, card


def run(quick: bool) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        measured, schema, card = configurations(Path(tmp))
        test = read_channel_frame(Path(tmp) / "version" / "test")
    results: dict[str, dict[str, Any]] = {}
    with mock_aws():
        os.environ["REGISTRY_TABLE"] = TABLE
        from functions.inference import api as inference_api
        from functions.inference.capture import CaptureBuffer, CaptureSettings
        from functions.inference.handler import lambda_handler
        from functions.inference.serving_metrics import ServingMetrics

        store = S3ObjectStore(boto3.client("s3", region_name="us-east-1"))
        quiet = (CaptureBuffer(CaptureSettings(), store), ServingMetrics(enabled=False))
        inference_api.observers = lambda: quiet  # type: ignore[assignment]
        calls: dict[str, Callable[[], object]] = {}
        floors: dict[str, Callable[[], object]] = {}
        for number, (name, (graph, _)) in enumerate(measured.items()):
            slug = f"blend-{number}"
            sha = hashlib.sha256(graph).hexdigest()
            session = ort.InferenceSession(
                graph, sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
            described = card.model_copy(update={"onnx": describe_onnx(graph, sha, session)})
            publish(graph, described, dataset=slug)
            event = predict_event(test, card, 1, dataset=slug)
            response = lambda_handler(event, CONTEXT)
            assert response["statusCode"] == 200, response["body"]
            calls[name] = functools.partial(lambda_handler, event, CONTEXT)
            columns = {f.name: test[f.name].head(1).to_numpy() for f in schema.features}
            feeds = onnx_feeds(schema.features, columns, onnx_input_names(schema.features))
            floors[name] = functools.partial(session.run, None, feeds)
        seconds = QUICK_SECONDS if quick else SECONDS
        handler = _interleaved(calls, seconds)
        floor = _interleaved(floors, seconds / 2)
        creations = QUICK_CREATIONS if quick else CREATIONS
        created: dict[str, list[float]] = {name: [] for name in measured}
        for _ in range(creations):
            for name, (graph, _) in measured.items():
                started = time.perf_counter()
                ort.InferenceSession(
                    graph, sess_options=session_options(), providers=["CPUExecutionProvider"]
                )
                created[name].append(time.perf_counter() - started)
    for name, (graph, trees) in measured.items():
        results[name] = {
            "handler": median_p99(handler[name]),
            "floor": median_p99(floor[name])[0],
            "session_ms": 1000 * statistics.median(created[name]),
            "bytes": len(graph),
            "trees": trees,
            "nodes": len(onnx.load_from_string(graph).graph.node),
            "samples": len(handler[name]),
        }
    return results


def _interleaved(calls: dict[str, Callable[[], object]], seconds: float) -> dict[str, list[int]]:
    first = next(iter(calls))
    renamed = {"sluice" if name == first else name: call for name, call in calls.items()}
    samples = sample(renamed, seconds, dict.fromkeys(renamed, ROUND))
    return {(first if name == "sluice" else name): s for name, s in samples.items()}


def measure(quick: bool = False) -> Section:
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    results = run(quick)
    section = Section("ensemble", "Serving a blend: warm 1-row predict and session creation")
    single = next(iter(results.values()))
    budget_ms = 1000 * COLD_START_SECONDS * COLD_START_SHARE
    for name, figures in results.items():
        median, p99 = figures["handler"]
        section.add(
            Figure(
                f"warm predict, 1 row, {name} (median)",
                "µs",
                median,
                floor=figures["floor"],
                target=f"≤ {TARGET_US:.0f} µs",
                met=median <= TARGET_US,
                note=f"{figures['trees']} trees, {figures['nodes']} nodes, "
                f"{figures['bytes'] / 1e6:.2f} MB; p99 {p99:.0f} µs; "
                f"{figures['samples']} samples",
            )
        )
        added = figures["session_ms"] - single["session_ms"]
        section.add(
            Figure(
                f"session creation, {name}",
                "ms",
                figures["session_ms"],
                floor=single["session_ms"],
                target=f"≤ +{budget_ms:.0f} ms (10 % of cold start)",
                met=added <= budget_ms,
                note=f"floor: the best family alone; +{added:.1f} ms",
            )
        )
    section.details = {
        "load_average": os.getloadavg()[0],
        "onnxruntime": ort.__version__,
        "bucket": BUCKET,
    }
    return section


def main(argv: list[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
