"""Time a warm prediction through the inference Lambda against bare onnxruntime.

``python -m bench.predict``. Trains a small churn-like classifier with the real training entry
point, publishes it into a moto registry table and bucket, then times, for 1 and 100 rows:

- **handler**: ``lambda_handler`` on an API Gateway REST event built once (JSON body in, response
  dict out), with the real DynamoDB registry and S3 adapters, warm (model cached), metrics and
  tracing disabled, log level WARNING;
- **envelope**: the Powertools resolver and the three decorators around a route that returns a
  constant: what routing alone would cost. The handler's live predict skips the resolver
  (``handler._live_predict``), so handler − envelope is no longer sluice's share; the column
  shows what the resolver would add;
- **floor**: ``InferenceSession.run`` on the same model with feeds built once: what no handler
  can beat.

The ratio handler / floor is the per-request overhead of HTTP parsing, validation, feature
checks and serialisation. The target is ≤ 10× on one row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Set before the handler module (and Powertools) is imported: they read these at import time.
os.environ.update(
    {
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_SERVICE_NAME": "sluice-inference-bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }
)

import boto3
import numpy as np
import onnxruntime as ort
import pandas as pd
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from moto import mock_aws

from functions.shared.contract import FeatureKind
from functions.shared.features import (
    MISSING_CATEGORY,
    DatasetSchema,
    FeatureSpec,
    instances_to_columns,
    onnx_feeds,
)
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
from functions.shared.observability import logger, metrics, tracer
from functions.shared.registry import NewModelVersion
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from functions.shared.scoring import session_options
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.train import train
from infra.local.pipeline import LocalLambdaContext

EVENT = Path(__file__).resolve().parents[1] / "events" / "predict.apigw_rest.json"
DATASET = "churn"
TABLE = "sluice-registry-bench"
BUCKET = "sluice-artifacts-bench"
ROWS = (1, 100)
TARGET_RATIO = 10.0
SECONDS_PER_MEASURE = 8.0
MAX_ITERATIONS = 20_000
ROUND = 100  # calls of one kind before switching to the other


CONTEXT = LocalLambdaContext(
    function_name="sluice-inference-bench",
    memory_limit_in_mb=1024,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:sluice-inference-bench",
    aws_request_id="00000000-0000-0000-0000-000000000000",
)


def synthetic_version(root: Path, rows: int = 3000, seed: int = 7) -> DatasetSchema:
    """A churn-like table (6 numeric, 2 categorical features, a few gaps), split 70/15/15 and
    written as preprocess writes a dataset version."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 6)) * np.array([10, 30, 1000, 1, 5, 0.1])
    plan = rng.choice(np.array(["basic", "standard", "premium"], dtype=object), rows)
    region = rng.choice(np.array([f"region {i}" for i in range(12)], dtype=object), rows)
    signal = numeric @ rng.normal(size=6) / 100 + (plan == "basic") + rng.normal(0, 0.5, rows)
    frame = pd.DataFrame({f"num_{i}": numeric[:, i] for i in range(6)})
    frame.loc[rng.random(rows) < 0.05, "num_0"] = np.nan
    frame["plan"] = plan
    frame["region"] = np.where(rng.random(rows) < 0.05, MISSING_CATEGORY, region)
    frame["churned"] = np.where(signal > np.median(signal), "yes", "no")
    features = [FeatureSpec(name=f"num_{i}", kind=FeatureKind.NUMERIC) for i in range(6)]
    features += [FeatureSpec(name=c, kind=FeatureKind.CATEGORICAL) for c in ("plan", "region")]
    schema = DatasetSchema(
        dataset=DATASET,
        dataset_version="bench",
        task="classification",
        target="churned",
        metric="roc_auc",
        features=features,
        classes=["no", "yes"],
    )
    bounds = (0, int(rows * 0.7), int(rows * 0.85), rows)
    for split, start, stop in zip(
        ("train", "validation", "test"), bounds, bounds[1:], strict=False
    ):
        (root / split).mkdir(parents=True)
        frame.iloc[start:stop].to_parquet(root / split / "part-0.parquet", index=False)
    (root / "train" / "dataset.json").write_text(schema.model_dump_json())
    return schema


