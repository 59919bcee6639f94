"""The local training runner under moto: a CreateTrainingJob request in, SageMaker's layout out."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.shared.layout import version_prefix
from functions.shared.model_card import ModelCard
from functions.shared.progress import Progress, route_progress
from functions.shared.storage import S3ObjectStore
from infra.local.training_runner import (
    TrainingJobFailedError,
    TrainingRequestError,
    run_training_job,
)
from tests import datasets

BUCKET = "sluice-test-artifacts"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[Any]:
    """A bucket holding one dataset version, as preprocess leaves it."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        schema = datasets.multiclass_mixed(tmp_path / "version", rows=900)
        prefix = version_prefix(schema.dataset, schema.dataset_version)
        for path in sorted((tmp_path / "version").rglob("*")):
            if path.is_file():
                key = prefix + path.relative_to(tmp_path / "version").as_posix()
                client.upload_file(str(path), BUCKET, key)
        yield client


def _request(name: str, hyperparameters: dict[str, str]) -> dict[str, Any]:
    version = f"s3://{BUCKET}/{version_prefix('multiclass', 'v-0002')}"
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "xgboost:3.0", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/sluice-training",
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{version}{channel}/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for channel in ("train", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/multiclass/models"},
        "ResourceConfig": {
            "InstanceType": "ml.g5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        "EnableManagedSpotTraining": True,
    }


def test_a_job_completes_and_uploads_model_tar_gz_where_sagemaker_does(
    s3: Any, tmp_path: Path
) -> None:
    # Given a CreateTrainingJob request over the uploaded dataset version
    hyperparameters = {"n_estimators": "20", "seed": "3", "budget_seconds": "2"}
    request = _request("sluice-multiclass-1", hyperparameters)
    # When the local runner runs it
    result = run_training_job(request, S3ObjectStore(s3), work_dir=tmp_path / "opt-ml")
    # Then it completed, and reports like DescribeTrainingJob
    assert result.training_job_status == "Completed", result.failure_reason
    expected = f"s3://{BUCKET}/multiclass/models/sluice-multiclass-1/output/model.tar.gz"
    assert result.model_artifacts is not None
    assert result.model_artifacts.s3_model_artifacts == expected
    described = result.model_dump(by_alias=True)
    assert described["ModelArtifacts"] == {"S3ModelArtifacts": expected}
    assert described["TrainingTimeInSeconds"] >= 1
    assert "parity passed" in result.stdout_tail
    # And the archive holds the model and its card at its root
    key = expected.removeprefix(f"s3://{BUCKET}/")
    archive = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["model.onnx", "model_card.json"]
        card_file = tar.extractfile("model_card.json")
        assert card_file is not None
        card = ModelCard.model_validate_json(card_file.read())
    assert card.dataset_version == "v-0002"
    assert card.training.hyperparameters["seed"] == 3
    # And the container layout was SageMaker's
    hps = json.loads((tmp_path / "opt-ml/input/config/hyperparameters.json").read_text())
    assert hps == hyperparameters
    assert (tmp_path / "opt-ml/input/data/train/dataset.json").is_file()
    assert (tmp_path / "opt-ml/input/data/validation/part-0.parquet").is_file()


def test_a_job_reports_each_candidate_as_progress_in_the_runners_process(s3: Any) -> None:
    # Given a sink for progress records in this (the local stack's) process
    records: list[Progress] = []
    route_progress(records.append)
    try:
        # When a job with two candidates runs
        request = _request(
            "sluice-progress-1",
            {"n_estimators": "10", "candidates": "linear,xgboost", "budget_seconds": "2"},
        )
        result = run_training_job(request, S3ObjectStore(s3))
    finally:
        route_progress(None)
    # Then the training process's records reached it: candidate k of n, then the export,
    # named with the job, with the time since training began
    assert result.training_job_status == "Completed", result.failure_reason
    details = [r.detail for r in records]
    assert details[0].startswith("candidate 1 of 2: linear")
    assert details[1].startswith("candidate 2 of 2: xgboost")
    assert details[-1] == "export to ONNX and parity check" and records[-1].finished
    assert {(r.step, r.dataset, r.run) for r in records} == {
        ("train", "multiclass", "sluice-progress-1")
    }
    assert [r.done for r in records] == [0, 1, 2]
    assert records[-1].elapsed_seconds >= records[0].elapsed_seconds


def test_a_bad_hyperparameter_fails_the_job_with_the_reason(s3: Any) -> None:
    # Given a request with a hyperparameter training does not know
    request = _request("sluice-multiclass-2", {"n_trees": "20"})
    # When the local runner runs it
    result = run_training_job(request, S3ObjectStore(s3))
    # Then the job failed, with the failure file's reason, and uploaded no model
    assert result.training_job_status == "Failed"
    assert result.failure_reason is not None
    assert result.failure_reason.startswith(
        "AlgorithmError: TrainingError: unknown hyperparameter 'n_trees'"
    )
    assert result.model_artifacts is None
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="multiclass/models/")
    assert listed["KeyCount"] == 0
    # And raising is available to callers that want it
    with pytest.raises(TrainingJobFailedError, match="n_trees"):
        run_training_job(request, S3ObjectStore(s3), raise_on_failure=True)


def test_an_empty_channel_fails_the_job(s3: Any) -> None:
    request = _request("sluice-multiclass-3", {})
    request["InputDataConfig"][1]["DataSource"]["S3DataSource"]["S3Uri"] = f"s3://{BUCKET}/none/"
    result = run_training_job(request, S3ObjectStore(s3))
    assert result.training_job_status == "Failed"
    assert result.failure_reason == f"ClientError: no S3 objects found under s3://{BUCKET}/none/"


