"""``sluice retire`` against a stage's AWS APIs (moto): retire, undo, and the confirmed purge,
whose scope is checked object version by object version. Each runs through ``infra.cli.main``
exactly as the console script does."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.shared.alarms import CloudWatchRetrainAlarms, alarm_prefix, alarm_specs
from functions.shared.registry import NewModelVersion
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from infra.cli import main
from infra.topology import Topology

TOPOLOGY = Topology(stage="retiretest")
DATASET = "churn"
NEIGHBOUR = "churn2"  # shares the prefix "churn": a purge of churn must not touch it


@dataclass
class Stage:
    s3: Any
    registry: DynamoDBRegistry


def _version(dataset: str, run: str) -> NewModelVersion:
    uri = f"s3://{TOPOLOGY.artifacts_bucket}/{dataset}/models/{run}/"
    return NewModelVersion(
        dataset=dataset,
        run_name=run,
        dataset_version="dv-1",
        model_uri=uri + "model.onnx",
        card_uri=uri + "model_card.json",
        report_uri=uri + "evaluation.json",
        artifact_uri=uri + "output/model.tar.gz",
        sha256=hashlib.sha256(run.encode()).hexdigest(),
        metric="accuracy",
        metric_value=0.9,
    )


@pytest.fixture
def stage() -> Iterator[Stage]:
    """Versioned raw and artifacts buckets holding churn's and churn2's files, a raw file with an
    older version and a deleted one (a delete marker), and churn's version 1 live."""
    with mock_aws():
        s3 = boto3.client("s3", region_name=TOPOLOGY.region)
        for bucket in (TOPOLOGY.raw_bucket, TOPOLOGY.artifacts_bucket):
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        for dataset in (DATASET, NEIGHBOUR):
            raw, artifacts = TOPOLOGY.raw_bucket, TOPOLOGY.artifacts_bucket
            s3.put_object(Bucket=raw, Key=f"{dataset}/contract.json", Body=b"{}")
            s3.put_object(Bucket=raw, Key=f"{dataset}/data/a.csv", Body=b"x\n1\n")
            s3.put_object(Bucket=raw, Key=f"{dataset}/data/a.csv", Body=b"x\n2\n")
            s3.put_object(Bucket=raw, Key=f"{dataset}/data/old.csv", Body=b"x\n3\n")
            s3.delete_object(Bucket=raw, Key=f"{dataset}/data/old.csv")
            s3.put_object(Bucket=artifacts, Key=f"{dataset}/models/run-1/model.onnx", Body=b"m")
            s3.put_object(Bucket=artifacts, Key=f"{dataset}/capture/dt=x/1.jsonl.gz", Body=b"c")
        dynamodb = boto3.client("dynamodb", region_name=TOPOLOGY.region)
        create_table(dynamodb, TOPOLOGY.registry_table)
        registry = DynamoDBRegistry(dynamodb, TOPOLOGY.registry_table)
        for dataset in (DATASET, NEIGHBOUR):
            registry.register(_version(dataset, "run-1"), actor="test")
            registry.promote(dataset, 1, expected_live=None, actor="test", reason="first")
        yield Stage(s3, registry)


def _retire(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["retire", DATASET, "--reason", "product closed", *argv, "--stage", "retiretest"])
    out, err = capsys.readouterr()
    return code, out, err


def _versions(s3: Any, bucket: str, dataset: str) -> int:
    page = s3.list_object_versions(Bucket=bucket, Prefix=f"{dataset}/")
    return len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))