def train_model(root: Path) -> tuple[bytes, ModelCard, pd.DataFrame]:
    synthetic_version(root / "version")
    paths = SageMakerPaths.for_version(root / "version", root)
    card = train(paths, Hyperparameters(n_estimators=100), num_gpus=0)
    test = pd.read_parquet(root / "version" / "test" / "part-0.parquet")
    return (paths.model / MODEL_FILE).read_bytes(), card, test


def publish(onnx_bytes: bytes, card: ModelCard) -> None:
    """Put the model where a promotion leaves it: files in S3, version live in the registry."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    prefix = f"{DATASET}/models/bench/"
    s3.put_object(Bucket=BUCKET, Key=prefix + MODEL_FILE, Body=onnx_bytes)
    s3.put_object(Bucket=BUCKET, Key=prefix + MODEL_CARD_FILE, Body=card.model_dump_json())
    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, TABLE)
    registry = DynamoDBRegistry(dynamodb, TABLE)
    uri = f"s3://{BUCKET}/{prefix}"
    version = registry.register(
        NewModelVersion(
            dataset=DATASET,
            run_name="bench",
            dataset_version=card.dataset_version,
            model_uri=uri + MODEL_FILE,
            card_uri=uri + MODEL_CARD_FILE,
            report_uri=uri + "evaluation.json",
            artifact_uri=uri + "output/model.tar.gz",
            sha256=card.onnx.sha256,
            metric=card.metric,
            metric_value=None,
        ),
        actor="bench",
    )
    registry.promote(DATASET, version.version, expected_live=None, actor="bench", reason="bench")


def instances(test: pd.DataFrame, card: ModelCard, rows: int) -> list[dict[str, Any]]:
    """Test rows as a client sends them: JSON scalars, null for a missing value."""
    names = [f.name for f in card.features]
    picked = test[names].head(rows).astype(object)
    records: list[dict[str, Any]] = picked.where(picked.notna(), None).to_dict("records")
    for record in records:
        for key, value in record.items():
            if value == MISSING_CATEGORY:
                record[key] = None
    return records


def envelope() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Powertools envelope alone: the same resolver settings, route and decorators around a
    route that returns a constant. What the handler costs beyond it is sluice's own work."""
    app = APIGatewayRestResolver(enable_validation=True)

    def constant(dataset: str) -> Response[str]:
        return Response(200, content_types.APPLICATION_JSON, '{"predictions":[]}')

    app.post("/v1/models/<dataset>:predict", enable_validation=False)(constant)

    @logger.inject_lambda_context
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        logger.set_correlation_id(event["requestContext"]["requestId"])
        return app.resolve(event, context)

    return handler


def measure(calls: dict[str, Callable[[], object]]) -> dict[str, list[int]]:
    """Samples (ns) of each call, interleaved in short rounds within a time budget, so that
    whatever else the machine does weighs on all of them alike and the ratios stay meaningful."""
    for call in calls.values():
        for _ in range(200):
            call()
    samples: dict[str, list[int]] = {name: [] for name in calls}
    deadline = time.perf_counter() + SECONDS_PER_MEASURE
    while len(samples["handler"]) < MAX_ITERATIONS and time.perf_counter() < deadline:
        for name, call in calls.items():
            sink = samples[name]
            for _ in range(ROUND):
                started = time.perf_counter_ns()
                call()
                sink.append(time.perf_counter_ns() - started)
    return samples


