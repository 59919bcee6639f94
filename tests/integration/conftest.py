"""Integration tests run handlers in-process against moto's AWS, with real boto3 clients."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.resources import provision
from infra.local.s3_deletes import emit_delete_markers
from infra.topology import Topology


@contextmanager
def provisioned_server(topology: Topology) -> Iterator[Callable[[str], Any]]:
    """moto's server on loopback with the stack's resources, the in-process functions pointed
    at it (and job subprocesses, through AWS_ENDPOINT_URL); yields a client factory. The
    environment is restored and the functions' cached clients dropped afterwards."""
    from moto.server import ThreadedMotoServer

    from infra.local.pipeline import use_endpoint
    from infra.local.stack import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto's backends live in this process, shared by every server it starts: begin empty
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    saved = dict(os.environ)  # use_endpoint sets the functions' environment process-wide
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": topology.region,
        }
    )
    try:

        def client(service: str) -> Any:
            return boto3.client(service, endpoint_url=url, region_name=topology.region)

        provision(client, topology)
        use_endpoint(topology, url)
        yield client
    finally:
        server.stop()
        use_endpoint(topology, None)
        os.environ.clear()
        os.environ.update(saved)


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
