"""Integration tests run handlers in-process against moto's AWS, with real boto3 clients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.resources import provision
from infra.local.s3_deletes import emit_delete_markers
from infra.topology import Topology


@dataclass
class Aws:
    topology: Topology
    s3: Any
    sfn: Any
    sqs: Any
    upload_queue: str


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Buckets, an upload-event route (S3 → EventBridge → SQS) and a state machine in moto."""
    topo = Topology(stage="test")
    for name, value in topo.preprocess_environment().items():
        monkeypatch.setenv(name, value)
    emit_delete_markers()  # as the local stack does: moto sends no "Object Deleted" itself
    with mock_aws():
        resources = provision(lambda service: boto3.client(service, region_name=topo.region), topo)
        yield Aws(
            topology=topo,
            s3=boto3.client("s3", region_name=topo.region),
            sfn=boto3.client("stepfunctions", region_name=topo.region),
            sqs=boto3.client("sqs", region_name=topo.region),
            upload_queue=resources.upload_queue_url,
        )
