"""The local stack driven only through real clients: boto3 against its AWS endpoint, HTTP against
its API. Upload → the event router → preprocess → the pipeline definition → a live model →
predictions over HTTP."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from functions.shared import layout
from functions.shared.registry import LivePointer
from functions.shared.registry_dynamodb import DynamoDBRegistry
from infra.cli import main
from infra.local.local_file import LOCAL_FILE
from infra.local.stack import (
    PENDING_DIR,
    RUNS_FILE,
    UPLOADS_FILE,
    LocalStack,
    StackConfig,
    free_port,
    read_history,
)
from infra.topology import Topology
from tests.builders import churn_frame, contract_bytes, csv_bytes
from tests.processes import ChildProcess

API_KEY = "e2e-key"
WAIT_SECONDS = 180


@pytest.fixture
def environment() -> Iterator[None]:
    saved = dict(os.environ)  # the stack sets its functions' environment process-wide
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _config(state_dir: Path) -> StackConfig:
    return StackConfig(
        topology=Topology(stage="e2e"),
        aws_port=free_port(),
        api_port=free_port(),
        api_key=API_KEY,
        state_dir=state_dir,
    )


@pytest.fixture
def stack(tmp_path: Path, environment: None) -> Iterator[LocalStack]:
    lines: list[str] = []
    with LocalStack(_config(tmp_path / ".sluice"), log=lines.append) as running:
        yield running


def live_pointer(registry: DynamoDBRegistry, dataset: str) -> LivePointer | None:
    """The live pointer as a client reads it while the stack may be promoting. moto applies a
    transaction's UpdateItem attribute by attribute, so a GetItem from another thread can find
    the item holding its key alone, which DynamoDB never shows: such a read is retried."""
    for _ in range(50):
        try:
            return registry.live(dataset)
        except ValidationError:
            time.sleep(0.02)
    return registry.live(dataset)


def _wait_for(condition: Callable[[], Any], what: str, stack: LocalStack) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; runs: {[r.__dict__ for r in stack.runs]}")


def _bound_addresses(port: int) -> set[str]:
    """The local addresses listening on ``port`` (TCP, IPv4 and IPv6), from the kernel's own
    table: what a client on another machine could reach, not what the code meant."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(".".join(str(b) for b in reversed(raw)))
                else:
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


def _uploads(stack: LocalStack) -> list[dict[str, Any]]:
    return read_history(stack.config.state_dir, UPLOADS_FILE)


