"""Batch files past the Lambda: the batch function starts a processing job for a file past its
cap (functions/batch/route.py), and the job (functions/batch/job.py) scores it with the model
pinned then, writing what the Lambda writes."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from functions.batch.job import REQUEST_LOCAL_PATH, main, run_request
from functions.batch.logic import (
    REQUEST_FILE,
    BatchOutcome,
    job_outcome,
    read_job_request,
    report_failed_job,
    score_batch,
)
from functions.batch.route import (
    BatchJobInput,
    BatchJobLimits,
    BatchJobState,
    BatchRoute,
    StepFunctionsBatchRoute,
)
from functions.shared import layout
from functions.shared.orchestration import RunStart
from functions.shared.pipeline_state import StepFailure
from functions.shared.processing_job import OPT_ML_ENV, missing, pins
from functions.shared.storage import parse_s3_uri
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, publish_live

ROOT = Path(__file__).resolve().parents[2]
RAW = "raw-bucket"


class RecordingRoute(BatchRoute):
    """Starts nothing; remembers what it was asked, and a name once started, as Step Functions
    does."""

    def __init__(self) -> None:
        self.started: list[BatchJobInput] = []

    def exists(self, name: str) -> bool:
        return any(job.run_name == name for job in self.started)

    def start(self, job: BatchJobInput) -> RunStart:
        self.started.append(job)
        return RunStart(job.run_name, f"arn:execution:{job.run_name}", started=True)


class World:
    def __init__(self, model: TrainedModel, rows: int = 120) -> None:
        self.model = model
        self.store = InMemoryObjectStore()
        self.registry = InMemoryRegistry()
        self.route = RecordingRoute()
        self.version = publish_live(self.store, self.registry, model)
        self.dataset = model.card.dataset
        self.key = f"{self.dataset}/batch/big.csv"
        frame = model.split("test").head(rows)[[f.name for f in model.card.features]]
        self.raw = frame.to_csv(index=False).encode()
        self.info = self.store.put(RAW, self.key, self.raw)

    def score(
        self,
        *,
        cap: int | None = None,
        identity: str = "event-1",
        limits: BatchJobLimits | None = None,
    ) -> BatchOutcome:
        return score_batch(
            self.store,
            self.registry,
            raw_bucket=RAW,
            artifacts_bucket=ARTIFACTS,
            key=self.key,
            chunk_rows=50,
            max_file_bytes=len(self.raw) - 1 if cap is None else cap,
            route=self.route,
            identity=identity,
            limits=limits,
        )

    def predictions(self, prefix: str) -> pd.DataFrame:
        parts = sorted(k for k in self.store.keys(ARTIFACTS, prefix) if k.endswith(".parquet"))
        frames = [pq.read_table(io.BytesIO(self.store.get_bytes(ARTIFACTS, k))) for k in parts]
        return pd.concat([f.to_pandas() for f in frames], ignore_index=True)


@pytest.fixture
def world(trained_models: dict[str, TrainedModel]) -> World:
    return World(trained_models["multiclass"])


def test_a_file_past_the_cap_starts_one_job_with_the_live_model_pinned(world: World) -> None:
    # When a file bigger than the function's cap arrives
    outcome = world.score()

    # Then a job is started for it, nothing is scored yet, and the request pins the live model
    assert outcome.status == "routed", outcome.reason
    (job,) = world.route.started
    assert outcome.job_name == job.job_name and outcome.execution == f"arn:execution:{job.run_name}"
    assert job.instance_type == BatchJobLimits().instance_type
    assert "processing job" in outcome.reason and "model version 1" in outcome.reason
    request = read_job_request(world.store, job.request_uri)
    live = world.registry.live(world.dataset)
    assert live is not None
    assert (request.model_version, request.model_uri, request.model_sha256) == (
        live.version,
        live.model_uri,
        live.sha256,
    )
    assert (request.key, request.size, request.etag) == (world.key, len(world.raw), world.info.etag)
    assert request.chunk_rows == 50 and request.job_name == job.job_name
    assert not [k for k in world.store.keys(ARTIFACTS) if k.endswith(".parquet")]

    # and the same event delivered again starts nothing
    again = world.score()
    assert again.status == "duplicate" and len(world.route.started) == 1
    # while another upload of the file is another job, under another name
    other = world.score(identity="event-2")
    assert other.status == "routed" and len(world.route.started) == 2
    assert world.route.started[0].job_name != world.route.started[1].job_name


def test_job_names_fit_sagemaker_for_any_dataset_name(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["multiclass"]
    world = World(model)
    long_name = "A_" + "x" * 62  # 64 characters, underscores: a valid dataset name
    publish_live(world.store, world.registry, model, dataset=long_name)
    world.key = f"{long_name}/batch/big.csv"
    world.store.put(RAW, world.key, world.raw)
    assert world.score().status == "routed"
    job = world.route.started[0]
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", job.job_name)
    assert len(job.run_name) <= 80


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-route", "no processing route for larger files is deployed"),
        ("past-the-job", "over what one processing job scores"),
        ("no-live-model", "has no live model to score with"),
        ("bad-contract", "the dataset's contract is invalid"),
    ],
)
def test_a_file_no_job_could_score_is_refused_before_one_starts(
    world: World, case: str, expected: str
) -> None:
    limits = None
    if case == "no-route":
        world.route = None  # type: ignore[assignment]
    elif case == "past-the-job":
        limits = BatchJobLimits(max_runtime_seconds=1, scored_bytes_per_second=2)
    elif case == "no-live-model":
        world.registry = InMemoryRegistry()
    else:
        world.store.put(RAW, layout.contract_key(world.dataset), b"{not json")
    outcome = world.score(limits=limits)

    assert outcome.status == "rejected" and expected in outcome.reason, outcome.reason
    assert case == "no-route" or world.route.started == []
    error = world.store.get_bytes(ARTIFACTS, layout.predictions_error_key(world.dataset, world.key))
    assert json.loads(error)["reason"] == outcome.reason


def _opt_ml(tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch) -> BatchJobInput:
    """The container's /opt/ml for the job world's last routing started: the request input."""
    job = world.route.started[-1]
    bucket, prefix = parse_s3_uri(job.request_uri)
    folder = tmp_path / Path(REQUEST_LOCAL_PATH).relative_to("/opt/ml")
    folder.mkdir(parents=True)
    (folder / REQUEST_FILE).write_bytes(world.store.get_bytes(bucket, prefix + REQUEST_FILE))
    monkeypatch.setenv(OPT_ML_ENV, str(tmp_path))
    return job


def test_the_job_writes_what_the_lambda_writes_with_the_pinned_model(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a routed file, then a second model promoted before the job runs
    assert world.score().status == "routed"
    job = _opt_ml(tmp_path, world, monkeypatch)
    publish_live(world.store, world.registry, world.model, run_name="run-2")
    assert world.registry.live(world.dataset).version == 2  # type: ignore[union-attr]

    # When the job runs in its container
    assert main(store=world.store) == 0

    # Then it scored every row with version 1, the model live when the file arrived, and wrote
    # the predictions and _manifest.json where the Lambda writes them
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["status"] == "scored" and printed["job_name"] == job.job_name
    prefix = layout.predictions_prefix(world.dataset, world.key, 1)
    manifest = json.loads(world.store.get_bytes(ARTIFACTS, f"{prefix}_manifest.json"))
    assert manifest["rows"] == 120 and manifest["model_version"] == 1
    assert job_outcome(world.store, job.request_uri) == manifest
    by_job = world.predictions(prefix)

    # and the Lambda path, scoring the same file with the same model, gives the same rows
    lambda_world = World(world.model)
    assert lambda_world.score(cap=10**9).status == "scored"
    by_lambda = lambda_world.predictions(layout.predictions_prefix(world.dataset, world.key, 1))
    pd.testing.assert_frame_equal(by_job, by_lambda)
    assert len(by_job) == 120 and len(manifest["parts"]) == 3  # 50-row chunks


def test_a_file_replaced_before_its_job_runs_is_left_to_its_own_event(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.score().status == "routed"
    _opt_ml(tmp_path, world, monkeypatch)
    world.store.put(RAW, world.key, world.raw + world.raw.split(b"\n", 2)[1] + b"\n")

    request = read_job_request(world.store, world.route.started[-1].request_uri)
    outcome = run_request(request, world.store)

    assert outcome.status == "ignored" and "replaced or deleted" in outcome.reason
    assert not [
        k
        for k in world.store.keys(ARTIFACTS, f"{world.dataset}/predictions/")
        if "part-" in k or k.endswith("_error.json")
    ]


def test_a_pinned_model_whose_file_changed_is_refused_by_the_job(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.score().status == "routed"
    request = read_job_request(world.store, world.route.started[-1].request_uri)
    bucket, key = parse_s3_uri(request.model_uri)
    world.store.put(bucket, key, b"not the model that was registered")

    outcome = run_request(request, world.store)

    assert outcome.status == "rejected" and "model version 1 is refused" in outcome.reason
    error = world.store.get_bytes(ARTIFACTS, layout.predictions_error_key(world.dataset, world.key))
    assert json.loads(error)["status"] == "rejected"


def test_a_failed_job_says_why_and_the_function_files_the_report(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a routed file whose model file is gone when the job runs (a fault, not the file's)
    assert world.score().status == "routed"
    job = _opt_ml(tmp_path, world, monkeypatch)
    request = read_job_request(world.store, job.request_uri)
    bucket, key = parse_s3_uri(request.card_uri)
    world.store.delete(bucket, key)

    # When the job runs, it fails, saying why where SageMaker reads it
    assert main(store=world.store) == 1
    said = (tmp_path / "output" / "message").read_text()
    assert "ObjectNotFoundError" in said and len(said.encode()) <= 1024

    # and the machine's Catch hands the failure to the function, which files the report
    cause = json.dumps(
        {"FailureReason": "AlgorithmError: algo-1 exited with code 1", "ExitMessage": said}
    )
    state = BatchJobState(
        **job.model_dump(), failure=StepFailure(Error="States.TaskFailed", Cause=cause)
    )
    outcome = report_failed_job(world.store, state)
    assert outcome.status == "rejected" and outcome.job_name == job.job_name
    assert "AlgorithmError: algo-1 exited with code 1: ObjectNotFoundError" in outcome.reason
    assert "upload the file again" in outcome.reason
    error = world.store.get_bytes(ARTIFACTS, layout.predictions_error_key(world.dataset, world.key))
    assert json.loads(error)["reason"] == outcome.reason
    assert not [k for k in world.store.keys(ARTIFACTS) if k.endswith(".parquet")]


def test_a_failed_job_whose_file_was_replaced_since_blames_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a routed file whose job failed, and the file replaced meanwhile (its own event
    # scores the replacement)
    assert world.score().status == "routed"
    job = _opt_ml(tmp_path, world, monkeypatch)
    world.store.put(RAW, world.key, world.raw + world.raw.split(b"\n", 2)[1] + b"\n")
    state = BatchJobState(
        **job.model_dump(), failure=StepFailure(Error="States.TaskFailed", Cause="{}")
    )

    # When the machine's Catch hands the failure to the function
    outcome = report_failed_job(world.store, state)

    # Then no _error.json is filed against the new file
    assert outcome.status == "ignored" and "replaced or deleted since" in outcome.reason
    error = layout.predictions_error_key(world.dataset, world.key)
    assert world.store.keys(ARTIFACTS, error) == []


def test_a_jobs_outcome_is_what_that_job_wrote_not_an_earlier_scoring(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the file already refused once (an _error.json of no job), then routed to a job
    world.store.put(
        ARTIFACTS,
        layout.predictions_error_key(world.dataset, world.key),
        json.dumps({"status": "rejected", "reason": "an earlier upload's"}).encode(),
    )
    assert world.score().status == "routed"
    job = _opt_ml(tmp_path, world, monkeypatch)

    # Then before the job has run it has no outcome; once it has, its manifest is
    assert job_outcome(world.store, job.request_uri) is None
    assert main(store=world.store) == 0
    said = job_outcome(world.store, job.request_uri)
    assert said is not None and said["job_name"] == job.job_name and said["status"] == "scored"


def test_the_job_fails_with_a_reason_when_its_request_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPT_ML_ENV, str(tmp_path))
    assert main(store=InMemoryObjectStore()) == 1
    assert "no batch job request" in (tmp_path / "output" / "message").read_text()


def test_the_jobs_requirements_are_pinned_as_constraints_pins_them_and_installed_here() -> None:
    constraints = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)
    )
    normal = {k.lower().replace("-", "_"): v for k, v in constraints.items()}
    wanted = pins("functions.batch")
    assert {"onnxruntime", "pyarrow", "numpy", "boto3"} <= set(wanted)
    for name, version in wanted.items():
        assert normal[name.lower().replace("-", "_")] == version, name
    assert missing("functions.batch") == []  # so the local runner's job_boot installs nothing


def test_the_job_needs_no_pandas() -> None:
    # The batch function's zip and the job's requirements carry no pandas: importing the job
    # must not reach for it
    code = "import sys, functions.batch.job; print('pandas' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_step_functions_route_names_the_execution_and_knows_a_redelivery() -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        arn = sfn.create_state_machine(
            name="jobs",
            definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/r",
        )["stateMachineArn"]
        route = StepFunctionsBatchRoute(sfn, arn)
        job = BatchJobInput(
            run_name="churn-batch-1",
            dataset="churn",
            job_name="churn-batch-1",
            request_uri="s3://a/churn/predictions/f.csv/_jobs/churn-batch-1/",
            instance_type="ml.m5.xlarge",
            volume_gb=30,
            max_runtime_seconds=3600,
        )
        assert route.exists(job.run_name) is False
        started = route.start(job)
        assert started.started and started.run_id.endswith(":churn-batch-1")
        assert route.exists(job.run_name) is True
        described = sfn.describe_execution(executionArn=started.run_id)
        assert BatchJobInput.model_validate_json(described["input"]) == job