def _all_versions(stage: Stage, dataset: str) -> tuple[int, int]:
    return (
        _versions(stage.s3, TOPOLOGY.raw_bucket, dataset),
        _versions(stage.s3, TOPOLOGY.artifacts_bucket, dataset),
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_retire_keeps_everything_and_records_it(
    stage: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _all_versions(stage, DATASET)
    code, out, err = _retire(capsys)
    assert code == 0, err
    assert out.startswith(f"{DATASET}: retired") and "live version 1" in out
    retirement = stage.registry.retirement(DATASET)
    assert retirement is not None and retirement.reason == "product closed"
    assert retirement.actor.startswith("cli:")
    assert _all_versions(stage, DATASET) == before == (5, 2)
    assert stage.registry.live(DATASET) is not None
    assert stage.registry.audit(DATASET)[-1].action == "dataset_retired"
    # and --undo puts it back
    code, out, _ = _retire(capsys, "--undo")
    assert code == 0 and "back in service" in out
    assert stage.registry.retirement(DATASET) is None


def test_retire_deletes_the_datasets_retraining_alarms_and_no_others(
    stage: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given both datasets' alarms, as promote put them
    cloudwatch = boto3.client("cloudwatch", region_name=TOPOLOGY.region)
    alarms = CloudWatchRetrainAlarms(cloudwatch, TOPOLOGY.stage)
    for dataset in (DATASET, NEIGHBOUR):
        alarms.ensure(dataset)
    # When churn is retired
    code, out, err = _retire(capsys, "--json")
    # Then its three alarms are gone, churn2's stay, and the report names what went
    assert code == 0, err
    gone = [spec.name for spec in alarm_specs(TOPOLOGY.stage, DATASET)]
    assert json.loads(out)["alarms_deleted"] == gone
    left = cloudwatch.describe_alarms(AlarmNamePrefix=alarm_prefix(TOPOLOGY.stage))
    assert sorted(a["AlarmName"] for a in left["MetricAlarms"]) == sorted(
        spec.name for spec in alarm_specs(TOPOLOGY.stage, NEIGHBOUR)
    )


def test_undo_puts_the_datasets_retraining_alarms_back_as_promote_put_them(
    stage: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given churn (version 1 live) retired: its alarms deleted with the retirement
    cloudwatch = boto3.client("cloudwatch", region_name=TOPOLOGY.region)
    CloudWatchRetrainAlarms(cloudwatch, TOPOLOGY.stage).ensure(DATASET)
    assert _retire(capsys)[0] == 0
    assert (
        cloudwatch.describe_alarms(AlarmNamePrefix=alarm_prefix(TOPOLOGY.stage))["MetricAlarms"]
        == []
    )
    # When the retirement is undone
    code, out, err = _retire(capsys, "--undo", "--json")
    # Then its alarms are back, named in the report, each as the one definition says
    assert code == 0, err
    specs = {spec.name: spec.put_metric_alarm() for spec in alarm_specs(TOPOLOGY.stage, DATASET)}
    assert json.loads(out)["alarms_put"] == list(specs)
    put = cloudwatch.describe_alarms(AlarmNamePrefix=alarm_prefix(TOPOLOGY.stage))["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in put) == sorted(specs)
    for alarm in put:
        assert alarm["Period"] == specs[alarm["AlarmName"]]["Period"]


def test_purge_without_a_terminal_or_yes_refuses_in_one_line_and_changes_nothing(
    stage: Stage, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(DATASET + "\n"))  # piped, not a terminal
    code, _, err = _retire(capsys, "--purge")
    assert code == 2
    assert err.count("\n") == 1 and "add --yes" in err
    assert stage.registry.retirement(DATASET) is None
    assert _all_versions(stage, DATASET) == (5, 2)


def test_purge_at_a_terminal_needs_the_dataset_name_typed(
    stage: Stage, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal("churn2\n"))
    code, _, err = _retire(capsys, "--purge")
    assert code == 2 and "not confirmed" in err
    assert _all_versions(stage, DATASET) == (5, 2)

    monkeypatch.setattr(sys, "stdin", _Terminal(DATASET + "\n"))
    code, out, err = _retire(capsys, "--purge")
    assert "purged" in out
    assert code == 0, err
    assert f"s3://{TOPOLOGY.raw_bucket}" in err  # the prompt said what goes
    assert _all_versions(stage, DATASET) == (0, 0)


def test_purge_with_yes_deletes_exactly_the_datasets_objects_and_records(
    stage: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _retire(capsys, "--purge", "--yes", "--json")
    assert code == 0, err
    report = json.loads(out)["purged"]
    # every version and delete marker under churn/ in both buckets, nothing of churn2
    assert (report["raw_objects"], report["artifact_objects"]) == (5, 2)
    assert _all_versions(stage, DATASET) == (0, 0)
    assert _all_versions(stage, NEIGHBOUR) == (5, 2)
    # every registry record of churn, one audit entry left to say so
    assert stage.registry.versions(DATASET) == []
    assert stage.registry.live(DATASET) is None
    [entry] = stage.registry.audit(DATASET)
    assert entry.action == "dataset_purged" and "5 raw and 2 artifact" in entry.reason
    assert report["registry_records"] >= 6
    assert stage.registry.live(NEIGHBOUR) is not None
    assert stage.registry.datasets() == [NEIGHBOUR]


def test_purge_deletes_the_datasets_training_checkpoints_too(
    stage: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    # checkpoints live under one top-level prefix (one lifecycle rule expires them all)
    from functions.shared.layout import CHECKPOINTS_PREFIX, checkpoint_prefix

    artifacts = TOPOLOGY.artifacts_bucket
    for dataset in (DATASET, NEIGHBOUR):
        key = checkpoint_prefix(dataset, "run-1") + "checkpoint.pkl"
        stage.s3.put_object(Bucket=artifacts, Key=key, Body=b"state")
    code, out, err = _retire(capsys, "--purge", "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["purged"]["artifact_objects"] == 2 + 1

    def left(dataset: str) -> int:
        prefix = f"{CHECKPOINTS_PREFIX}{dataset}/"
        return len(
            stage.s3.list_object_versions(Bucket=artifacts, Prefix=prefix).get("Versions", [])
        )

    assert (left(DATASET), left(NEIGHBOUR)) == (0, 1)
