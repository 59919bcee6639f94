"""Warm predict: the inference Lambda vs bare onnxruntime (floor) vs scikit-learn (peer).

``python -m bench.predict [--quick] [--json]``. Trains a small churn-like classifier with the
real training entry point, publishes it into a moto registry table and bucket, then times, for 1
and 100 rows, interleaved in short rounds so that the machine's other load weighs on all alike:

- **sluice**: ``lambda_handler`` on an API Gateway REST event built once (JSON body in, response
  dict out), with the real DynamoDB registry and S3 adapters, warm (model cached), metrics and
  tracing disabled, log level WARNING, capture and serving metrics off;
- **observed**: the same with capture (10 % sampled, flushed to S3 on its thread) and serving
  metrics on, against the target of at most 1.5× the unobserved handler;
- **floor**: ``InferenceSession.run`` on the same model with feeds built once: what no handler
  can beat;
- **peer**: bench/peer.py's scikit-learn pipeline (one-hot + histogram gradient boosting) behind
  an equivalent handler: the same event's JSON body → pandas ``DataFrame`` → ``predict_proba`` →
  JSON.

Targets: on one row, at most 5× the floor; on both, at least 10× faster than the peer. The
details also keep the Powertools resolver and decorators around a route that returns a constant
(the envelope the live predict skips).
"""

from __future__ import annotations

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

from bench.peer import fit_peer, peer_response
from bench.report import Figure, Section, run_cli
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
from functions.training.splits import read_channel_frame
from functions.training.train import train
from infra.local.context import LocalLambdaContext

EVENT = Path(__file__).resolve().parents[1] / "events" / "predict.apigw_rest.json"
DATASET = "churn"
TABLE = "sluice-registry-bench"
BUCKET = "sluice-artifacts-bench"
ROWS = (1, 100)
FLOOR_TARGET = 5.0  # handler ≤ 5× floor on one row
PEER_TARGET = 10.0  # handler ≥ 10× faster than the peer
OBSERVED_TARGET = 1.5  # capture + serving metrics ≤ 1.5× without
SECONDS_PER_ROWS = 8.0  # measuring time per row count (--quick: QUICK_SECONDS)
QUICK_SECONDS = 1.5
MAX_ITERATIONS = 20_000
ROUND = 100  # calls of one kind before switching to the next
PEER_ROUND = 5  # the peer is ~100× slower: fewer calls a round keep the rounds interleaved


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
    return write_version(root, frame, schema)


def write_version(root: Path, frame: pd.DataFrame, schema: DatasetSchema) -> DatasetSchema:
    """Write ``frame`` split 70/15/15 in row order, as preprocess writes a dataset version."""
    rows = len(frame)
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
    test = read_channel_frame(root / "version" / "test")
    return (paths.model / MODEL_FILE).read_bytes(), card, test


def train_peer(root: Path) -> Any:
    """The peer's pipeline, fitted on the split ``train_model`` wrote under ``root``."""
    version = root / "version"
    schema = DatasetSchema.model_validate_json((version / "train" / "dataset.json").read_text())
    return fit_peer(schema, read_channel_frame(version / "train"))


