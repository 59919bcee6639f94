"""`sluice up` killed with SIGKILL mid-run while a champion serves, then restarted: the champion
is untouched (on disk while the stack is down, and on the endpoint when it is back), and the
interrupted run resumes and completes. test_local_stack.py's crash test starts with no model."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import boto3

from functions.shared.registry import LivePointer, ModelStatus
from functions.shared.registry_dynamodb import LIVE, DynamoDBRegistry, _decode
from functions.shared.storage import parse_s3_uri
from infra.alarms import alarm_prefix, alarm_specs
from infra.local.snapshot import INDEX_FILE, STATE_DIR
from infra.local.stack import PENDING_DIR, RUNS_FILE, UPLOADS_FILE, free_port, read_history
from infra.topology import Topology
from tests.builders import churn_frame, contract_bytes, csv_bytes
from tests.e2e.test_local_stack import SluiceUp, _get, _said, live_pointer

DATASET = "churn"


def _files(s3: Any, registry: DynamoDBRegistry, version: int) -> dict[str, tuple[str, str]]:
    """uri → (ETag, sha256) of every file of one model version."""
    record = registry.get(DATASET, version)
    files = {}
    for uri in (record.model_uri, record.card_uri, record.report_uri, record.artifact_uri):
        bucket, key = parse_s3_uri(uri)
        got = s3.get_object(Bucket=bucket, Key=key)
        files[uri] = (got["ETag"], hashlib.sha256(got["Body"].read()).hexdigest())
    return files


def _saved(state_dir: Path) -> dict[str, Any]:
    index = state_dir / STATE_DIR / INDEX_FILE
    return json.loads(index.read_text()) if index.is_file() else {}


def _saved_pointer(state_dir: Path, table: str) -> LivePointer | None:
    """The live pointer in the snapshot on disk: what a restart will restore."""
    for item in _saved(state_dir).get("tables", {}).get(table, []):
        if item["pk"]["S"] == DATASET and item["sk"]["S"] == LIVE:
            return LivePointer(**_decode(item))
    return None


def _saved_blob(state_dir: Path, uri: str) -> str | None:
    """The sha256 of the latest saved version of an object (its blob's name)."""
    bucket, key = parse_s3_uri(uri)
    entry = _saved(state_dir).get("buckets", {}).get(bucket, {}).get(key)
    return None if entry is None else str(entry["versions"][-1]["blob"])


def _wait(condition: Any, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_a_crash_mid_run_leaves_the_champion_and_the_run_resumes(tmp_path: Path) -> None:
    aws_port, api_port = free_port(), free_port()
    topology = Topology(stage="local")
    endpoint = f"http://127.0.0.1:{aws_port}"
    table = topology.registry_table

    # Given `sluice up` with a live champion, saved to disk
    up = SluiceUp(tmp_path, aws_port, api_port)
    try:
        up.read_until(_said("ready"))
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=topology.region)
        registry = DynamoDBRegistry(
            boto3.client("dynamodb", endpoint_url=endpoint, region_name=topology.region), table
        )
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())
        jan = csv_bytes(churn_frame(600, seed=1))
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv", Body=jan)
        up.read_until(_said("run ", times=2))  # started, then its outcome
        assert up.lines[-1].rstrip().endswith("Promoted"), up.said
        champion = registry.live(DATASET)
        assert champion is not None and champion.version == 1
        files = _files(s3, registry, champion.version)
        _wait(lambda: _saved_pointer(tmp_path, table) == champion, "the champion saved")
        _wait(lambda: not list((tmp_path / PENDING_DIR).glob("*.json")), "the journal cleared")

        # When the next upload's run is training and the stack is killed with SIGKILL
        feb = csv_bytes(churn_frame(3000, seed=9, start_id=10_000))
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/feb.csv", Body=feb)
        up.read_until(_said("run ", times=3))  # "run <name> started"
        interrupted = up.lines[-1].split()[1]
        audit = registry.audit(DATASET)
        _wait(
            lambda: json.dumps(_saved(tmp_path)).count("manifest.json") >= 2,
            "the new dataset version saved",
            seconds=30,
        )
    finally:
        up.kill()
    assert up.lines[-1].startswith("run ") and "started" in up.lines[-1], "the run had ended"
    assert up.process.returncode == -9
    killed_at = time.monotonic()

    # Then on disk, while the stack is down, the champion is what it was and the run is pending
    assert _saved_pointer(tmp_path, table) == champion
    for uri, (_, sha256) in files.items():
        assert _saved_blob(tmp_path, uri) == sha256, uri
    assert len(list((tmp_path / PENDING_DIR).glob("*.json"))) == 1

    # When it starts again
    up = SluiceUp(tmp_path, aws_port, api_port)
    try:
        up.read_until(_said("ready"))
        assert "1 run(s) resumed" in up.said, up.said
        # moto's alarms died with it: the start put the champion's dataset's alarms back
        cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, region_name=topology.region)
        found = cloudwatch.describe_alarms(AlarmNamePrefix=alarm_prefix(topology))
        assert sorted(a["AlarmName"] for a in found["MetricAlarms"]) == sorted(
            spec.name for spec in alarm_specs(topology, DATASET)
        )
        # Then the champion is back as it was (unless the resumed run already replaced it:
        # the audit trail below tells), and a model serves
        live = live_pointer(registry, DATASET)  # the resumed run may be promoting
        assert live is not None and (live == champion or live.version == 2), live
        assert _files(s3, registry, champion.version) == files
        status, described = _get(f"http://127.0.0.1:{api_port}/v1/models/churn")
        assert status == 200, described
        # and the interrupted run completes, gated against that champion
        up.read_until(_said("run ", times=2))
        outcome = up.lines[-1].rstrip()
        assert "SUCCEEDED" in outcome, outcome
        resumed_seconds = time.monotonic() - killed_at
        # the registry's story: everything before the crash, then only the resumed run
        after = registry.audit(DATASET)
        assert after[: len(audit)] == audit
        assert {e.actor for e in after[len(audit) :]} == {f"pipeline:{interrupted}"}, after
        versions = registry.versions(DATASET)
        assert [v.version for v in versions] == [1, 2]
        promotions = [
            (e.version, e.previous_live) for e in registry.audit(DATASET) if e.action == "promoted"
        ]
        if outcome.endswith("Promoted"):
            assert promotions == [(1, None), (2, 1)]
            assert registry.get(DATASET, 1).status is ModelStatus.RETIRED
        else:
            assert outcome.endswith("Refused") and promotions == [(1, None)]
            assert registry.live(DATASET) == champion
        # the old champion's files were never rewritten
        assert _files(s3, registry, champion.version) == files
    finally:
        rest = up.interrupt()
    assert up.process.returncode == 0, up.said + rest
    # and the history holds two uploads and two runs, nothing twice, nothing pending
    history = {name: read_history(tmp_path, name) for name in (UPLOADS_FILE, RUNS_FILE)}
    assert [u["status"] for u in history[UPLOADS_FILE]] == ["started", "started"]
    assert [r["status"] for r in history[RUNS_FILE]] == ["SUCCEEDED", "SUCCEEDED"]
    assert not list((tmp_path / PENDING_DIR).glob("*.json"))
    print(f"killed → resumed run done in {resumed_seconds:.1f} s")
