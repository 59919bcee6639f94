"""The inference function must not need pandas, scikit-learn, scipy or pyarrow at run time.

The layer ships onnxruntime, numpy, pydantic, Powertools and boto3 only: a stray import of a
training library would fail in Lambda, not here, unless a test runs a real prediction in a fresh
interpreter and looks at what got imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models import TrainedModel

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("pandas", "sklearn", "scipy", "pyarrow")
# What the explanations are checked against, and the graph library training reads them with:
# none of it is in the layer either.
EXPLAIN_FORBIDDEN = ("shap", "xgboost", "lightgbm", "onnx", "numba")

# Runs in a fresh interpreter: moto stands in for DynamoDB and S3 (it imports none of the four).
SCRIPT = """
import json, os, sys
os.environ.update(POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_DISABLED="true",
                  AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="x",
                  AWS_SECRET_ACCESS_KEY="x", REGISTRY_TABLE="registry")
import boto3
from moto import mock_aws

model_dir, event_file = sys.argv[1], sys.argv[2]
with mock_aws():
    from functions.shared.model_card import ModelCard
    from functions.shared.registry import NewModelVersion
    from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
    from functions.inference.handler import lambda_handler

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="artifacts-bucket")
    for name in ("model.onnx", "model_card.json"):
        with open(os.path.join(model_dir, name), "rb") as f:
            s3.put_object(Bucket="artifacts-bucket", Key="m/" + name, Body=f.read())
    card = ModelCard.model_validate_json(open(os.path.join(model_dir, "model_card.json")).read())
    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, "registry")
    registry = DynamoDBRegistry(dynamodb, "registry")
    version = registry.register(NewModelVersion(
        dataset="churn", run_name="run-1", dataset_version=card.dataset_version,
        model_uri="s3://artifacts-bucket/m/model.onnx",
        card_uri="s3://artifacts-bucket/m/model_card.json",
        report_uri="s3://artifacts-bucket/m/evaluation.json",
        artifact_uri="s3://artifacts-bucket/m/model.tar.gz",
        sha256=card.onnx.sha256, metric=card.metric, metric_value=None), actor="test")
    registry.promote("churn", version.version, expected_live=None, actor="test", reason="test")

    class Context:
        function_name = "f"
        memory_limit_in_mb = 128
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
        aws_request_id = "r"

    response = lambda_handler(json.load(open(event_file)), Context())
print(json.dumps({
    "status": response["statusCode"],
    "body": json.loads(response["body"]),
    "imported": [m for m in sys.argv[3:] if m in sys.modules],
}))
"""


@pytest.mark.parametrize("route", ["predict", "explain"])
def test_a_prediction_imports_none_of_the_training_libraries(
    tmp_path: Path, trained_models: dict[str, TrainedModel], route: str
) -> None:
    # Given a trained model's files and the stored predict event, rewritten for its features
    # (and, for an explanation, its route)
    model = trained_models["binary"]
    (tmp_path / "model.onnx").write_bytes(model.onnx)
    (tmp_path / "model_card.json").write_bytes(model.card_json)
    event = json.loads((ROOT / "events" / "predict.apigw_rest.json").read_text())
    event["body"] = json.dumps({"instances": [{f.name: 0.5 for f in model.card.features}]})
    event["path"] = event["path"].replace(":predict", f":{route}")
    event["requestContext"]["path"] = event["requestContext"]["path"].replace(
        ":predict", f":{route}"
    )
    (tmp_path / "event.json").write_text(json.dumps(event))

    # When a fresh interpreter imports the handler and runs one prediction through it
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(tmp_path),
            str(tmp_path / "event.json"),
            *FORBIDDEN,
            *EXPLAIN_FORBIDDEN,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then the prediction succeeded and none of the four libraries was imported
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 200, outcome["body"]
    answers = outcome["body"]["predictions" if route == "predict" else "explanations"]
    assert len(answers) == 1
    assert outcome["imported"] == []
