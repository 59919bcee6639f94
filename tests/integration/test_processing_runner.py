"""The local processing runner under moto: a CreateProcessingJob request in, SageMaker
Processing's container contract honoured (inputs at their LocalPath, sharded by key when asked,
``resourceconfig.json``, outputs uploaded when every instance succeeded, ExitMessage)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.shared.storage import S3ObjectStore
from infra.local.processing_runner import ProcessingRequestError, run_processing_job

BUCKET = "sluice-test-processing"
# What each instance does: list what its inputs hold and who it is, into its output
LIST_INPUTS = """
import json, os, pathlib
root = pathlib.Path(os.environ["SLUICE_OPT_ML"])
config = json.loads((root / "config" / "resourceconfig.json").read_text())
files = sorted(p.name for p in (root / "processing" / "input" / "data").rglob("*") if p.is_file())
out = root / "processing" / "output" / "report"
out.mkdir(parents=True, exist_ok=True)
(out / (config["current_host"] + ".json")).write_text(json.dumps({**config, "files": files}))
"""
FAIL_ON_SECOND = """
import json, os, pathlib, sys
root = pathlib.Path(os.environ["SLUICE_OPT_ML"])
config = json.loads((root / "config" / "resourceconfig.json").read_text())
out = root / "processing" / "output" / "report"
out.mkdir(parents=True, exist_ok=True)
(out / "x.json").write_text("{}")
if config["current_host"] == "algo-2":
    (root / "output").mkdir(exist_ok=True)
    (root / "output" / "message").write_text("ValueError: the plan names no data")
    sys.exit(3)
"""


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for i in range(5):
            client.put_object(Bucket=BUCKET, Key=f"in/part-{i}.csv", Body=b"a\n1\n")
        yield client


def _request(script: str, *, count: int = 2, sharded: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "ProcessingJobName": "parts-test",
        "RoleArn": "arn:aws:iam::123456789012:role/sluice-processing",
        "AppSpecification": {
            "ImageUri": "local:latest",
            "ContainerEntrypoint": ["python3", "-c", script],
        },
        "ProcessingInputs": [
            {
                "InputName": "data",
                "S3Input": {
                    "S3Uri": f"s3://{BUCKET}/in/",
                    "LocalPath": "/opt/ml/processing/input/data",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "ShardedByS3Key" if sharded else "FullyReplicated",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "report",
                    "S3Output": {
                        "S3Uri": f"s3://{BUCKET}/out",
                        "LocalPath": "/opt/ml/processing/output/report",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": count,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 30,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        **extra,
    }


def _reports(s3: Any) -> dict[str, Any]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/").get("Contents", [])
    return {
        o["Key"]: json.loads(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
        for o in listed
    }


def test_each_instance_gets_every_input_and_its_outputs_are_uploaded(s3: Any) -> None:
    result = run_processing_job(_request(LIST_INPUTS), S3ObjectStore(s3))
    assert result.processing_job_status == "Completed", result.failure_reason
    reports = _reports(s3)
    assert sorted(reports) == ["out/algo-1.json", "out/algo-2.json"]
    for host in ("algo-1", "algo-2"):
        report = reports[f"out/{host}.json"]
        assert report["current_host"] == host and report["hosts"] == ["algo-1", "algo-2"]
        assert report["files"] == [f"part-{i}.csv" for i in range(5)]


def test_sharded_by_key_gives_each_instance_its_share(s3: Any) -> None:
    result = run_processing_job(_request(LIST_INPUTS, sharded=True), S3ObjectStore(s3))
    assert result.processing_job_status == "Completed", result.failure_reason
    reports = _reports(s3)
    first, second = reports["out/algo-1.json"]["files"], reports["out/algo-2.json"]["files"]
    assert sorted(first + second) == [f"part-{i}.csv" for i in range(5)]
    assert not set(first) & set(second) and first and second


def test_a_failed_instance_fails_the_job_with_its_message_and_uploads_nothing(s3: Any) -> None:
    result = run_processing_job(_request(FAIL_ON_SECOND), S3ObjectStore(s3))
    assert result.processing_job_status == "Failed"
    assert result.failure_reason == "AlgorithmError: algo-2 exited with code 3"
    assert result.exit_message == "ValueError: the plan names no data"
    assert _reports(s3) == {}


def test_max_runtime_is_enforced(s3: Any) -> None:
    request = _request("import time; time.sleep(30)", count=1)
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 1}
    result = run_processing_job(request, S3ObjectStore(s3))
    assert result.processing_job_status == "Failed"
    assert (result.failure_reason or "").startswith("MaxRuntimeExceeded")
    assert result.processing_seconds < 20


def test_an_empty_input_fails_the_job(s3: Any) -> None:
    request = _request(LIST_INPUTS)
    request["ProcessingInputs"][0]["S3Input"]["S3Uri"] = f"s3://{BUCKET}/nothing/"
    result = run_processing_job(request, S3ObjectStore(s3))
    assert result.processing_job_status == "Failed"
    assert "no S3 objects" in (result.failure_reason or "")


@pytest.mark.parametrize(
    "change",
    [
        {"ProcessingJobName": "no_underscores"},
        {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 0, "InstanceType": "x", "VolumeSizeInGB": 1}
            }
        },
    ],
)
def test_a_request_processing_would_refuse_raises(s3: Any, change: dict[str, Any]) -> None:
    with pytest.raises(ProcessingRequestError):
        run_processing_job({**_request(LIST_INPUTS), **change}, S3ObjectStore(s3))


def test_a_local_path_outside_the_processing_folder_is_refused(s3: Any) -> None:
    request = _request(LIST_INPUTS)
    request["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/etc/data"
    with pytest.raises(ProcessingRequestError, match="/opt/ml/processing"):
        run_processing_job(request, S3ObjectStore(s3))
