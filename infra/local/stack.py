"""The local stack's core: sluice's event-driven system on one machine, reachable by real clients.

- an AWS-compatible endpoint on loopback (moto's server) holding the resources the topology
  names (``provision``);
- the event router: S3 Object Created and Deleted (EventBridge-shaped, via the upload queue) → the
  preprocess handler in a child process per invocation (infra/local/isolated.py), or, for
  ``<dataset>/batch/`` files, the batch predictions handler in-process; retried, with a
  dead-letter record when it keeps failing;
- the run worker: each run preprocess starts is executed from the pipeline definition
  (``run_pipeline``), one at a time, its summary kept in the run history;
- the local API Gateway: HTTP on loopback → the inference handler, API key required;
- monitoring: the drift job on its schedule; the functions' EMF metrics kept and put to the
  endpoint, and the retraining alarms of infra/alarms.py evaluated every ``alarm_seconds``
  (infra/local/alarms.py); an alarm entering ALARM, and each run's end, go to the retrain
  handler, as EventBridge delivers them on AWS;
- persistence: the buckets and the registry are saved to ``<state dir>/state`` (after each
  upload handled, each run, every few seconds, and at stop) and restored on start; runs
  waiting or executing are journaled in ``<state dir>/pending-runs`` and resumed
  (docs/local-stack.md says exactly what a crash can lose).

The handlers reach the endpoint through ``AWS_ENDPOINT_URL``, exactly as on AWS they reach AWS.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import queue
import socket
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from functions.batch.route import BatchJobInput
from functions.shared.layout import parse_batch_key
from functions.shared.orchestration import BuildInput, RunInput
from functions.shared.progress import Progress, route_progress
from functions.shared.storage import S3ObjectStore
from infra.alarms import NAMESPACE
from infra.local import memory
from infra.local.alarms import AlarmEvaluator, MetricSink, matches_alarm_rule
from infra.local.api_gateway import LocalApiGateway
from infra.local.asl import Execution, StateEvent
from infra.local.context import LocalLambdaContext
from infra.local.isolated import invoke_in_child
from infra.local.local_file import LocalEndpoints, write_local_file
from infra.local.pipeline import (
    PREPROCESS_TARGET,
    run_batch_job,
    run_build,
    run_decision,
    run_failure,
    run_pipeline,
    use_endpoint,
)
from infra.local.resources import LocalResources, provision, receive_upload_events
from infra.local.s3_deletes import emit_delete_markers
from infra.local.snapshot import Snapshots, write_atomically
from infra.local.tls import DEFAULT_HOSTS, LocalCertificate, local_certificate
from infra.local.trainers import TRAINERS_DIR, end_stale_trainers
from infra.topology import LOCAL_API_PORT, LOCAL_AWS_PORT, Topology

HANDLER_ATTEMPTS = 3
POLL_SECONDS = 0.2
DEAD_LETTER_FILE = "dead-letter.jsonl"
RUNS_FILE = "runs.jsonl"
UPLOADS_FILE = "uploads.jsonl"
DRIFT_FILE = "drift.jsonl"
RETRAIN_FILE = "retrain.jsonl"
ALARMS_FILE = "alarms.jsonl"
PENDING_DIR = "pending-runs"
BUILD_JOURNAL = ".build.json"  # a journaled build, beside the journaled runs
BATCH_JOURNAL = ".batch.json"  # a journaled batch job
PROGRESS_FILE = "progress.jsonl"
RUNNING_FILE = "running.json"  # the run executing now, with this process's id (sluice status)
PROGRESS_SECONDS = 5.0  # at most one progress line per step and dataset this often
TLS_DIR = "tls"
SNAPSHOT_SECONDS = 5.0
_METRICS_ENV = {"POWERTOOLS_METRICS_DISABLED": "false", "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE}


class PortInUseError(OSError):
    """A port the stack listens on is taken; ``service`` says which ("aws" or "api")."""

    def __init__(self, service: str, host: str, port: int) -> None:
        super().__init__(f"{host}:{port} is already in use")
        self.service, self.host, self.port = service, host, port


@dataclass(frozen=True)
class StackConfig:
    topology: Topology = field(default_factory=lambda: Topology(stage="local"))
    host: str = "127.0.0.1"
    aws_port: int = LOCAL_AWS_PORT
    api_port: int = LOCAL_API_PORT
    api_key: str = "sluice-local-key"
    state_dir: Path = Path(".sluice")
    tls: bool = False  # HTTPS for the API, with a certificate generated in <state dir>/tls
    drift_seconds: float = 3600.0  # the drift job's schedule (hourly, as deployed)
    alarm_seconds: float = 60.0  # how often alarms are evaluated (each minute, as CloudWatch)
    # set in the functions' environment after the topology's (sluice up --env NAME=VALUE)
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RunRecord:
    """One run's summary, as ``sluice status`` will show it."""

    name: str
    dataset: str
    status: str
    path: list[str]
    error: str | None
    cause: str | None
    states_seconds: dict[str, float]
    started_at: str
    seconds: float
    decision: dict[str, Any] | None  # promote's or reject's outcome: kind, reasons, versions
    failure: dict[str, str] | None = None  # a failed run's state, error, cause, message

    @classmethod
    def of(
        cls, execution: Execution, *, dataset: str, started_at: str, seconds: float
    ) -> RunRecord:
        return cls(
            name=execution.name,
            dataset=dataset,
            status=execution.status,
            path=execution.path,
            error=execution.error,
            cause=execution.cause,
            states_seconds={e.name: round(e.duration_seconds, 3) for e in execution.history},
            started_at=started_at,
            seconds=seconds,
            decision=run_decision(execution),
            failure=run_failure(execution),
        )