def _get(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"x-api-key": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post(url: str, body: Any, key: str | None) -> tuple[int, Any]:
    headers = {"content-type": "application/json", **({"x-api-key": key} if key else {})}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class _IsolatedInvocations(threading.Thread):
    """Watch this process's children for Lambda invocations run in a child process
    (infra/local/isolated.py), and note the handler each was asked to run."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.targets: set[str] = set()
        self._stop_watching = threading.Event()
        self._seen: set[int] = set()

    def run(self) -> None:
        while not self._stop_watching.wait(0.02):
            for task in Path(f"/proc/{os.getpid()}/task").iterdir():
                with contextlib.suppress(OSError):
                    for child in (task / "children").read_text().split():
                        self._note(int(child))

    def _note(self, pid: int) -> None:
        if pid in self._seen:
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            if "infra.local.isolated" in argv:
                request = json.loads(Path(argv[argv.index("infra.local.isolated") + 1]).read_text())
                self.targets.add(request["target"])
                self._seen.add(pid)

    def stop(self) -> set[str]:
        self._stop_watching.set()
        self.join()
        return self.targets


def test_an_upload_becomes_a_live_model_answering_over_http(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the stack's own description of itself, readable by this user only (it holds the key)
    local = json.loads((stack.config.state_dir / LOCAL_FILE).read_text())
    assert local["api_key"] == API_KEY and local["aws_endpoint_url"] == stack.endpoint
    assert (stack.config.state_dir / LOCAL_FILE).stat().st_mode & 0o077 == 0
    # and listening on this machine only: the API and the AWS endpoint bound to loopback
    assert stack.api_url.startswith("http://127.0.0.1:") and stack.endpoint.startswith(
        "http://127.0.0.1:"
    )
    for port in (stack.config.api_port, stack.config.aws_port):
        assert _bound_addresses(port) == {"127.0.0.1"}, port

    # When a user uploads a contract and data with boto3, to the endpoint local.json names
    invocations = _IsolatedInvocations()
    invocations.start()
    s3 = stack.client("s3")
    topology = stack.config.topology
    contract = contract_bytes(id_column="customer_id", passthrough=["account manager"])
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract)
    frame = churn_frame(800, seed=4)
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv", Body=csv_bytes(frame))

    # Then, with no other help, a model goes live
    registry = DynamoDBRegistry(stack.client("dynamodb"), topology.registry_table)
    live = _wait_for(lambda: live_pointer(registry, "churn"), "a live model", stack)
    # (promote sets the pointer inside the run; the run's record follows when it ends)
    _wait_for(lambda: stack.runs, "the run's record", stack)
    assert stack.runs[-1].path[-2:] == ["Promote", "Promoted"]
    # (preprocess and evaluate each ran in a child process of their own, as Lambda runs them:
    # what they allocate leaves with it, docs/reliability.md §9)
    assert invocations.stop() >= {
        "functions.preprocess.handler:lambda_handler",
        "functions.evaluate.handler:lambda_handler",
    }

    # and predictions come back over real HTTP with the API key, and not without it
    status, described = _get(f"{stack.api_url}/v1/models/churn")
    assert status == 200, described
    assert described["model_version_status"][0] == {
        "version": str(live.version),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    status, metadata = _get(f"{stack.api_url}/v1/models/churn/metadata")
    features = [f["name"] for f in metadata["features"]]
    instances = json.loads(frame[features].head(2).to_json(orient="records"))
    url = f"{stack.api_url}/v1/models/churn:predict"
    status, answer = _post(url, {"instances": instances}, API_KEY)
    assert status == 200, answer
    assert answer["model_version"] == str(live.version) and len(answer["predictions"]) == 2
    assert _post(url, {"instances": instances}, None)[0] == 403
    assert _post(url, {"instances": instances}, "wrong-key")[0] == 403

    # and the drift job, run as its schedule would, looks at the live model's captured traffic
    # (one request, captured or not by the 10 % sample; test_retraining.py sends enough)
    [drift] = stack.run_drift()
    assert drift["dataset"] == "churn" and drift["model_version"] == live.version, drift
    if drift["status"] == "measured":
        report_key = drift["report_uri"].split("/", 3)[3]
        assert s3.head_object(Bucket=topology.artifacts_bucket, Key=report_key)["ContentLength"]
    else:
        assert drift["reason"].startswith("no captured requests of model version"), drift

    # When a file to score is dropped under batch/, with the contract's id and passthrough columns
    to_score = frame[["customer_id", *features]].head(300)
    to_score.insert(1, "account manager", [f"Zoë {i % 7}" for i in range(300)])
    batch = csv_bytes(to_score)
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/batch/june.csv", Body=batch)
    [scored] = _wait_for(
        lambda: [u for u in _uploads(stack) if u["key"] == "churn/batch/june.csv"],
        "the batch file's outcome",
        stack,
    )
    # Then the live model scores every row into the artifacts bucket, and nothing trains
    assert scored["status"] == "scored" and scored["rows"] == 300, scored
    assert scored["model_version"] == live.version
    prefix = f"churn/predictions/june.csv/v{live.version}/"
    listed = s3.list_objects_v2(Bucket=topology.artifacts_bucket, Prefix=prefix)["Contents"]
    parts = [o["Key"] for o in listed if o["Key"].endswith(".parquet")]
    table = pq.read_table(
        io.BytesIO(s3.get_object(Bucket=topology.artifacts_bucket, Key=parts[0])["Body"].read())
    )
    assert table.num_rows == 300 and set(table.column("label").to_pylist()) <= {"yes", "no"}
    # and each prediction carries its row's id and passthrough column, to join it back
    assert table.column_names[:3] == ["row", "customer_id", "account manager"]
    assert table.column("customer_id").to_pylist() == to_score["customer_id"].tolist()
    assert table.column("account manager").to_pylist() == to_score["account manager"].tolist()
    # and the parts, streamed as staged uploads, were all completed: the manifest lists what is
    # there, and no upload is left open
    manifest_key = prefix + "_manifest.json"
    stored = s3.get_object(Bucket=topology.artifacts_bucket, Key=manifest_key)
    manifest = json.loads(stored["Body"].read())
    assert manifest["parts"] == [f"s3://{topology.artifacts_bucket}/{p}" for p in parts]
    assert s3.list_multipart_uploads(Bucket=topology.artifacts_bucket).get("Uploads", []) == []
    assert len(stack.runs) == 1

    # When a broken upload follows (the target column is missing)
    broken = csv_bytes(frame.drop(columns=["churned"]))
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/feb.csv", Body=broken)
    [rejected] = _wait_for(
        lambda: [u for u in _uploads(stack) if u["key"] == "churn/data/feb.csv"],
        "the broken upload's outcome",
        stack,
    )
    # Then it is rejected with a report that names the problem, and nothing else changes
    assert rejected["status"] == "rejected" and "churned" in rejected["reason"], rejected
    report = json.loads(
        s3.get_object(Bucket=topology.artifacts_bucket, Key=rejected["report_key"])["Body"].read()
    )
    assert report["decision"] == "rejected" and report["violations"], report
    assert registry.live("churn") == live and len(stack.runs) == 1
    kept = s3.get_object(Bucket=topology.raw_bucket, Key="churn/data/feb.csv")["Body"].read()
    assert kept == broken
    status, answer = _post(url, {"instances": instances}, API_KEY)
    assert status == 200 and answer["model_version"] == str(live.version)

    # and `sluice status` lists the upload and the run with its state path and decision
    code = main(["status", "--state-dir", str(stack.config.state_dir), "--json"])
    history = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [u["status"] for u in history["uploads"]] == ["started", "scored", "rejected"]
    assert [d["dataset"] for d in history["drift"]] == ["churn"]
    run = history["runs"][-1]
    assert run["status"] == "SUCCEEDED" and run["path"][-1] == "Promoted"
    assert run["decision"]["kind"] == "promoted" and run["decision"]["live_version"] == 1
    assert any("meets threshold" in r for r in run["decision"]["reasons"])
    assert main(["status", "--state-dir", str(stack.config.state_dir)]) == 0
    readable = capsys.readouterr().out
    assert "→ Promote → Promoted" in readable and "promoted: model version 1, live 1" in readable


def test_sluice_up_starts_in_the_foreground_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    up = SluiceUp(tmp_path, free_port(), (api_port := free_port()), "--tls")
    try:
        # One line per component, then "ready"
        up.read_until(_said("ready"))
        assert [line.split()[0] for line in up.lines] == [
            "aws",
            "resources",
            "state",
            "api",
            "router",
            "console",
            "logs",
            "ready",
        ]
        # The API answers over HTTPS, trusted through the CA file local.json names, in our JSON
        # format (no model yet), with the key
        local = json.loads((tmp_path / LOCAL_FILE).read_text())
        assert local["api_url"] == f"https://127.0.0.1:{api_port}"
        trusted = ssl.create_default_context(cafile=local["api_ca_bundle"])
        request = urllib.request.Request(
            f"{local['api_url']}/v1/models/churn", headers={"x-api-key": API_KEY}
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(request, timeout=10, context=trusted)
        assert missing.value.code == 404
        assert json.loads(missing.value.read())["code"] == "model_not_found"
        # and `sluice predict --url --cacert` reaches it
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "infra.cli",
                "predict",
                "churn",
                '[{"tenure": 3}]',
                "--url",
                local["api_url"],
                "--api-key",
                API_KEY,
                "--cacert",
                local["api_ca_bundle"],
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert code.returncode == 1 and "model_not_found" in code.stderr, code.stderr
    finally:
        rest = up.interrupt()
    assert up.process.returncode == 0, up.said + rest
    assert rest.strip().endswith("stopped")


def test_two_uploads_in_quick_succession_give_two_runs_whose_promotions_serialize(
    stack: LocalStack,
) -> None:
    # Given a contract, when two uploads land back to back
    s3 = stack.client("s3")
    topology = stack.config.topology
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())
    for month, seed in (("jan", 5), ("feb", 6)):
        frame = churn_frame(600, seed=seed, start_id=seed * 1000)
        s3.put_object(
            Bucket=topology.raw_bucket, Key=f"churn/data/{month}.csv", Body=csv_bytes(frame)
        )

    # Then two runs execute, one after the other
    _wait_for(lambda: len(stack.runs) == 2 and stack.idle(), "two runs", stack)
    first, second = stack.runs
    assert first.status == second.status == "SUCCEEDED", (first, second)
    assert first.path[-1] == "Promoted"
    # and the second was gated against the model the first promoted, not against nothing
    registry = DynamoDBRegistry(stack.client("dynamodb"), topology.registry_table)
    versions = registry.versions("churn")
    assert [v.version for v in versions] == [1, 2]
    report = json.loads(
        s3.get_object(
            Bucket=topology.artifacts_bucket,
            Key=versions[1].report_uri.split("/", 3)[3],
        )["Body"].read()
    )
    assert report["champion_note"]["version"] == 1, report["champion_note"]
    assert report["champion_note"]["scored"], report["champion_note"]
    # and each version's model report was written beside it; the second's sets it against the
    # first on the same rows
    for version in versions:
        page_key = layout.model_report_page_of(version.model_uri.split("/", 3)[3])
        page = s3.get_object(Bucket=topology.artifacts_bucket, Key=page_key)["Body"].read()
        assert f"churn version {version.version}".encode() in page
    twin_key = layout.model_report_page_of(versions[1].model_uri.split("/", 3)[3]).replace(
        layout.MODEL_REPORT_PAGE, layout.MODEL_REPORT_JSON
    )
    twin = json.loads(s3.get_object(Bucket=topology.artifacts_bucket, Key=twin_key)["Body"].read())
    assert twin["comparison"]["champion_version"] == 1 and twin["comparison"]["scored"]
    assert twin["comparison"]["agreement"] is not None
    # and the registry tells one consistent story: each promotion replaced the live version
    # its run was evaluated against
    promotions = [e for e in registry.audit("churn") if e.action == "promoted"]
    assert [(e.version, e.previous_live) for e in promotions] == (
        [(1, None), (2, 1)] if second.path[-1] == "Promoted" else [(1, None)]
    )
    live = registry.live("churn")
    assert live is not None and live.version == promotions[-1].version


def test_an_upload_past_one_lambda_is_built_by_a_processing_job_then_trained(
    tmp_path: Path, environment: None
) -> None:
    # Given a stack whose preprocess reads, and whose batch function scores, at most 1 000
    # bytes in one invocation
    os.environ["MAX_READ_BYTES"] = "1000"
    os.environ["MAX_FILE_BYTES"] = "1000"
    with LocalStack(_config(tmp_path / ".sluice"), log=lambda line: None) as stack:
        s3 = stack.client("s3")
        topology = stack.config.topology
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())

        # When a file larger than that lands
        frame = churn_frame(600, seed=8)
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/big.csv", Body=csv_bytes(frame))

        # Then preprocess started a build, the local processing runner built the part, the
        # builds machine's last step assembled the version and started the run, and the run
        # went through training to a decision
        _wait_for(lambda: len(stack.runs) == 1 and stack.idle(), "the built run", stack)
        (run,) = stack.runs
        assert run.status == "SUCCEEDED" and run.path[-1] == "Promoted", run
        statuses = [(u.get("kind"), u["status"]) for u in _uploads(stack)]
        assert statuses == [("preprocess", "building"), ("build", "started")]
        parts = s3.list_objects_v2(Bucket=topology.artifacts_bucket, Prefix="churn/parts/builds/")
        assert [o["Key"].rsplit("/", 1)[1] for o in parts["Contents"]] == ["algo-1.json"]
        builds = stack.client("stepfunctions").list_executions(
            stateMachineArn=topology.builds_state_machine_arn
        )["executions"]
        assert [b["status"] for b in builds] == ["SUCCEEDED"]

        # When a batch file larger than the batch function's cap lands
        to_score = frame.drop(columns=["churned"]).head(200)
        s3.put_object(
            Bucket=topology.raw_bucket, Key="churn/batch/big.csv", Body=csv_bytes(to_score)
        )

        # Then the function started a processing job, and the job scored every row with the
        # live model where the function would have
        [done] = _wait_for(
            lambda: [u for u in _uploads(stack) if u.get("kind") == "batch-job"],
            "the batch job's outcome",
            stack,
        )
        routed = [u for u in _uploads(stack) if u.get("kind") == "batch"]
        assert [u["status"] for u in routed] == ["routed"], routed
        assert done["status"] == "scored" and done["rows"] == 200, done
        assert done["model_version"] == 1
        jobs = stack.client("stepfunctions").list_executions(
            stateMachineArn=topology.batch_jobs_state_machine_arn
        )["executions"]
        assert [j["status"] for j in jobs] == ["SUCCEEDED"]


def test_state_survives_a_restart_and_a_pending_run_resumes(
    tmp_path: Path, environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / ".sluice"
    frame = churn_frame(600, seed=8)
    data = csv_bytes(frame)

    # Given a stack stopped cleanly while a run waited to start (its runner is held back)
    with monkeypatch.context() as held:
        held.setattr(LocalStack, "_run_worker", lambda self: None)
        first = LocalStack(_config(state_dir), log=lambda line: None)
        first.start()
        s3 = first.client("s3")
        topology = first.config.topology
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv", Body=data)
        _wait_for(lambda: list((state_dir / PENDING_DIR).glob("*.json")), "a pending run", first)
        first.stop()

    # When it starts again, the uploads are there and the pending run resumes to a live model
    lines: list[str] = []
    with LocalStack(_config(state_dir), log=lines.append) as second:
        assert any(line.startswith("state") and "1 run(s) resumed" in line for line in lines)
        registry = DynamoDBRegistry(second.client("dynamodb"), topology.registry_table)
        live = _wait_for(lambda: live_pointer(registry, "churn"), "the resumed run's model", second)
        # the journal entry goes when the run ends, just after promote set the pointer
        _wait_for(lambda: not list((state_dir / PENDING_DIR).glob("*.json")), "the journal", second)
        status, metadata = _get(f"{second.api_url}/v1/models/churn/metadata")
        features = [f["name"] for f in metadata["features"]]
        instances = json.loads(frame[features].head(3).to_json(orient="records"))
        url = f"{second.api_url}/v1/models/churn:predict"
        status, before = _post(url, {"instances": instances}, API_KEY)
        assert status == 200, before

    # and after another restart the registry, the model and the raw data are as they were
    lines.clear()
    with LocalStack(_config(state_dir), log=lines.append) as third:
        assert any(line.startswith("state") and "restored" in line for line in lines), lines
        s3 = third.client("s3")
        registry = DynamoDBRegistry(third.client("dynamodb"), topology.registry_table)
        assert registry.live("churn") == live
        assert [e.action for e in registry.audit("churn")][-2:] == ["registered", "promoted"]
        raw = s3.list_object_versions(Bucket=topology.raw_bucket, Prefix="churn/data/")
        assert len(raw["Versions"]) == 1
        body = s3.get_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv")["Body"]
        assert body.read() == data
        url = f"{third.api_url}/v1/models/churn:predict"
        status, after = _post(url, {"instances": instances}, API_KEY)
        assert status == 200 and {**after, "request_id": ""} == {**before, "request_id": ""}
        # and restoring did not look like a new upload: no second run
        time.sleep(1)
        assert third.idle() and third.runs == []


class SluiceUp(ChildProcess):
    """``sluice up`` in a subprocess, as a user runs it."""

    def __init__(self, state_dir: Path, aws_port: int, api_port: int, *flags: str) -> None:
        command = [
            sys.executable, "-m", "infra.cli", "up",
            "--aws-port", str(aws_port), "--api-port", str(api_port),
            "--api-key", API_KEY, "--state-dir", str(state_dir), *flags,
        ]  # fmt: skip
        super().__init__(
            command,
            cwd=Path(__file__).resolve().parents[2],
            # PYTHONFAULTHANDLER: a stop that hangs is aborted (interrupt) and says where each
            # thread was
            env={**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING", "PYTHONFAULTHANDLER": "1"},
        )

    def read_until(self, done: Callable[[list[str]], bool]) -> None:
        self.wait(
            done,
            WAIT_SECONDS,
            timed_out="timed out; sluice up said",
            ended="sluice up ended early",
            error=AssertionError,
        )

    def interrupt(self) -> str:
        """Ctrl-C; the rest of what it says. Ctrl-C lets a run in progress finish first, which
        on a loaded 2-core machine can take more than a minute."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=30)
            stopped = f"did not stop within {WAIT_SECONDS} s of SIGINT"
            raise AssertionError(f"sluice up {stopped}:\n{self.said}{self.rest()}") from None
        return self.rest()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def _said(prefix: str, times: int = 1) -> Callable[[list[str]], bool]:
    return lambda lines: sum(line.startswith(prefix) for line in lines) >= times


def test_a_crash_mid_run_loses_nothing_saved_and_the_run_resumes(tmp_path: Path) -> None:

    aws_port, api_port = free_port(), free_port()
    topology = Topology(stage="local")
    frame = churn_frame(3000, seed=9)

    # Given `sluice up` killed with SIGKILL while a run trains, after the upload was saved
    up = SluiceUp(tmp_path, aws_port, api_port)
    try:
        up.read_until(_said("ready"))
        endpoint = f"http://127.0.0.1:{aws_port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=topology.region)
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())
        s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv", Body=csv_bytes(frame))
        up.read_until(_said("run "))  # "run <name> started"
        index = tmp_path / "state" / "index.json"
        deadline = time.monotonic() + 30
        while "manifest.json" not in (index.read_text() if index.is_file() else ""):
            assert time.monotonic() < deadline, "the dataset version was never saved"
            time.sleep(0.02)
    finally:
        up.kill()
    first_life = up.said
    assert "SUCCEEDED" not in up.said, "the run ended before the crash"
    assert list((tmp_path / PENDING_DIR).glob("*.json"))

    # When it starts again
    up = SluiceUp(tmp_path, aws_port, api_port)
    try:
        up.read_until(_said("ready"))
        # Then the run resumes from its first state and its model goes live
        assert "1 run(s) resumed" in up.said, up.said
        up.read_until(_said("run ", times=2))  # started, then its outcome
        [outcome] = [line for line in up.lines if line.startswith("run ") and "started" not in line]
        assert "SUCCEEDED" in outcome and outcome.rstrip().endswith("Promoted"), outcome
        status, described = _get(f"http://127.0.0.1:{api_port}/v1/models/churn")
        deadline = time.monotonic() + 30
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status, described = _get(f"http://127.0.0.1:{api_port}/v1/models/churn")
        assert status == 200 and described["model_version_status"][0]["version"] == "1"
    finally:
        rest = up.interrupt()
    assert up.process.returncode == 0, up.said + rest
    # and nothing `sluice up` printed in either life (its log, the functions' logs, the API's
    # handling of the keyed requests above) holds the API key
    assert API_KEY not in first_life + up.said + rest
    # and the history holds one upload and one run, nothing twice
    history = {name: read_history(tmp_path, name) for name in (UPLOADS_FILE, RUNS_FILE)}
    assert [u["status"] for u in history[UPLOADS_FILE]] == ["started"]
    assert [r["status"] for r in history[RUNS_FILE]] == ["SUCCEEDED"]
    assert not list((tmp_path / PENDING_DIR).glob("*.json"))