def publish(
    onnx_bytes: bytes,
    card: ModelCard,
    s3: Any = None,
    dynamodb: Any = None,
    *,
    dataset: str = DATASET,
) -> None:
    """Put the model where a promotion leaves it: files in S3, version live in the registry.
    Default clients: whatever endpoint the environment names (moto's mock in this module).
    Several datasets may be published side by side (bench/ensemble.py)."""
    s3 = s3 or boto3.client("s3")
    dynamodb = dynamodb or boto3.client("dynamodb")
    s3.create_bucket(Bucket=BUCKET)
    prefix = f"{dataset}/models/bench/"
    s3.put_object(Bucket=BUCKET, Key=prefix + MODEL_FILE, Body=onnx_bytes)
    s3.put_object(Bucket=BUCKET, Key=prefix + MODEL_CARD_FILE, Body=card.model_dump_json())
    if TABLE not in dynamodb.list_tables()["TableNames"]:
        create_table(dynamodb, TABLE)
    registry = DynamoDBRegistry(dynamodb, TABLE)
    uri = f"s3://{BUCKET}/{prefix}"
    version = registry.register(
        NewModelVersion(
            dataset=dataset,
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
    registry.promote(dataset, version.version, expected_live=None, actor="bench", reason="bench")


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


def predict_event(
    test: pd.DataFrame, card: ModelCard, rows: int, dataset: str = DATASET
) -> dict[str, Any]:
    """The stored API Gateway REST predict event with ``rows`` test rows as its body, for
    ``dataset`` (the stored event names churn)."""
    template = json.loads(EVENT.read_text().replace(f"/{DATASET}:", f"/{dataset}:"))
    return {**template, "body": json.dumps({"instances": instances(test, card, rows)})}


def envelope() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Powertools envelope alone: the resolver and the three decorators around a route that
    returns a constant: what routing would add to the live predict, which skips it."""
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


def sample(
    calls: dict[str, Callable[[], object]], seconds: float, rounds: dict[str, int]
) -> dict[str, list[int]]:
    """Samples (ns) of each call, interleaved in short rounds within a time budget."""
    for name, call in calls.items():
        for _ in range(max(3, rounds[name] * 2)):
            call()
    samples: dict[str, list[int]] = {name: [] for name in calls}
    deadline = time.perf_counter() + seconds
    while len(samples["sluice"]) < MAX_ITERATIONS and time.perf_counter() < deadline:
        for name, call in calls.items():
            sink = samples[name]
            for _ in range(rounds[name]):
                started = time.perf_counter_ns()
                call()
                sink.append(time.perf_counter_ns() - started)
    return samples


def median_p99(samples: list[int]) -> tuple[float, float]:
    """Median and p99, in µs."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1000, p99 / 1000


def run(seconds: float) -> tuple[str, dict[int, dict[str, list[int]]]]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        onnx_bytes, card, test = train_model(Path(tmp))
        peer = train_peer(Path(tmp))
    names = [f.name for f in card.features]
    results: dict[int, dict[str, list[int]]] = {}
    with mock_aws():
        publish(onnx_bytes, card)
        os.environ["REGISTRY_TABLE"] = TABLE

        from functions.inference import api as inference_api
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
                inference_api.observers = lambda: chosen  # type: ignore[assignment]
                return lambda_handler(event, CONTEXT)

            return call

        plain, watched = observing(False), observing(True)
        session = ort.InferenceSession(
            onnx_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
        bare = envelope()
        for rows in ROWS:
            event = predict_event(test, card, rows)
            body = json.loads(event["body"])["instances"]
            feeds = onnx_feeds(
                card.features, instances_to_columns(card.features, body), card.input_names
            )
            response = plain(event)
            assert response["statusCode"] == 200, response["body"]  # type: ignore[index]
            predicted = json.loads(response["body"])["predictions"]  # type: ignore[index]
            answered = json.loads(peer_response(peer, names, event)["body"])["predictions"]
            assert len(predicted) == len(answered) == rows
            calls: dict[str, Callable[[], object]] = {
                "sluice": lambda: plain(event),  # noqa: B023
                "observed": lambda: watched(event),  # noqa: B023
                "envelope": lambda: bare(event, CONTEXT),  # noqa: B023
                "floor": lambda: session.run(None, feeds),  # noqa: B023
                "peer": lambda: peer_response(peer, names, event),  # noqa: B023
            }
            rounds = {name: PEER_ROUND if name == "peer" else ROUND for name in calls}
            results[rows] = sample(calls, seconds, rounds)
    return card.chosen, results


def measure(quick: bool = False) -> Section:
    # A successful prediction adds no metric, so Powertools warns at every flush; once is enough.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    chosen, results = run(QUICK_SECONDS if quick else SECONDS_PER_ROWS)
    section = Section(
        "predict",
        "Warm predict: inference handler vs InferenceSession.run (floor) vs scikit-learn (peer)",
    )
    for rows, samples in results.items():
        (s_med, s_p99), (f_med, f_p99), (p_med, p_p99) = (
            median_p99(samples[name]) for name in ("sluice", "floor", "peer")
        )
        faster = p_med / s_med >= PEER_TARGET
        if rows == 1:
            target = f"≤ {FLOOR_TARGET:.0f}× floor, ≥ {PEER_TARGET:.0f}× peer"
            met = faster and s_med / f_med <= FLOOR_TARGET
        else:
            target, met = f"≥ {PEER_TARGET:.0f}× peer", faster
        section.add(
            Figure(
                f"warm predict, {rows} row{'s' if rows > 1 else ''} (median)",
                "µs",
                sluice=s_med,
                peer=p_med,
                floor=f_med,
                target=target,
                met=met,
                note=f"p99: sluice {s_p99:.0f}, floor {f_p99:.0f}, peer {p_p99:.0f} µs; "
                f"{len(samples['sluice'])} samples (peer {len(samples['peer'])})",
            )
        )
    for rows, samples in results.items():
        (o_med, o_p99), (s_med, _) = (median_p99(samples[n]) for n in ("observed", "sluice"))
        section.add(
            Figure(
                f"capture 10 % + serving metrics, {rows} row{'s' if rows > 1 else ''}",
                "µs",
                sluice=o_med,
                floor=s_med,
                target=f"≤ {OBSERVED_TARGET}× without",
                met=o_med / s_med <= OBSERVED_TARGET,
                note=f"floor: the same handler with both off; p99 {o_p99:.0f} µs",
            )
        )
    section.details = {
        "model": chosen,
        "onnxruntime": ort.__version__,
        "peer": "Pipeline(ColumnTransformer(passthrough, impute+OneHotEncoder), "
        "HistGradientBoostingClassifier) behind json → DataFrame → predict_proba → json",
        "envelope_us": {  # Powertools' resolver + decorators around a constant route
            rows: round(median_p99(samples["envelope"])[0], 1) for rows, samples in results.items()
        },
        "median_us": {
            rows: {name: round(median_p99(s)[0], 1) for name, s in samples.items()}
            for rows, samples in results.items()
        },
    }
    return section


def main(argv: list[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