def _manifest_request(s3: Any, tmp_path: Path, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The request over the same version laid out as parts (format 2), read as ManifestFile."""
    version = tmp_path / "as-parts"
    datasets.multiclass_mixed(version, rows=900)
    prefix = f"s3://{BUCKET}/multiclass/"
    channels = datasets.write_parts_version(version, tmp_path / "ds", prefix, parts=3)
    for path in sorted((tmp_path / "ds").rglob("*")):
        if path.is_file():
            key = f"multiclass/{path.relative_to(tmp_path / 'ds').as_posix()}"
            s3.upload_file(str(path), BUCKET, key)
    request = _request(name, {"n_estimators": "10", "seed": "3", "budget_seconds": "2"})
    for channel in request["InputDataConfig"]:
        source = channel["DataSource"]["S3DataSource"]
        source["S3DataType"] = "ManifestFile"
        source["S3Uri"] = f"{prefix}{channels[channel['ChannelName']]}"
    return request, channels


def test_a_manifest_file_channel_downloads_each_listed_key_at_its_path(
    s3: Any, tmp_path: Path
) -> None:
    # Given a request whose channels are channel manifests over three parts
    request, _ = _manifest_request(s3, tmp_path, "sluice-multiclass-m1")
    # When the local runner runs it
    result = run_training_job(request, S3ObjectStore(s3), work_dir=tmp_path / "opt-ml")
    # Then training read them (the schema under versions/, each part at its key's path)
    assert result.training_job_status == "Completed", result.failure_reason
    train = tmp_path / "opt-ml/input/data/train"
    assert sorted(p.relative_to(train).as_posix() for p in train.rglob("*") if p.is_file()) == [
        "parts/p0000/train-p0000.parquet",
        "parts/p0001/train-p0001.parquet",
        "parts/p0002/train-p0002.parquet",
        "versions/v-0002/dataset.json",
    ]
    validation = tmp_path / "opt-ml/input/data/validation"
    assert len(list(validation.rglob("*.parquet"))) == 3
    assert not list(validation.rglob("dataset.json"))


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (["../../escape.parquet"], "has an empty, '.' or '..' part"),
        (["parts/../../../etc/x.parquet"], "'..'"),
        (["/multiclass/parts/p0000/train-p0000.parquet"], "is absolute"),
    ],
)
def test_a_manifest_naming_a_key_outside_its_prefix_fails_the_job(
    s3: Any, tmp_path: Path, entries: list[str], says: str
) -> None:
    # Given a train channel manifest with a key that would land outside the channel
    request, channels = _manifest_request(s3, tmp_path, "sluice-multiclass-m2")
    bad = json.dumps([{"prefix": f"s3://{BUCKET}/multiclass/"}, *entries])
    s3.put_object(Bucket=BUCKET, Key=f"multiclass/{channels['train']}", Body=bad.encode())
    # When the job runs
    result = run_training_job(request, S3ObjectStore(s3), work_dir=tmp_path / "opt-ml")
    # Then it fails before training, naming the manifest and the entry, and wrote nothing
    assert result.training_job_status == "Failed"
    assert result.failure_reason is not None
    assert result.failure_reason.startswith(
        f"ClientError: s3://{BUCKET}/multiclass/{channels['train']}: entry 1"
    )
    assert says in result.failure_reason
    assert not list((tmp_path / "opt-ml").rglob("*.parquet"))
    assert not (tmp_path / "escape.parquet").exists()


def test_a_manifest_naming_a_missing_object_fails_the_job(s3: Any, tmp_path: Path) -> None:
    request, _ = _manifest_request(s3, tmp_path, "sluice-multiclass-m3")
    gone = f"s3://{BUCKET}/multiclass/parts/p0001/validation-p0001.parquet"
    s3.delete_object(Bucket=BUCKET, Key=gone.removeprefix(f"s3://{BUCKET}/"))
    result = run_training_job(request, S3ObjectStore(s3))
    assert result.training_job_status == "Failed"
    assert result.failure_reason == f"ClientError: {gone} does not exist"


def test_max_runtime_is_enforced(s3: Any) -> None:
    # Given a runtime limit no training can meet
    request = _request("sluice-multiclass-4", {})
    request["StoppingCondition"]["MaxRuntimeInSeconds"] = 1
    # When the job runs
    result = run_training_job(request, S3ObjectStore(s3))
    # Then it is stopped and reported as failed for that reason
    assert result.training_job_status == "Failed"
    assert result.failure_reason == "MaxRuntimeExceeded: training ran past MaxRuntimeInSeconds=1"


def test_a_request_sagemaker_would_refuse_raises(s3: Any) -> None:
    request = _request("not a valid name!", {})
    with pytest.raises(TrainingRequestError, match="TrainingJobName"):
        run_training_job(request, S3ObjectStore(s3))


def test_a_used_work_dir_is_refused(s3: Any, tmp_path: Path) -> None:
    # Given a work directory a previous job left a model in
    (tmp_path / "used" / "model").mkdir(parents=True)
    (tmp_path / "used" / "model" / "model.onnx").write_bytes(b"stale")
    # Then the runner refuses rather than risk shipping it
    with pytest.raises(TrainingRequestError, match="not empty"):
        run_training_job(
            _request("sluice-multiclass-5", {}), S3ObjectStore(s3), work_dir=tmp_path / "used"
        )
