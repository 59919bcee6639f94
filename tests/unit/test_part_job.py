"""Parts past one Lambda, at the lowest layer: when preprocess routes an upload to a processing
job, what the plan holds, what one instance of the job builds (in-process, over the in-memory
store), and what assembling from those parts gives: the version preprocess alone would have
built. The job's own process, the runner and the state machine are
tests/integration/test_part_builds.py's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from functions.preprocess.logic import Policy, assemble_build, process_upload
from functions.preprocess.part_job import BuildPlan, JobLimits, build_share, main, shard
from functions.preprocess.parts import GIB
from functions.shared import layout
from functions.shared.orchestration import BuildInput, RunStart
from functions.shared.pipeline_state import BuildState, StepFailure
from functions.shared.processing_job import OPT_ML_ENV
from functions.shared.runs import manifest_key
from functions.shared.storage import parse_s3_uri
from tests.builders import ARTIFACTS, RAW, World, churn_frame, csv_bytes, upload_of
from tests.fakes import RecordingOrchestrator

ROOT = Path(__file__).resolve().parents[2]
SMALL = Policy(max_read_bytes=10_000)


class BuildingOrchestrator(RecordingOrchestrator):
    """Runs as the recording one; builds are kept by name, a second refused."""

    def __init__(self) -> None:
        super().__init__()
        self.started_builds: dict[str, BuildInput] = {}

    @property
    def builds(self) -> bool:
        return True

    def build_exists(self, name: str) -> bool:
        return name in self.started_builds

    def start_build(self, build: BuildInput) -> RunStart:
        started = build.run_name not in self.started_builds
        self.started_builds.setdefault(build.run_name, build)
        return RunStart(build.run_name, f"build:{build.run_name}", started=started)


def _world() -> World:
    world = World(SMALL)
    world.pipeline = BuildingOrchestrator()
    world.contract()
    return world


def _plan(world: World, build: BuildInput) -> BuildPlan:
    bucket, key = parse_s3_uri(build.plan_uri)
    return BuildPlan.model_validate_json(world.store.get_bytes(bucket, key))


def _run_job(world: World, build: BuildInput, tmp_path: Path, hosts: int = 1) -> None:
    plan = _plan(world, build)
    names = [f"algo-{i + 1}" for i in range(hosts)]
    for host in names:
        work = tmp_path / host
        work.mkdir()
        build_share(plan, world.store, host, names, work)


def _manifest(world: World, version: str) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(
        world.store.get_bytes(ARTIFACTS, manifest_key("churn", version))
    )
    return manifest


def test_an_upload_past_one_invocation_is_planned_built_by_the_job_and_assembled(
    tmp_path: Path,
) -> None:
    # Given an upload of more bytes than one invocation reads
    world = _world()
    pipeline = world.pipeline
    assert isinstance(pipeline, BuildingOrchestrator)
    info = world.store.put(RAW, "churn/data/big.csv", csv_bytes(churn_frame(900, seed=1)))

    # When preprocess sees it
    outcome = world.process(info)

    # Then it started a build named by the run, wrote its plan, and built nothing itself
    assert outcome.status == "building", outcome.reason
    (build,) = pipeline.started_builds.values()
    assert build.run_name == outcome.run_name and pipeline.runs == {}
    plan = _plan(world, build)
    assert [s.key for s in plan.sources] == [info.key]
    assert plan.trigger == upload_of(info)
    assert plan.contract == world.store.get_bytes(RAW, layout.contract_key("churn")).decode()
    assert plan.policy.max_upload_bytes == JobLimits().max_object_bytes
    assert list(world.store.list(ARTIFACTS, "churn/versions/")) == []
    assert list(world.store.list(ARTIFACTS, "churn/parts/")) == [
        o for o in world.store.list(ARTIFACTS, "churn/parts/plans/")
    ]
    # a redelivery finds the build started
    assert world.process(info).status == "duplicate"

    # When the job's one instance has built its share and preprocess assembles
    _run_job(world, build, tmp_path)
    assembled = assemble_build(
        BuildState.model_validate(build.model_dump()),
        store=world.store,
        orchestrator=pipeline,
        policy=SMALL,
    )

    # Then the version and run are those preprocess alone would have made
    assert assembled.status == "started", assembled.reason
    assert assembled.run_name == outcome.run_name
    alone = World()
    alone.contract()
    reference = alone.upload(info.key, world.store.get_bytes(RAW, info.key))
    assert assembled.dataset_version == reference.dataset_version
    ours, theirs = _manifest(world, assembled.dataset_version or ""), None
    assert reference.dataset_version is not None
    theirs = json.loads(
        alone.store.get_bytes(ARTIFACTS, manifest_key("churn", reference.dataset_version))
    )
    for field in ("rows", "parts", "sources", "channels", "excluded"):
        assert ours[field] == theirs[field], field


def test_after_a_build_a_small_append_is_read_by_preprocess_itself(tmp_path: Path) -> None:
    world = _world()
    pipeline = world.pipeline
    assert isinstance(pipeline, BuildingOrchestrator)
    info = world.store.put(RAW, "churn/data/a.csv", csv_bytes(churn_frame(900, seed=1)))
    assert world.process(info).status == "building"
    (build,) = pipeline.started_builds.values()
    _run_job(world, build, tmp_path)
    assemble_build(
        BuildState.model_validate(build.model_dump()), store=world.store, orchestrator=pipeline
    )

    # When a file smaller than what one invocation reads arrives
    small = csv_bytes(churn_frame(40, seed=2, start_id=5_000))
    assert len(small) < SMALL.max_read_bytes
    appended = world.upload("churn/data/b.csv", small)

    # Then only that file is read, here, and the run starts
    assert appended.status == "started", appended.reason
    assert len(pipeline.started_builds) == 1


def test_an_object_over_the_lambda_cap_is_routed_even_alone_and_left_out_without_a_job() -> None:
    # Given a file over the per-object cap (its size as S3 reports it)
    data = csv_bytes(churn_frame(300, seed=3))
    world = _world()
    routed = world.upload("churn/data/huge.csv", data, size=2 * GIB)
    assert routed.status == "building"

    # And without a route past one Lambda, the same upload is refused unread, as before
    plain = World()
    plain.contract()
    refused = plain.upload("churn/data/huge.csv", data, size=2 * GIB)
    assert refused.status == "rejected"
    assert plain.report(refused)["violations"][0]["rule"] == "file_too_large"


def test_two_instances_share_the_files_by_key_and_give_the_same_version(tmp_path: Path) -> None:
    world = _world()
    pipeline = world.pipeline
    assert isinstance(pipeline, BuildingOrchestrator)
    keys = [f"churn/data/{name}.csv" for name in "abcdef"]
    sizes = [
        world.store.put(RAW, key, csv_bytes(churn_frame(200, seed=i, start_id=i * 1_000))).size
        for i, key in enumerate(keys)
    ]
    outcome = process_upload(
        upload_of(world.store.head(RAW, keys[-1])),
        store=world.store,
        orchestrator=pipeline,
        artifacts_bucket=ARTIFACTS,
        policy=SMALL,
        jobs=JobLimits(bytes_per_instance=sum(sizes) // 3 + 1),
    )
    build = pipeline.started_builds[outcome.run_name or ""]
    assert build.instance_count == 3
    _run_job(world, build, tmp_path, hosts=build.instance_count)
    built = {
        o.key.split("/")[2]
        for o in world.store.list(ARTIFACTS, "churn/parts/")
        if o.key.endswith("/part.json")
    }
    assert len(built) == len(keys)
    assembled = assemble_build(
        BuildState.model_validate(build.model_dump()), store=world.store, orchestrator=pipeline
    )
    assert assembled.status == "started"
    assert assembled.rows is not None and assembled.rows.read == 1_200


def test_shard_is_stable_and_spreads_keys() -> None:
    keys = [f"d/data/{i:04d}.csv" for i in range(400)]
    counts = [sum(shard(k, 4) == i for k in keys) for i in range(4)]
    assert [shard(k, 4) for k in keys] == [shard(k, 4) for k in keys]
    assert min(counts) > 60  # about 100 each
    assert all(shard(k, 1) == 0 for k in keys)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [([1], 1), ([16 * GIB, 16 * GIB], 2), ([40 * GIB], 1), ([GIB] * 100, 7), ([8 * GIB] * 40, 8)],
)
def test_instances_follow_the_bytes_never_more_than_objects_or_the_cap(
    sizes: list[int], expected: int
) -> None:
    assert JobLimits().instances(sizes) == expected


def test_the_jobs_requirements_are_pinned_as_constraints_pins_them() -> None:
    pins = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)
    )
    normal = {k.lower().replace("-", "_"): v for k, v in pins.items()}
    job = ROOT / "functions" / "preprocess" / "job-requirements.txt"
    wanted = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", job.read_text(), re.M)
    assert wanted
    for name, version in wanted:
        assert normal[name.lower().replace("-", "_")] == version, name


def test_the_job_writes_why_it_failed_where_processing_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an instance whose plan folder holds no plan
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    (tmp_path / "processing" / "input" / "plan").mkdir(parents=True)
    monkeypatch.setenv(OPT_ML_ENV, str(tmp_path))

    # When the job runs, it fails, saying why in /opt/ml/output/message
    assert main(store=World().store) == 1
    message = (tmp_path / "output" / "message").read_text()
    assert "expected one build plan" in message and len(message.encode()) <= 1024


def test_a_failed_jobs_own_words_reach_the_step_failure() -> None:
    cause = json.dumps(
        {
            "FailureReason": "AlgorithmError: algo-1 exited with code 1",
            "ExitMessage": "MemoryError: ",
        }
    )
    message = StepFailure(Error="States.TaskFailed", Cause=cause).message
    assert message == "AlgorithmError: algo-1 exited with code 1: MemoryError:"


def test_a_parts_bytes_do_not_depend_on_the_blocks_its_file_was_read_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file of several row groups (100 rows each here), read in 4 MB blocks as the
    # Lambda does and in 2 KB blocks (a processing job reads less at a time)
    import pyarrow.parquet as pq

    from functions.preprocess import parts
    from functions.shared.contract import parse_contract
    from functions.shared.storage import ObjectInfo
    from tests.builders import contract_bytes

    monkeypatch.setattr(parts, "ROW_GROUP_ROWS", 100)
    source = tmp_path / "a.csv"
    source.write_bytes(csv_bytes(churn_frame(1_500, seed=9)))
    contract = parse_contract(contract_bytes(), source="contract.json")
    pin = parts.infer_roles(contract, source, "churn/data/a.csv")
    info = ObjectInfo(RAW, "churn/data/a.csv", source.stat().st_size, "etag")
    built = {}
    for block in (parts.BLOCK_BYTES, 2048):
        folder = tmp_path / str(block)
        folder.mkdir()
        builder = parts.PartBuilder(
            contract, pin, "churn", "p1", folder, Policy(read_block_bytes=block)
        )
        built[block] = builder.build(source, info, "sha")

    # Then the split files, the index and the record are the same bytes
    big, small = built[parts.BLOCK_BYTES], built[2048]
    assert big.record is not None and small.record is not None
    assert big.record.model_dump() == small.record.model_dump()
    for split, path in big.local.items():
        assert path.read_bytes() == small.local[split].read_bytes(), split
    assert big.index_file is not None and small.index_file is not None
    assert big.index_file.read_bytes() == small.index_file.read_bytes()
    # in whole row groups of ROW_GROUP_ROWS, the last one shorter
    train = pq.ParquetFile(big.local["train"]).metadata
    sizes = [train.row_group(i).num_rows for i in range(train.num_row_groups)]
    assert len(sizes) > 3 and set(sizes[:-1]) == {100} and 0 < sizes[-1] <= 100


def test_an_orchestrator_without_the_route_refuses_a_build_by_name() -> None:
    from functions.shared.orchestration import NoBuildRouteError

    plain = RecordingOrchestrator()
    assert plain.builds is False and plain.build_exists("any") is False
    build = BuildInput(
        run_name="churn-1",
        dataset="churn",
        job_name="churn-1",
        plan_uri="s3://a/p.json",
        report_uri="s3://a/r/",
        instance_count=1,
        instance_type="ml.m5.xlarge",
        volume_gb=100,
        max_runtime_seconds=60,
    )
    with pytest.raises(NoBuildRouteError, match="BUILDS_STATE_MACHINE_ARN"):
        plain.start_build(build)