class LocalStack:
    """``with LocalStack(config) as stack:`` starts everything; leaving the block stops it."""

    def __init__(self, config: StackConfig, *, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.endpoint = f"http://{config.host}:{config.aws_port}"
        self.runs: list[RunRecord] = []
        self._stopping = threading.Event()
        self._pending: queue.Queue[tuple[Path, RunInput | BuildInput | BatchJobInput]] = (
            queue.Queue()
        )
        self._threads: list[threading.Thread] = []
        self._moto: Any = None
        self._api: LocalApiGateway | None = None
        self._resources: LocalResources | None = None
        self._snapshots: Snapshots | None = None
        self.certificate: LocalCertificate | None = None
        self.metrics = MetricSink()
        self.alarms: AlarmEvaluator | None = None
        # one retrain decision at a time, as a stage deployed with reserved_concurrency retrain=1
        self._retrain_lock = threading.Lock()
        self._alarms_lock = threading.Lock()
        self._metrics_env: dict[str, str | None] = {}
        # (step, dataset) → when its last line was shown, and that line
        self._progress_shown: dict[tuple[str, str], tuple[float, str]] = {}
        self._alarm_states: dict[str, str] = {}  # as alarms.jsonl last recorded them

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        topology = self.config.topology
        # Checked first: moto's server binds on its own thread, and when the bind fails it never
        # signals ready, so start() would wait forever after werkzeug's "Address already in use".
        ensure_free("aws", self.config.host, self.config.aws_port)
        ensure_free("api", self.config.host, self.config.api_port)
        memory.limit_arenas()  # before the stack's threads start (memory.py)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per AWS call otherwise
        self._moto = ThreadedMotoServer(
            ip_address=self.config.host, port=self.config.aws_port, verbose=False
        )
        self._moto.start()
        emit_delete_markers()  # S3's "Object Deleted", which moto does not send (s3_deletes.py)
        # moto's server keeps its state in this process's moto backends: start from empty
        self._reset_endpoint()
        self.log(f"aws      {self.endpoint} (moto; region {topology.region})")
        # Metrics on, in the namespace the alarms watch (as deployed), going to the local
        # CloudWatch and the alarm evaluator rather than to this terminal.
        from functions.shared.observability import route_emf  # after the caller's environment

        self._metrics_env = {name: os.environ.get(name) for name in _METRICS_ENV}
        os.environ.update(_METRICS_ENV)
        route_emf(self.metrics.offer, echo=False)
        route_progress(self._progress)
        use_endpoint(
            topology,
            self.endpoint,
            # promote puts the retraining alarms with the drift job's period, faster than hourly
            {
                "RETRAIN_ALARM_PERIOD_SECONDS": str(self._monitor_period()),
                **self.config.environment,
            },
        )
        snapshots = Snapshots(
            self.config.state_dir,
            self.client,
            buckets=(topology.raw_bucket, topology.artifacts_bucket),
            tables=(topology.registry_table,),
        )
        restored: list[str] = []

        def restore() -> None:
            figures = snapshots.restore()
            if figures is not None:
                restored.append(
                    f"restored {figures.objects} objects ({figures.new_bytes / 1e6:.1f} MB) and "
                    f"{figures.items} registry items in {figures.seconds:.1f} s"
                )

        self._resources = provision(self.client, topology, before_events=restore)
        self._snapshots = snapshots
        self.log(
            f"resources buckets {topology.raw_bucket}, {topology.artifacts_bucket}; "
            f"table {topology.registry_table}; state machine {topology.state_machine_name}"
        )
        for stale in end_stale_trainers(self.config.state_dir / TRAINERS_DIR):
            if stale.was_alive:  # its run is still journaled: it resumes below, trained afresh
                self.log(
                    f"state    ended a trainer left running by the previous stack (pid "
                    f"{stale.record.pid}, job {stale.record.job}); its run resumes"
                )
        resumed = self._resume_pending_runs()
        self._restore_retraining_alarms()
        for change in read_history(self.config.state_dir, ALARMS_FILE):
            self._alarm_states[change["alarm"]] = change["state"]
        self.log(
            f"state    {snapshots.root}: "
            + (restored[0] if restored else "empty, saved from now on")
            + (f"; {resumed} run(s) resumed" if resumed else "")
        )
        from functions.inference import handler as inference

        self.certificate = (
            local_certificate(self.config.state_dir / TLS_DIR, _certificate_hosts(self.config.host))
            if self.config.tls
            else None
        )
        self._api = LocalApiGateway(
            inference.lambda_handler,
            lambda: LocalLambdaContext.for_function(topology, "inference"),
            host=self.config.host,
            port=self.config.api_port,
            api_key=self.config.api_key,
            ssl_context=self.certificate.server_context() if self.certificate else None,
        )
        self._api.__enter__()
        trust = f"; trust {self.certificate.cert_path}" if self.certificate else ""
        self.log(f"api      {self._api.url} (x-api-key required{trust})")
        self.alarms = AlarmEvaluator(topology, lambda: self.client("cloudwatch"), self.metrics)
        workers = (
            (self._route_events, "router"),
            (self._run_worker, "runner"),
            (self._save_periodically, "saver"),
            (self._drift_periodically, "drift"),
            (self._alarms_periodically, "alarms"),
        )
        for target, name in workers:
            thread = threading.Thread(target=target, name=f"sluice-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.log(
            "router   S3 Object Created/Deleted → preprocess; runs → pipeline.asl.json; alarms "
            "and run ends → retrain"
        )
        self._write_local_file()

    def stop(self) -> None:
        """Let the run in progress finish, save the state, then stop the endpoint. Runs not yet
        started stay in the pending-runs journal for the next start."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=None if thread.name == "sluice-runner" else 30)
        if self._api is not None:
            self._api.__exit__(None, None, None)
            from functions.inference import api as inference

            inference.observers()[0].close()  # captured requests reach the bucket before saving
        from functions.shared.observability import route_emf

        route_emf(None, echo=True)
        route_progress(None)
        for name, value in self._metrics_env.items():  # as they were before start
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self._snapshots is not None:
            self._save()
        if self._moto is not None:
            self._reset_endpoint()  # what a new process would find: nothing but the snapshot
            self._moto.stop()

    @property
    def api_url(self) -> str:
        assert self._api is not None, "the stack is not started"
        return self._api.url

    def client(self, service: str) -> Any:
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=self.config.topology.region
        )

    def idle(self) -> bool:
        """No upload waiting in the queue and no run pending or executing."""
        return self._pending.unfinished_tasks == 0 and not self._queued_uploads()

    # -- the event router and the run worker ---------------------------------------------

    def _route_events(self) -> None:
        assert self._resources is not None
        while not self._stopping.is_set():
            try:
                events = receive_upload_events(self.client, self._resources)
            except Exception as exc:  # the endpoint is going away, or a transient fault
                if not self._stopping.is_set():
                    self.log(f"router   cannot read the upload queue: {exc}")
                events = []
            for event in events:
                self._deliver(event)
            if events:
                self._save()
            self._stopping.wait(POLL_SECONDS)

    def _deliver(self, event: dict[str, Any]) -> None:
        """Hand one S3 event to the function its key belongs to: batch files to the batch
        predictions function, everything else to preprocess (which ignores what is not data)."""
        key = event.get("detail", {}).get("object", {}).get("key")
        if isinstance(key, str) and parse_batch_key(key) is not None:
            self._attempt(event, "batch", key)
        else:
            self._attempt(event, "preprocess", key)

    def _attempt(self, event: dict[str, Any], function: str, key: str | None) -> None:
        from functions.batch import handler as batch
        from functions.retrain import handler as retrain

        handler = {
            "batch": batch.lambda_handler,
            "preprocess": self._preprocess,
            "retrain": retrain.lambda_handler,
        }[function]
        context = LocalLambdaContext.for_function(self.config.topology, function)
        failure = ""
        for attempt in range(1, HANDLER_ATTEMPTS + 1):
            try:
                outcomes = handler(event, context)["outcomes"]
            except Exception:
                failure = traceback.format_exc(limit=5)
                self.log(f"router   {function} failed (attempt {attempt}/{HANDLER_ATTEMPTS})")
                continue
            for outcome in outcomes:
                if function == "retrain":
                    self._retrain_outcome(outcome)
                    continue
                self.log(
                    f"{'batch' if function == 'batch' else 'upload':<8} "
                    f"{outcome.get('dataset')}: {outcome['status']} — {outcome['reason']}"
                )
                record = {"at": _now(), "key": key, "kind": function, **outcome}
                self._append(UPLOADS_FILE, record)
                if function == "preprocess" and outcome["status"] == "started":
                    self._enqueue_execution(outcome["run_id"])
                elif function == "preprocess" and outcome["status"] == "building":
                    self._enqueue_build(outcome["run_id"])
                elif function == "batch" and outcome["status"] == "routed":
                    self._enqueue_batch_job(outcome["execution"])
            return
        self._append(DEAD_LETTER_FILE, {"event": event, "error": failure, "at": _now()})
        self.log(f"router   event dead-lettered to {self.config.state_dir / DEAD_LETTER_FILE}")

    def _preprocess(self, event: dict[str, Any], context: LocalLambdaContext) -> Any:
        """Preprocess in a child process per invocation, as Lambda runs it: what pandas and
        pyarrow allocate goes back to the system when it exits (infra/local/isolated.py)."""
        pid_dir = self.config.state_dir / TRAINERS_DIR
        return invoke_in_child(PREPROCESS_TARGET, event, context, pid_dir=pid_dir)

    def _retrain_outcome(self, outcome: dict[str, Any]) -> None:
        self.log(
            f"retrain  {outcome['dataset']}: {outcome['outcome']} — {outcome['reason']}"
            + (f" [{outcome['source']}]" if outcome.get("source") else "")
        )
        self._append(RETRAIN_FILE, outcome)
        if outcome["outcome"] == "started" and outcome.get("execution"):
            self._enqueue_execution(outcome["execution"])

    def _enqueue_execution(self, execution_arn: str) -> None:
        described = self.client("stepfunctions").describe_execution(executionArn=execution_arn)
        if described["status"] == "RUNNING":  # not a run that already ended (a duplicate)
            self._enqueue(RunInput.model_validate_json(described["input"]))

    def _enqueue_build(self, execution_arn: str) -> None:
        described = self.client("stepfunctions").describe_execution(executionArn=execution_arn)
        if described["status"] == "RUNNING":
            self._enqueue(BuildInput.model_validate_json(described["input"]))

    def _enqueue_batch_job(self, execution_arn: str) -> None:
        described = self.client("stepfunctions").describe_execution(executionArn=execution_arn)
        if described["status"] == "RUNNING":
            self._enqueue(BatchJobInput.model_validate_json(described["input"]))

    def _run_worker(self) -> None:
        store = S3ObjectStore(self.client("s3"))
        while not self._stopping.is_set():
            try:
                journal, run = self._pending.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if self._stopping.is_set():
                return  # not started: its journal entry resumes it on the next start
            try:
                if isinstance(run, BuildInput):
                    self._build(run, store)
                elif isinstance(run, BatchJobInput):
                    self._batch_job(run, store)
                else:
                    self._execute(run, store)
                journal.unlink(missing_ok=True)
                self._save()
            finally:
                self._pending.task_done()

    def _enqueue(self, run: RunInput | BuildInput | BatchJobInput) -> None:
        """Journal the run (or build, or batch job) before queuing it, so a stop or a crash does
        not forget it."""
        kind = (
            BUILD_JOURNAL
            if isinstance(run, BuildInput)
            else BATCH_JOURNAL
            if isinstance(run, BatchJobInput)
            else ".json"
        )
        journal = self.config.state_dir / PENDING_DIR / f"{time.time_ns()}-{run.run_name}{kind}"
        write_atomically(journal, run.model_dump_json().encode())
        self._pending.put((journal, run))

    def _resume_pending_runs(self) -> int:
        """Queue the journaled runs again. Each is started again in the endpoint too, under its
        own name and input: the endpoint starts empty, and a run it does not know could be given
        no end (``_settle``), would be invisible to the retrain guard's running-run check, and
        its end event would name an execution that does not exist."""
        journals = sorted((self.config.state_dir / PENDING_DIR).glob("*.json"))
        sfn = self.client("stepfunctions")
        for journal in journals:
            topology = self.config.topology
            run: RunInput | BuildInput | BatchJobInput
            if journal.name.endswith(BUILD_JOURNAL):
                run = BuildInput.model_validate_json(journal.read_bytes())
                machine = topology.builds_state_machine_arn
            elif journal.name.endswith(BATCH_JOURNAL):
                run = BatchJobInput.model_validate_json(journal.read_bytes())
                machine = topology.batch_jobs_state_machine_arn
            else:
                run = RunInput.model_validate_json(journal.read_bytes())
                machine = topology.state_machine_arn
            with contextlib.suppress(sfn.exceptions.ExecutionAlreadyExists):
                sfn.start_execution(
                    stateMachineArn=machine, name=run.run_name, input=run.execution_input()
                )
            self._pending.put((journal, run))
        return len(journals)

    def _drift_periodically(self) -> None:
        while not self._stopping.wait(self.config.drift_seconds):
            self.run_drift()

    def run_drift(self) -> list[dict[str, Any]]:
        """The drift job, as its schedule runs it: every dataset with a live model."""
        from functions.drift import handler as drift

        try:
            outcomes: list[dict[str, Any]] = drift.lambda_handler(
                {"source": "sluice.local", "detail-type": "Scheduled Event"},
                LocalLambdaContext.for_function(self.config.topology, "drift"),
            )["outcomes"]
        except Exception as exc:  # a failed job is reported; the next tick tries again
            self.log(f"drift    the drift job failed: {exc}")
            return []
        for outcome in outcomes:
            self.log(f"drift    {outcome['dataset']}: {outcome['status']} — {outcome['reason']}")
            self._append(DRIFT_FILE, {"at": _now(), **outcome})
        return outcomes

    def _alarms_periodically(self) -> None:
        while not self._stopping.wait(self.config.alarm_seconds):
            self.evaluate_alarms()

    def evaluate_alarms(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One round of CloudWatch's work: take in the metrics emitted since the last round,
        evaluate every alarm, and deliver each change to ALARM that the retraining rule matches
        to the retrain handler. Returns the state-change events."""
        assert self.alarms is not None
        with self._alarms_lock:
            try:
                self.metrics.drain(self.client("cloudwatch"))
                self.metrics.prune(self._cloudwatch_backend())
                events = self.alarms.tick(now)
            except Exception as exc:  # the next round tries again
                self.log(f"alarms   evaluation failed: {exc}")
                return []
        for event in events:
            detail = event["detail"]
            name, state = detail["alarmName"], detail["state"]["value"]
            # A restart evaluates every alarm afresh: say only what changes what the file said
            # (sluice status shows the history the same way: status.alarm_changes)
            if self._alarm_states.get(name, "OK") != state:
                self.log(f"alarm    {name}: {state} — {detail['state']['reason']}")
            self._alarm_states[name] = state
            self._append(
                ALARMS_FILE,
                {
                    "at": event["time"],
                    "alarm": detail["alarmName"],
                    "state": detail["state"]["value"],
                    "reason": detail["state"]["reason"],
                },
            )
            if matches_alarm_rule(event, self.config.topology):
                self.retrain(event)
        return events

    def retrain(self, event: dict[str, Any]) -> None:
        """Deliver one event to the retrain handler, one at a time (docs/deploy.md: on AWS only
        with a reservation; the guard's conditional writes make either safe)."""
        with self._retrain_lock:
            self._attempt(event, "retrain", None)

    def _monitor_period(self) -> int:
        """The drift job's schedule, whole seconds: the period of the alarms on its metrics."""
        return max(1, round(self.config.drift_seconds))

    def _restore_retraining_alarms(self) -> None:
        """Put the retraining alarms of every dataset in service with a live model, as promote
        put them: CloudWatch keeps alarms, moto's do not outlive the stack and are not in the
        snapshot. From then on only promote puts them and ``sluice retire`` deletes them."""
        from functions.shared.alarms import CloudWatchRetrainAlarms
        from functions.shared.pipeline_deps import pipeline_deps

        registry = pipeline_deps().registry
        alarms = CloudWatchRetrainAlarms(
            self.client("cloudwatch"),
            self.config.topology.stage,
            monitor_period_seconds=self._monitor_period(),
        )
        for dataset in registry.active_datasets():
            if registry.live(dataset) is not None:
                alarms.ensure(dataset)

    def _save_periodically(self) -> None:
        released = time.monotonic()
        while not self._stopping.wait(SNAPSHOT_SECONDS):
            self._save()
            if time.monotonic() - released >= memory.RELEASE_SECONDS:
                memory.forget_tracked_models()
                memory.release()
                released = time.monotonic()

    def _save(self) -> None:
        assert self._snapshots is not None
        try:
            self._snapshots.save()
        except Exception as exc:  # keep serving; the next save tries again
            self.log(f"state    cannot save to {self._snapshots.root}: {exc}")

    def _execute(self, run: RunInput, store: S3ObjectStore) -> None:
        started, clock = _now(), time.perf_counter()
        self.log(f"run      {run.run_name} started ({run.dataset})")
        marker = {"name": run.run_name, "dataset": run.dataset, "started_at": started}
        write_atomically(
            self.config.state_dir / RUNNING_FILE,
            json.dumps({**marker, "pid": os.getpid()}).encode(),
        )
        try:
            execution = run_pipeline(
                self.config.topology,
                run,
                store,
                trainer_pids=self.config.state_dir / TRAINERS_DIR,
                on_state=lambda event: self._step_done(run, event),
                isolate=True,  # evaluate in a child process per invocation (isolated.py)
            )
        finally:
            (self.config.state_dir / RUNNING_FILE).unlink(missing_ok=True)
        record = RunRecord.of(
            execution,
            dataset=run.dataset,
            started_at=started,
            seconds=round(time.perf_counter() - clock, 3),
        )
        self.runs.append(record)
        self._append(RUNS_FILE, record.__dict__)
        self.log(f"run      {run.run_name} {execution.status}: {' → '.join(execution.path)}")
        decision = record.decision or {}
        if record.failure:
            cause = " ".join(str(record.failure["message"] or record.failure["cause"]).split())
            self.log(f"           failed at {record.failure['state']}: {cause[:200]}")
        elif decision.get("kind"):
            self.log(
                f"           {decision['kind']}: model version {decision.get('model_version')}, "
                f"live {decision.get('live_version')}"
            )
        self.retrain(self._settle(run, execution.status, execution.output))
        memory.forget_tracked_models()
        memory.release()  # what preprocess and evaluate freed goes back to the system now

    def _build(self, build: BuildInput, store: S3ObjectStore) -> None:
        """A build: the processing job, then preprocess assembles the version; a run it
        started is queued like one preprocess started."""
        self.log(f"build    {build.run_name} started ({build.dataset}): {build.job_name}")
        execution = run_build(
            self.config.topology,
            build,
            store,
            trainer_pids=self.config.state_dir / TRAINERS_DIR,
            on_state=lambda event: self._step_done(build, event),
            isolate=True,
        )
        outcome = next(
            (
                e.output.get("outcome")
                for e in reversed(execution.history)
                if e.name == "Assemble" and isinstance(e.output, dict)
            ),
            None,
        )
        self.log(f"build    {build.run_name} {execution.status}: {' → '.join(execution.path)}")
        self._settle_execution(
            self.config.topology.builds_state_machine_arn, build.run_name, execution
        )
        if isinstance(outcome, dict):
            self.log(f"upload   {build.dataset}: {outcome['status']} — {outcome['reason']}")
            record = {"at": _now(), "kind": "build", "dataset": build.dataset, **outcome}
            self._append(UPLOADS_FILE, record)
            if outcome["status"] == "started" and outcome.get("run_id"):
                self._enqueue_execution(outcome["run_id"])
        memory.release()

    def _batch_job(self, job: BatchJobInput, store: S3ObjectStore) -> None:
        """A batch file past the function's cap: the processing job scores it (the batch
        function reports a failed one)."""
        self.log(f"batch    {job.run_name} started ({job.dataset}): {job.job_name}")
        execution = run_batch_job(
            self.config.topology,
            job,
            store,
            trainer_pids=self.config.state_dir / TRAINERS_DIR,
            on_state=lambda event: self._step_done(job, event),
        )
        self.log(f"batch    {job.run_name} {execution.status}: {' → '.join(execution.path)}")
        arn = self.config.topology.batch_jobs_state_machine_arn
        self._settle_execution(arn, job.run_name, execution)
        from functions.batch.logic import job_outcome

        try:
            outcome = job_outcome(store, job.request_uri)
        except Exception as exc:  # its request gone (a restore older than the journal): said
            self.log(f"batch    {job.run_name}: cannot read what the job left ({exc})")
            outcome = None
        if outcome is not None:
            self.log(f"batch    {job.dataset}: {outcome['status']} — {outcome['reason']}")
            key = str(outcome.get("source", "")).split("/", 3)[-1]
            record = {"at": _now(), "kind": "batch-job", "key": key, **outcome}
            self._append(UPLOADS_FILE, record)
        memory.release()

    def _settle_execution(self, machine_arn: str, name: str, execution: Execution) -> None:
        """A build's or batch job's end in the endpoint (moto leaves it RUNNING)."""
        topology = self.config.topology
        arn = machine_arn.replace(":stateMachine:", ":execution:")
        try:
            from moto.stepfunctions.models import stepfunctions_backends

            backend = stepfunctions_backends[topology.account][topology.region]
            described = backend.describe_execution(f"{arn}:{name}")
            described.status = execution.status
            described.stop_date = datetime.now(UTC)
            described.output = json.dumps(execution.output, default=str)
        except Exception as exc:  # resumed after a restart: not in the endpoint
            self.log(f"job      {name}: its execution is not in the endpoint ({exc})")

    def _step_done(self, run: RunInput | BuildInput | BatchJobInput, event: StateEvent) -> None:
        """A console line per task state of a run as it ends (Choice and Pass states are
        bookkeeping: the path at the run's end names them)."""
        if event.type != "Task":
            return
        outcome = f"failed ({event.error})" if event.error else "done"
        self.log(
            f"step     {run.run_name}: {event.name} {outcome} in {event.duration_seconds:.1f} s"
        )

    def _progress(self, progress: Progress) -> None:
        """The progress port's sink in the stack: ``progress.jsonl`` and a console line, each at
        most every PROGRESS_SECONDS per step and dataset (the first and last always, but a last
        that says what the line before it said is not repeated)."""
        key = (progress.step, progress.dataset)
        now, line = time.monotonic(), progress.line()
        shown = self._progress_shown.get(key)
        if shown is not None and shown[1] == line:
            return
        if shown is not None and not progress.finished and now - shown[0] < PROGRESS_SECONDS:
            return
        # a finished step's next record (the next run's) is a first one again
        self._progress_shown[key] = (-math.inf if progress.finished else now, line)
        self._append(PROGRESS_FILE, progress.model_dump(mode="json"))
        self.log(line)

    def _settle(self, run: RunInput, status: str, output: Any) -> dict[str, Any]:
        """Give the endpoint's execution its end (moto leaves every execution RUNNING), and
        return the status-change event Step Functions would send EventBridge."""
        topology = self.config.topology
        arn = topology.state_machine_arn.replace(":stateMachine:", ":execution:")
        arn = f"{arn}:{run.run_name}"
        stopped = datetime.now(UTC)
        try:
            from moto.stepfunctions.models import stepfunctions_backends

            backend = stepfunctions_backends[topology.account][topology.region]
            execution = backend.describe_execution(arn)
            execution.status = status
            execution.stop_date = stopped
            execution.output = json.dumps(output, default=str)
        except Exception as exc:  # not started through the endpoint (resumed after a restart)
            self.log(f"run      {run.run_name}: its execution is not in the endpoint ({exc})")
        return run_status_event(topology, run, arn, status, stopped)

    # -- helpers ---------------------------------------------------------------------------

    def _cloudwatch_backend(self) -> Any:
        from moto.cloudwatch.models import cloudwatch_backends

        topology = self.config.topology
        return cloudwatch_backends[topology.account][topology.region]

    def _reset_endpoint(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def _queued_uploads(self) -> bool:
        assert self._resources is not None
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self._resources.upload_queue_url,
            AttributeNames=["ApproximateNumberOfMessages"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) > 0

    def _write_local_file(self) -> None:
        topology = self.config.topology
        endpoints = LocalEndpoints(
            aws_endpoint_url=self.endpoint,
            api_url=self.api_url,
            api_key=self.config.api_key,
            api_ca_bundle=str(self.certificate.cert_path) if self.certificate else None,
            region=topology.region,
            stage=topology.stage,
            raw_bucket=topology.raw_bucket,
            artifacts_bucket=topology.artifacts_bucket,
            registry_table=topology.registry_table,
            alarm_period_seconds=self._monitor_period(),
        )
        write_local_file(self.config.state_dir, endpoints)

    def _append(self, name: str, record: dict[str, Any]) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.config.state_dir / name).open("a") as sink:
            sink.write(json.dumps(record, default=str) + "\n")


def run_status_event(
    topology: Topology, run: RunInput, execution_arn: str, status: str, stopped: datetime
) -> dict[str, Any]:
    """A ``Step Functions Execution Status Change`` event for a run that ended
    (events/run_status_change.eventbridge.json is one)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": topology.account,
        "time": stopped.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": topology.region,
        "resources": [execution_arn],
        "detail": {
            "executionArn": execution_arn,
            "stateMachineArn": topology.state_machine_arn,
            "name": run.run_name,
            "status": status,
            "stopDate": int(stopped.timestamp() * 1000),
            "input": run.execution_input(),
        },
    }


def read_history(state_dir: Path, name: str) -> list[dict[str, Any]]:
    """The records of one history file. A crash mid-append can leave a torn last line: it is
    skipped, every complete record is kept."""
    path = state_dir / name
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def pending_runs(state_dir: Path) -> list[str]:
    """Names of the runs journaled but not finished: they resume on the next start."""
    return [p.stem.split("-", 1)[1] for p in sorted((state_dir / PENDING_DIR).glob("*.json"))]


def ensure_free(service: str, host: str, port: int) -> None:
    """Raise PortInUseError when something listens on ``host:port``. The probe binds as the
    servers do (SO_REUSEADDR), so a port left in TIME_WAIT by a previous stack counts as free."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(service, host, port) from None
            raise


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a stack beside another (the demo, tests, benchmarks)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _certificate_hosts(host: str) -> tuple[str, ...]:
    return DEFAULT_HOSTS if host in DEFAULT_HOSTS else (*DEFAULT_HOSTS, host)


def _now() -> str:
    return datetime.now(UTC).isoformat()
