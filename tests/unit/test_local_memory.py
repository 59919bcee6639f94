"""infra/local/memory.py on a real glibc process: freed memory that glibc kept resident (a live
block above it, in a thread's arena) goes back to the system on ``release``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from infra.local import memory

CHILD = textwrap.dedent(
    """
    import json, os, threading
    from infra.local import memory

    def rss():
        pages = int(open(f"/proc/{os.getpid()}/statm").read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")

    kept = []
    def churn():
        # 2 000 blocks of 64 KiB (under glibc's mmap threshold: heap, not mmap), every 50th
        # kept: the kept ones pin the heap's top, so freeing the rest shrinks nothing
        blocks = [bytearray(64 * 1024) for _ in range(2000)]
        kept.extend(blocks[::50])
        blocks.clear()

    limited = memory.limit_arenas()
    thread = threading.Thread(target=churn)
    thread.start(); thread.join()
    before = rss()
    released = memory.release()
    print(json.dumps({"limited": limited, "released": released, "before": before, "after": rss()}))
    """
)


@pytest.mark.skipif(memory._glibc() is None, reason="not glibc: nothing to release")
def test_release_returns_freed_heap_pages_to_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60
    )
    figures = json.loads(done.stdout)
    assert figures["limited"] and figures["released"]
    # about 122 MiB were freed below 40 live blocks; at least 80 MiB of it leaves RSS
    assert figures["before"] - figures["after"] > 80 * 2**20, figures


def test_moto_stops_tracking_the_copies_a_scan_made_and_keeps_the_table() -> None:
    import boto3
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import Item

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="eu-west-1")
        dynamodb.create_table(
            TableName="registry",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for i in range(10):
            dynamodb.put_item(TableName="registry", Item={"pk": {"S": f"k{i}"}})
        memory.forget_tracked_models()
        # Given 20 scans: moto tracks every copy of every item each scan returned
        for _ in range(20):
            dynamodb.scan(TableName="registry")
        assert len(Item.instances_tracked) >= 200
        # When the stack forgets them
        assert memory.forget_tracked_models() >= 200
        # Then nothing is tracked, and the table still holds its 10 items
        assert Item.instances_tracked == []
        assert dynamodb.scan(TableName="registry")["Count"] == 10
