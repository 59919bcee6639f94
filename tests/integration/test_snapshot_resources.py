"""What ``sluice up`` saving every few seconds costs the process over time: open files, disk
held by deleted-but-open temp files, memory. A save must not grow any of them.

moto's server runs in this process, as in ``sluice up``; its objects are larger than moto's
in-memory buffer (5 MiB), so each one lives in a temp file, as a real dataset does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from bench.soak import ProcessFigures
from bench.soak import process_figures as figures_of
from infra.local.snapshot import Snapshots
from infra.local.stack import free_port

REGION = "us-east-1"
BUCKET = "raw-bucket"
MIB = 1 << 20


def process_figures() -> ProcessFigures:
    """This process's open file descriptors, its deleted-but-open files (temp files) and their
    bytes, and its resident memory: what bench/soak.py samples for ``sluice up``."""
    return figures_of(os.getpid())


def _said(figures: ProcessFigures) -> str:
    return (
        f"fds {figures.fds}, deleted-but-open {figures.deleted_files} files / "
        f"{figures.deleted_bytes / MIB:.0f} MiB, RSS {figures.rss_bytes / MIB:.0f} MiB"
    )


@pytest.fixture
def endpoint() -> Iterator[str]:
    """A moto server on loopback in this process, emptied afterwards (its temp files closed)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        mock_aws().reset()  # type: ignore[no-untyped-call]


def _loaded(endpoint: str, root: Path, *, objects: int, size: int) -> Snapshots:
    def clients(service: str) -> Any:
        return boto3.client(service, endpoint_url=endpoint, region_name=REGION)

    s3 = clients("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for index in range(objects):
        s3.put_object(Bucket=BUCKET, Key=f"churn/data/part-{index}.csv", Body=os.urandom(size))
    return Snapshots(root, clients, buckets=(BUCKET,), tables=())


def _saves_stay_flat(snapshots: Snapshots, saves: int) -> None:
    # Given a first save (it reads every object once) as the warm-up
    assert snapshots.save().new_objects > 0
    before = process_figures()
    # When the stack saves again and again with nothing new
    for _ in range(saves):
        assert snapshots.save().new_objects == 0
    after = process_figures()
    print(f"\nafter warm-up: {_said(before)}\nafter {saves} more saves: {_said(after)}")
    # Then no file handle, temp file or disk it holds is left behind
    assert after.fds <= before.fds * 1.1
    assert after.deleted_files <= before.deleted_files * 1.1
    assert after.deleted_bytes <= before.deleted_bytes * 1.1


def test_saves_leave_no_open_temp_files_behind(endpoint: str, tmp_path: Path) -> None:
    snapshots = _loaded(endpoint, tmp_path, objects=6, size=8 * MIB)  # 48 MiB
    _saves_stay_flat(snapshots, saves=15)


@pytest.mark.soak
def test_a_dataset_of_300_mb_saved_a_minute_long_leaves_nothing_behind(
    endpoint: str, tmp_path: Path
) -> None:
    snapshots = _loaded(endpoint, tmp_path, objects=12, size=25 * MIB)  # 300 MiB
    _saves_stay_flat(snapshots, saves=12 * 5)  # a save every 5 s for a minute, back to back