def median_p99(samples: list[int]) -> tuple[float, float]:
    """Median and p99, in µs."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1000, p99 / 1000


def run() -> tuple[str, list[tuple[int, dict[str, list[int]]]]]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        onnx_bytes, card, test = train_model(Path(tmp))
    results = []
    with mock_aws():
        publish(onnx_bytes, card)
        os.environ["REGISTRY_TABLE"] = TABLE
        import boto3

        from functions.inference import handler as handler_module
        from functions.inference.capture import CaptureBuffer, CaptureSettings
        from functions.inference.handler import lambda_handler
        from functions.inference.serving_metrics import ServingMetrics
        from functions.shared.storage import S3ObjectStore

        store = S3ObjectStore(boto3.client("s3", region_name="us-east-1"))
        # Capture (10 % sampled, flushed to S3 on its thread) and serving metrics on, or off.
        observed = (
            CaptureBuffer(CaptureSettings(bucket=BUCKET, sample_rate=0.1), store),
            ServingMetrics(enabled=True, emit=lambda document: None),
        )
        unobserved = (CaptureBuffer(CaptureSettings(), store), ServingMetrics(enabled=False))

        def observing(on: bool) -> Callable[[dict[str, Any]], object]:
            chosen = observed if on else unobserved

            def call(event: dict[str, Any]) -> object:
                handler_module._observers = lambda: chosen  # type: ignore[assignment]
                return lambda_handler(event, CONTEXT)

            return call

        plain, watched = observing(False), observing(True)

        session = ort.InferenceSession(
            onnx_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
        bare = envelope()
        template = json.loads(EVENT.read_text())
        for rows in ROWS:
            body = instances(test, card, rows)
            event = {**template, "body": json.dumps({"instances": body})}
            feeds = onnx_feeds(card.features, instances_to_columns(card.features, body))
            response = lambda_handler(event, CONTEXT)
            assert response["statusCode"] == 200, response["body"]
            assert len(json.loads(response["body"])["predictions"]) == rows
            calls: dict[str, Callable[[], object]] = {
                "handler": lambda: plain(event),  # noqa: B023
                "observed": lambda: watched(event),  # noqa: B023
                "envelope": lambda: bare(event, CONTEXT),  # noqa: B023
                "floor": lambda: session.run(None, feeds),  # noqa: B023
            }
            results.append((rows, measure(calls)))
    return card.chosen, results


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    # A successful prediction adds no metric, so Powertools warns at every flush; once is enough.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    started = time.perf_counter()
    chosen, results = run()
    print(f"model: {chosen}, onnxruntime {ort.__version__}, {os.cpu_count()} cores; µs, warm")
    print(
        f"{'rows':>4}  {'handler med':>11}  {'p99':>7}  {'envelope med':>12}  "
        f"{'floor med':>9}  {'p99':>6}  {'handler/floor':>13}  {'envelope/floor':>14}"
    )
    for rows, samples in results:
        (h_med, h_p99), (e_med, _), (f_med, f_p99) = (
            median_p99(samples[name]) for name in ("handler", "envelope", "floor")
        )
        print(
            f"{rows:>4}  {h_med:>11.1f}  {h_p99:>7.1f}  {e_med:>12.1f}  {f_med:>9.1f}  "
            f"{f_p99:>6.1f}  {h_med / f_med:>12.1f}×  {e_med / f_med:>13.1f}×"
        )
    for rows, samples in results:
        (o_med, o_p99), (h_med, _) = (median_p99(samples[n]) for n in ("observed", "handler"))
        print(
            f"{rows:>4}  with capture (10 %) + serving metrics: {o_med:.1f} µs (p99 {o_p99:.1f})"
            f" = {o_med / h_med:.2f}× without (target ≤ 1.5×)"
        )
    h_one, f_one = (median_p99(results[0][1][name])[0] for name in ("handler", "floor"))
    ratio = h_one / f_one
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"target: handler ≤ {TARGET_RATIO:.0f}× floor on 1 row: {verdict} ({ratio:.1f}×)")
    print(
        f"envelope: the resolver + decorators around a constant route (the live predict skips it); "
        f"{len(results[0][1]['handler'])} samples per figure on 1 row"
    )
    print(f"bench seconds: {time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
