"""The ``sluice`` command line. Every command that reports takes ``--json``.

``demo`` runs everything in one process under moto. The operator commands (``models``,
``promote``, ``rollback``, ``predict``, ``retraining``) talk to a deployment: the local stack
that ``.sluice/local.json`` names when that file exists (or ``--stage local``), else AWS itself
for ``--stage`` (default ``dev``) with the usual credentials, or any AWS-compatible endpoint given
with ``--endpoint-url``. ``sluice env`` prints the shell exports that point the AWS CLI and boto3
at the local stack. A failure is one line naming what failed; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import signal
import sys
import threading
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from functions.shared.layout import DATASET_NAME

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a writer killed by SIGPIPE
# Any key pair signs requests to the local stack's endpoint, which checks none.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sluice-local", "AWS_SECRET_ACCESS_KEY": "sluice-local"}


class UsageError(Exception):
    """Bad arguments or input files: printed as ``sluice <command>: <message>``, exit 2."""


class CommandFailedError(Exception):
    """The command could not do its work (an endpoint unreachable, a function failing):
    printed as ``sluice <command>: <message>``, exit 1."""


@dataclass(frozen=True)
class Deployment:
    """Where an operator command acts: the local stack local.json names, or a stage on AWS (or on
    the endpoint ``--endpoint-url`` gives)."""

    stage: str
    region: str
    registry_table: str
    endpoint_url: str | None = None
    api_url: str | None = None  # the local stack's API: predict goes over HTTP
    api_key: str | None = None
    api_ca_bundle: Path | None = None
    source: Path | None = None  # the local.json it was read from
    raw_bucket: str | None = None  # local.json's; on AWS named by the topology (retire --purge)
    artifacts_bucket: str | None = None
    alarm_period_seconds: int | None = None  # local.json's; on AWS the drift job's hour

    def client(self, service: str) -> Any:
        import boto3

        keys = {}
        if self.source is not None:  # the local stack: no AWS account needed
            keys = {name.lower(): value for name, value in LOCAL_CREDENTIALS.items()}
        return boto3.client(
            service, endpoint_url=self.endpoint_url, region_name=self.region, **keys
        )

    def describe(self) -> str:
        """The table and where it was looked for, as an error line names them."""
        if self.endpoint_url:
            where = f"at {self.endpoint_url}"
        elif os.environ.get("AWS_ENDPOINT_URL"):  # boto3 honours it, as every AWS client does
            where = f"at {os.environ['AWS_ENDPOINT_URL']} (AWS_ENDPOINT_URL)"
        else:
            where = "on AWS"
        origin = f", from {self.source}" if self.source else f", stage {self.stage}"
        return f"table {self.registry_table} {where} (region {self.region}{origin})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader gone early (`| head`) shows here, inside the try
    except BrokenPipeError:
        # As other Unix tools: stop quietly. Python would flush stdout again at exit and report
        # the same broken pipe, so stdout goes to /dev/null first.
        with suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    debug = getattr(args, "debug", False)
    deployment: Deployment | None = None
    try:
        if hasattr(args, "stage"):  # an operator command
            deployment = args.deployment = _deployment(args)
        code: int = args.run(args)
    except UsageError as exc:
        _fail(args.command, str(exc), debug)
        return EXIT_USAGE
    except CommandFailedError as exc:
        _fail(args.command, str(exc), debug)
        return EXIT_FAILED
    except (BotoCoreError, ClientError) as exc:
        from botocore.exceptions import EndpointConnectionError

        where = f" ({deployment.describe()})" if deployment else ""
        if isinstance(exc, EndpointConnectionError) and deployment and deployment.source:
            where += "; is `sluice up` running?"
        _fail(args.command, f"AWS call failed: {exc}{where}", debug)
        return EXIT_FAILED
    return code


def _fail(command: str, message: str, debug: bool) -> None:
    """One line on stderr (an AWS error's text can hold newlines); the traceback with --debug."""
    if debug:
        traceback.print_exc()
    print(f"sluice {command}: {' '.join(message.split())}", file=sys.stderr)


def _deployment(args: argparse.Namespace) -> Deployment:
    """local.json wins when no stage is named, so that commands run beside `sluice up` act on that
    stack and never on an AWS account by default; ``--stage X`` (not local) always means AWS.
    ``--endpoint-url`` and ``--region`` override what either gives."""
    from infra.local.local_file import LOCAL_FILE, LocalFileError, read_local_file
    from infra.topology import Topology

    if args.stage in (None, "local"):
        try:
            local = read_local_file(args.state_dir)
        except LocalFileError as exc:
            raise UsageError(str(exc)) from None
        if local is not None:
            return Deployment(
                stage=local.stage,
                region=args.region or local.region,
                registry_table=local.registry_table,
                endpoint_url=args.endpoint_url or local.aws_endpoint_url,
                api_url=local.api_url,
                api_key=local.api_key,
                api_ca_bundle=Path(local.api_ca_bundle) if local.api_ca_bundle else None,
                source=args.state_dir / LOCAL_FILE,
                raw_bucket=local.raw_bucket,
                artifacts_bucket=local.artifacts_bucket,
                alarm_period_seconds=local.alarm_period_seconds,
            )
        if args.stage == "local" and args.endpoint_url is None:
            raise UsageError(
                f"no local stack: {args.state_dir / LOCAL_FILE} does not exist (start one with "
                "`sluice up`, or give --state-dir or --endpoint-url)"
            )
    topology = Topology(stage=args.stage or "dev")
    return Deployment(
        stage=topology.stage,
        region=_region(args, topology.region),
        registry_table=topology.registry_table,
        endpoint_url=args.endpoint_url,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the whole chain on one machine: upload → preprocess → train → evaluate → "
        "gate → promote → predict (moto, no AWS account)",
    )
    demo.add_argument("--data", type=Path, help="a CSV file (default: bundled sample)")
    demo.add_argument("--contract", type=Path, help="its contract.json (default: bundled sample)")
    demo.add_argument("--dataset", help="dataset name (default: the data file's stem)")
    demo.add_argument(
        "--skip-worse",
        action="store_true",
        help="skip the second, deliberately worse upload that shows the gate refusing a model",
    )
    demo.add_argument(
        "--report-dir",
        type=Path,
        help="where each version's model report page is copied (default: "
        "<temp dir>/sluice-demo-reports)",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="after the demo, keep its stack and the web console over it up until Ctrl-C "
        "(the console's URL is printed)",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(run=_demo)

    up = commands.add_parser(
        "up",
        help="run the whole system on this machine (AWS endpoint, event router, pipeline "
        "runner, API) in the foreground until Ctrl-C",
    )
    up.add_argument(
        "--host",
        default=None,
        help="address the AWS endpoint and the API listen on (default 127.0.0.1: this machine "
        "only; 0.0.0.0 opens both to the network, the AWS endpoint without any credentials)",
    )
    up.add_argument("--aws-port", type=int, default=None, help="AWS endpoint port (4566)")
    up.add_argument("--api-port", type=int, default=None, help="API port (8080)")
    up.add_argument(
        "--console-port",
        type=int,
        default=None,
        help="the web console's port, on 127.0.0.1 always (8090; a free one when 8090 is taken)",
    )
    up.add_argument("--api-key", default=None, help="the API key clients must send")
    up.add_argument("--state-dir", type=Path, default=Path(".sluice"), help="(default .sluice)")
    up.add_argument(
        "--tls",
        action="store_true",
        help="serve the API over HTTPS with a certificate generated in <state dir>/tls "
        "(clients trust cert.pem: curl --cacert)",
    )
    up.add_argument(
        "--drift-seconds",
        type=float,
        default=None,
        help="run the drift job this often; the drift and quality alarms' period follows "
        "(default 3600, as deployed)",
    )
    up.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a variable in the functions' environment after the topology's own, e.g. "
        "CAPTURE_SAMPLE_RATE=1 or RETRAIN_DEBOUNCE_SECONDS=300 (repeatable)",
    )
    up.add_argument(
        "--verbose",
        action="store_true",
        help="also print the functions' JSON logs and tracebacks here (always in <state dir>/logs)",
    )
    up.set_defaults(run=_up)

    status = commands.add_parser(
        "status",
        help="the local stack: a summary per dataset (live model, last run, decision, drift, a "
        "run executing now with its progress), then the history, newest last",
    )
    status.add_argument("--state-dir", type=Path, default=Path(".sluice"), help="(default .sluice)")
    status.add_argument("--dataset", help="only this dataset")
    status.add_argument(
        "--since",
        help="only entries since then: an age (30m, 2h, 1d, 2w) or an ISO 8601 date or time "
        "(2026-12-03, 2026-12-03T10:00Z; UTC when no offset)",
    )
    status.add_argument(
        "--limit", type=int, default=None, help="history entries shown, the newest (default 20)"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_status)

    env = commands.add_parser(
        "env",
        help="shell exports that point the AWS CLI and boto3 at the local stack: "
        'eval "$(sluice env)"',
    )
    env.add_argument("--state-dir", type=Path, default=Path(".sluice"), help="(default .sluice)")
    env.add_argument("--json", action="store_true", help="print one JSON object")
    env.set_defaults(run=_env)

    doctor = commands.add_parser(
        "doctor",
        help="before a stage's first deploy: credentials and region, CDK bootstrap, Lambda "
        "concurrency against the stage's reservations, the SageMaker training quotas, the ops "
        "subscription; each problem with its fix, exit 1 on any",
    )
    # not `stage`: that dest makes an operator command, which falls back to the local stack
    doctor.add_argument("--stage", dest="doctor_stage", default="dev", help="(default dev)")
    doctor.add_argument("--region", help="AWS region (default: the credentials' configuration)")
    doctor.add_argument("--endpoint-url", help="an AWS-compatible endpoint instead of AWS")
    doctor.add_argument(
        "--reserved-concurrency",
        help="the stage's reserved_concurrency context as -c gives it to cdk, JSON (default: "
        "cdk.json's)",
    )
    doctor.add_argument(
        "--cdk-json",
        type=Path,
        default=Path("cdk.json"),
        help="the CDK app's cdk.json (./cdk.json)",
    )
    doctor.add_argument(
        "--contract",
        type=Path,
        action="append",
        default=[],
        help="a dataset's contract.json whose training instance to check (repeatable; default: "
        "the contract defaults, ml.g5.xlarge on spot)",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(run=_doctor)

    def operator(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--stage",
            default=None,
            help="deployment stage (default: the local stack <state dir>/local.json names when "
            "it exists, else dev on AWS; local: that stack, or fail)",
        )
        command.add_argument(
            "--state-dir", type=Path, default=Path(".sluice"), help="where local.json is (.sluice)"
        )
        command.add_argument(
            "--endpoint-url", help="AWS-compatible endpoint (overrides local.json)"
        )
        command.add_argument("--region", help="AWS region (default: the topology's)")
        command.add_argument("--json", action="store_true", help="print JSON")
        command.add_argument("--debug", action="store_true", help="a failure's full traceback")
        return command

    models = operator("models", "list datasets, or one dataset's model versions and audit trail")
    models.add_argument("dataset", nargs="?", help="a dataset (default: list every dataset)")
    models.set_defaults(run=_models)

    retraining = operator(
        "retraining", "a dataset's retrain guard: its state and its latest decisions, and why"
    )
    retraining.add_argument("dataset")
    retraining.add_argument("--limit", type=int, default=20, help="decisions to show (20)")
    retraining.set_defaults(run=_retraining)

    promote = operator("promote", "make a model version live (conditional on the live one)")
    promote.add_argument("dataset")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", required=True, help="why: kept in the audit trail")
    promote.add_argument("--force", action="store_true", help="allow a version the gate rejected")
    promote.set_defaults(run=_promote)

    rollback = operator(
        "rollback", "undo: put back the version that was live before the current one"
    )
    rollback.add_argument("dataset")
    rollback.add_argument(
        "--to",
        type=int,
        help="a retired version (default: the one live before the current, per the audit trail)",
    )
    rollback.add_argument("--reason", required=True, help="why: kept in the audit trail")
    rollback.set_defaults(run=_rollback)

    retire = operator(
        "retire",
        "stop serving, drift checks, retraining and uploads for a dataset, keeping its data, "
        "models and history; --purge deletes them for good",
    )
    retire.add_argument("dataset")
    retire.add_argument("--reason", required=True, help="why: kept in the audit trail")
    retire.add_argument(
        "--purge",
        action="store_true",
        help="also delete every object version under <dataset>/ in the raw and artifacts "
        "buckets and the dataset's registry records (asks you to type the dataset's name)",
    )
    retire.add_argument("--yes", action="store_true", help="confirm --purge without a prompt")
    retire.add_argument("--undo", action="store_true", help="put a retired dataset back in service")
    retire.set_defaults(run=_retire)

    console = operator(
        "console",
        "serve a read-only web console on this machine: datasets, versions, runs, reports, "
        "drift, retraining decisions, audit trail",
    )
    console.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.1)"
    )
    console.add_argument("--port", type=int, default=None, help="port (8090; 0: any free one)")
    console.set_defaults(run=_console)

    predict = operator("predict", "send instances to the prediction API")
    predict.add_argument("dataset")
    predict.add_argument(
        "instances",
        help='JSON: a list of instances, {"instances": [...]}, or @file.json',
    )
    predict.add_argument("--version", type=int, help="pin a model version (default: live)")
    predict.add_argument(
        "--url",
        help="the API's base URL (default: the local stack's); without one the inference handler "
        "runs in this process against the stage's registry and buckets",
    )
    predict.add_argument("--api-key", help="x-api-key header (default: the local stack's)")
    predict.add_argument(
        "--cacert", type=Path, help="CA file to trust for an https URL (sluice up --tls)"
    )
    predict.set_defaults(run=_predict)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from infra.local.demo import SAMPLE, DemoInputs, render, run_demo

    if (args.data is None) != (args.contract is None):
        raise UsageError("give both --data and --contract, or neither")
    data = args.data or SAMPLE / "data" / "churn.csv"
    contract = args.contract or SAMPLE / "contract.json"
    for path in (data, contract):
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
    dataset = args.dataset or ("churn" if args.data is None else data.stem)
    if not DATASET_NAME.match(dataset):
        raise UsageError(f"dataset name '{dataset}' must match {DATASET_NAME.pattern} (--dataset)")
    # The stack's own lines as they happen: with the story on stdout, or out of the way of JSON
    stream = sys.stderr if args.json else sys.stdout

    def show(result: dict[str, Any], *, stopped: bool = True) -> None:
        text = json.dumps(result, indent=2, default=str) if args.json else None
        print(text or render(result, stopped=stopped), flush=True)

    def serve(result: dict[str, Any], stack: Any) -> None:
        """``--serve``: the story, then the console over the demo's stack until Ctrl-C."""
        console = _up_console(
            argparse.Namespace(state_dir=stack.config.state_dir, console_port=None)
        )
        result["console"] = {"url": console.url, "open_with": "sluice demo --serve (serving)"}
        show(result, stopped=False)
        stop = threading.Event()
        _stop_on_signals(stop)
        print(
            f"console  {console.url} (over the demo's stack); Ctrl-C stops", file=stream, flush=True
        )
        _wait_for(stop)
        console.stop()

    result = run_demo(
        DemoInputs(
            data=data,
            contract=contract,
            dataset=dataset,
            worse_upload=not args.skip_worse,
            **({"report_dir": args.report_dir} if args.report_dir else {}),
        ),
        log=lambda line: print(line, file=stream, flush=True),
        then=serve if args.serve else None,
    )
    if not args.serve:
        show(result)
    first = result["first"]
    return EXIT_OK if first.get("live_version") is not None else EXIT_FAILED


def _up(args: argparse.Namespace) -> int:
    from infra.local.local_file import LOCAL_FILE
    from infra.local.logs import route_logs
    from infra.local.snapshot import SnapshotError
    from infra.local.stack import LocalStack, PortInUseError, StackConfig

    defaults = StackConfig()
    overrides = {}
    for assignment in args.env:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            print(f"error: --env wants NAME=VALUE, got {assignment!r}", file=sys.stderr)
            return EXIT_USAGE
        overrides[name] = value
    host = args.host or defaults.host
    if not _loopback(host):
        print(
            f"warning  listening on {host}: the API (behind its key) and the AWS endpoint (no "
            "credentials checked) are reachable from the network",
            file=sys.stderr,
            flush=True,
        )
    config = StackConfig(
        host=host,
        aws_port=args.aws_port or defaults.aws_port,
        api_port=args.api_port or defaults.api_port,
        api_key=args.api_key or defaults.api_key,
        state_dir=args.state_dir,
        tls=args.tls,
        drift_seconds=args.drift_seconds or defaults.drift_seconds,
        environment=overrides,
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    _stacks_on_sigusr1()
    logs = route_logs(config.state_dir, verbose=args.verbose)
    try:
        stack = LocalStack(config, log=lambda line: print(line, flush=True))
        stack.start()
    except PortInUseError as exc:
        flag = {"aws": "--aws-port", "api": "--api-port"}[exc.service]
        raise UsageError(
            f"port {exc.port} on {exc.host} is in use (the {exc.service.upper()} endpoint's): "
            f"stop what listens there or choose another with {flag}"
        ) from None
    except (OSError, SnapshotError) as exc:
        raise UsageError(f"cannot start the local stack: {exc}") from None
    try:
        console = _up_console(args)
    except UsageError:
        stack.stop()
        raise
    print(f"console  {console.url} (read-only web console; `sluice console` serves it alone)")
    echo = "also here (--verbose)" if args.verbose else "--verbose also prints them here"
    print(f"logs     {logs.directory}/: the functions' JSON logs, tracebacks; {echo}", flush=True)
    print(f"ready    endpoints in {config.state_dir / LOCAL_FILE}; Ctrl-C stops", flush=True)
    _wait_for(stop)  # Ctrl-C is the way to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown
    print("stopping… (a run in progress finishes first)", flush=True)
    console.stop()
    stack.stop()
    print("stopped", flush=True)
    return EXIT_OK


def _up_console(args: argparse.Namespace) -> Any:
    """The console over the stack just started, found as every operator command finds it (its
    local.json), on loopback whatever ``--host`` says. The default port, when taken, gives way to
    a free one (the URL is printed); a port asked for with --console-port is kept or refused."""
    from infra.console.server import DEFAULT_PORT, Console

    local = argparse.Namespace(
        stage="local", state_dir=args.state_dir, region=None, endpoint_url=None
    )
    data = console_data(_deployment(local), args.state_dir)
    try:
        return Console(data, port=args.console_port or DEFAULT_PORT).start()
    except OSError as exc:
        if args.console_port is not None:
            raise UsageError(
                f"port {args.console_port} on 127.0.0.1 is in use (the console's): {exc.strerror}; "
                "choose another with --console-port"
            ) from None
        return Console(data, port=0).start()


def _stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C (SIGINT) and SIGTERM set ``stop``, whatever their disposition was at start: a
    process started in the background of a shell without job control (a script's ``sluice up &``,
    ``nohup``, a CI step) inherits SIGINT *ignored*, and Python then installs no
    KeyboardInterrupt for it, so a ``kill -INT`` (or a test's Ctrl-C) would never stop it."""
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())


def _wait_for(stop: threading.Event) -> None:
    """Until a signal sets ``stop``. Woken every half second rather than blocked for good: a
    signal the kernel hands to another of the process's threads does not interrupt the main
    thread's wait, and Python runs handlers on the main thread only, so a plain ``wait()``
    could sleep through Ctrl-C (while a run's threads and children are busy)."""
    while not stop.wait(0.5):
        pass


def _stacks_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` prints every thread's stack to stderr (the process goes on): what a
    ``sluice up`` that does not stop is waiting on, without a debugger."""
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run_failure_lines(run: dict[str, Any]) -> list[str]:
    """A failed run's failing state, error and cause, wrapped (see ``failure_lines``). Records
    written before runs kept their failure show the execution's own error and cause."""
    from infra.local.pipeline import failure_lines

    failure = run.get("failure")
    if failure is None and run.get("error"):
        failure = {"state": (run.get("path") or ["?"])[-1], "error": run["error"]}
        failure["message"] = str(run.get("cause") or "")
    if not failure:
        return []
    return failure_lines(failure, indent=" " * 11, full_text_in="`sluice status --json`")


def _status(args: argparse.Namespace) -> int:
    from infra.local.local_file import LocalFileError, read_local_file
    from infra.local.status import DEFAULT_LIMIT, Filters, SinceError, build_status, parse_since

    try:
        since = None if args.since is None else parse_since(args.since)
    except SinceError as exc:
        raise UsageError(str(exc)) from None
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    if limit < 0:
        raise UsageError(f"--limit {limit}: give 0 or more entries")
    dataset = None if args.dataset is None else _dataset(args.dataset)
    try:
        local = read_local_file(args.state_dir)
    except LocalFileError:
        local = None  # the registry table is then whichever the snapshot holds
    document = build_status(
        args.state_dir,
        Filters(dataset=dataset, since=since, limit=limit),
        registry_table=local.registry_table if local else None,
    )
    if args.json:
        print(json.dumps(document, indent=2, default=str))
        return EXIT_OK
    if not (document["datasets"] or document["history_matching"] or document["pending"]):
        if dataset or since:
            print(f"nothing in {args.state_dir} matches {_filters_text(document['filters'])}")
        else:
            print(f"no local stack history in {args.state_dir} (start one with `sluice up`)")
        return EXIT_OK
    for summary in document["datasets"]:
        _print_summary(summary)
    running = document["running"]
    if running:
        print(f"running  {running['name']}  since {running['started_at']}")
    for name in document["pending"]:
        print(f"pending  {name}  (resumes when the stack runs)")
    shown, matching = document["history_shown"], document["history_matching"]
    print(
        f"\nhistory: {shown} of {matching} entries, oldest first"
        + (f" ({_filters_text(document['filters'])})" if dataset or since else "")
        + ("; --limit N shows more" if shown < matching else "")
    )
    for entry in document["history"]:
        _print_entry(entry)
    return EXIT_OK


def _filters_text(filters: dict[str, Any]) -> str:
    parts = []
    if filters["dataset"]:
        parts.append(f"--dataset {filters['dataset']}")
    if filters["since"]:
        parts.append(f"--since {filters['since']}")
    return ", ".join(parts) or "no filter"


def _print_summary(summary: dict[str, Any]) -> None:
    """One dataset: a head line (live version and metric, state), then its last run, last
    decision, drift and alarms in ALARM, each on one line."""
    live = summary["live"]
    if live:
        value = "n/a" if live.get("value") is None else f"{live['value']:.4f}"
        head = f"live v{live['version']} ({live.get('metric')} {value})"
        if summary.get("retired"):
            head += ", not served"
    else:
        head = "no live model"
    print(f"dataset  {summary['dataset']}: {head}; {summary['state']}")
    retired = summary.get("retired")
    if retired:
        print(f"  retired  {retired['at']} by {retired['actor']}: {retired['reason']}")
    run = summary["last_run"]
    if run and run["status"] == "running":
        progress = run.get("progress")
        doing = f" — {progress['step']}: {progress['detail']}" if progress else ""
        print(f"  run      {run['name']} running since {run['at']}{doing}")
    elif run:
        print(
            f"  run      {run['name']} {run['status']} {run['at']} ({run['seconds']:.1f} s): "
            f"{run['outcome']}"
        )
        if run.get("cause"):
            print(f"             {' '.join(str(run['cause']).split())[:160]}")
    decision = summary["last_decision"]
    if decision:
        print(
            f"  decision {decision['kind']}: model version {decision['model_version']}, live "
            f"{decision['live_version']} ({decision['at']})"
        )
    drift = summary["drift"]
    if drift:
        print(f"  drift    {drift['at']}: {drift['reason']}")
    if summary["alarms_in_alarm"]:
        print(f"  alarms   in ALARM: {', '.join(summary['alarms_in_alarm'])}")


def _print_upload(record: dict[str, Any]) -> None:
    """An upload's outcome: preprocess's, the batch function's or its job's."""
    batch = record.get("kind") in ("batch", "batch-job")  # the function, or its job
    if batch and record["status"] == "scored":
        print(f"batch    {record['at']}  {record['dataset']}: {record['reason']}")
        where = record["parts"][0].rsplit("/", 1)[0]
        print(f"           {len(record['parts'])} part(s) under {where}/")
    elif batch and record["status"] != "rejected":  # routed to a job, duplicate, ignored
        said = f"{record['status']} — {record['reason']}"
        print(f"batch    {record['at']}  {record.get('dataset')}: {said}")
    elif record["status"] == "rejected":
        print(f"rejected {record['at']}  {record['dataset']}: {record['reason']}")
        if record.get("report_key"):
            print(f"           report: {record['report_key']}")
    else:
        print(f"upload   {record['at']}  {record.get('dataset')}: {record['status']}")
        for left_out in record.get("excluded", []):
            print(f"           left out {left_out['key']} ({left_out['rule']})")
            print(f"           report: {left_out['report_key']}")


def _print_entry(entry: dict[str, Any]) -> None:
    """One history entry, as the kind it is."""
    kind, record = entry["kind"], entry["record"]
    if kind == "upload":
        _print_upload(record)
    elif kind == "run":
        decision = record.get("decision") or {}
        print(
            f"run      {record['started_at']}  {record['name']}  {record['status']}  "
            f"{record['seconds']:.1f} s"
        )
        print(f"           {' → '.join(record['path'])}")
        if decision:
            print(
                f"           {decision['kind']}: model version {decision.get('model_version')}, "
                f"live {decision.get('live_version')}"
            )
            if not (decision["kind"] == "run_failed" and record.get("failure")):
                for reason in decision.get("reasons", []):  # a failure's is printed below
                    print(f"             · {reason}")
            _print_parity_fallback(decision)
        for line in _run_failure_lines(record):
            print(line)
    elif kind == "drift":
        print(f"drift    {record['at']}  {record['dataset']}: {record['reason']}")
        quality = record.get("quality") or {}
        if quality.get("reason"):
            print(f"           live quality: {quality['reason']}")
    elif kind == "alarm":
        print(f"alarm    {record['at']}  {record['alarm']}: {record['state']}")
        if record["state"] == "ALARM":
            print(f"           {record['reason']}")
    elif kind == "retrain":
        guard = f" ({record['guard']})" if record.get("guard") else ""
        source = f" [{record['source']}]" if record.get("source") else ""
        print(f"retrain  {record['at']}  {record['dataset']}: {record['outcome']}{guard}{source}")
        print(f"           {record['reason']}")
    else:
        print(f"dead     {record['at']}  {record['error'].strip().splitlines()[-1]}")


def _print_parity_fallback(decision: dict[str, Any]) -> None:
    """A run whose model is not its best candidate (that one's ONNX export failed parity)."""
    if decision.get("parity_fallback"):
        print(f"           parity fallback: {decision['parity_fallback']}")


def _registry(args: argparse.Namespace) -> Any:
    from functions.shared.registry_dynamodb import DynamoDBRegistry

    deployment: Deployment = args.deployment
    return DynamoDBRegistry(deployment.client("dynamodb"), deployment.registry_table)


def _retraining(args: argparse.Namespace) -> int:
    from functions.retrain.guard_store import DynamoDBGuardStore

    deployment: Deployment = args.deployment
    store = DynamoDBGuardStore(deployment.client("dynamodb"), deployment.registry_table)
    dataset = _dataset(args.dataset)
    state = store.load(dataset)
    decisions = store.decisions(dataset, limit=max(1, args.limit))
    if args.json:
        document = {
            "dataset": dataset,
            "state": state.model_dump(mode="json"),
            "decisions": [d.model_dump(mode="json") for d in decisions],
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    flight = state.in_flight
    print(
        f"{dataset}: in flight {flight.run_name if flight else 'none'}; last start "
        f"{state.last_started_at or 'never'}; {len(state.starts)} start(s) in the window; "
        f"new-data baseline {state.rows_at_last_run if state.rows_at_last_run is not None else '-'}"
    )
    if not decisions:
        print("no retrain decisions yet")
    for decision in decisions:
        guard = f" ({decision.guard})" if decision.guard else ""
        source = f" [{decision.source}]" if decision.source else ""
        print(f"{decision.at.isoformat()}  {decision.outcome}{guard}{source}")
        print(f"    {decision.reason}")
    return EXIT_OK


def console_data(deployment: Deployment, state_dir: Path) -> Any:
    """The console's read model over ``deployment``: the registry and the retrain guard's log as
    ``sluice models`` and ``sluice retraining`` read them, the reports in its artifacts bucket, and
    its runs: the local stack's run history (``sluice status``'s) or, on AWS, the pipeline's Step
    Functions executions."""
    from functions.retrain.guard_store import DynamoDBGuardStore
    from functions.shared.registry_dynamodb import DynamoDBRegistry
    from functions.shared.storage import S3ObjectStore
    from infra.console.read_model import ConsoleData, step_functions_runs
    from infra.local.stack import RUNS_FILE, read_history
    from infra.topology import Topology

    dynamodb = deployment.client("dynamodb")
    _, artifacts = _buckets(deployment)
    if deployment.source is not None:
        where = f"the local stack in {deployment.source.parent}"

        def runs() -> list[dict[str, Any]]:
            return read_history(state_dir, RUNS_FILE)
    else:
        where = f"stage {deployment.stage} ({deployment.describe()})"
        account = deployment.client("sts").get_caller_identity()["Account"]
        topology = Topology(stage=deployment.stage, account=account, region=deployment.region)
        stepfunctions = deployment.client("stepfunctions")
        ended: dict[str, dict[str, Any]] = {}  # an ended execution's history is final

        def runs() -> list[dict[str, Any]]:
            arn = topology.state_machine_arn
            return step_functions_runs(stepfunctions, arn, finished=ended)

    return ConsoleData(
        registry=DynamoDBRegistry(dynamodb, deployment.registry_table),
        guard=DynamoDBGuardStore(dynamodb, deployment.registry_table),
        store=S3ObjectStore(deployment.client("s3")),
        artifacts_bucket=artifacts,
        runs=runs,
        where=where,
    )


def _console(args: argparse.Namespace) -> int:
    from infra.console.server import DEFAULT_PORT, Console

    if not _loopback(args.host):
        raise UsageError(f"--host {args.host}: the console listens on loopback only (127.0.0.1)")
    data = console_data(args.deployment, args.state_dir)
    data.datasets()  # a deployment out of reach fails here, in one line, not on every page
    port = DEFAULT_PORT if args.port is None else args.port
    try:
        console = Console(data, host=args.host, port=port).start()
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.host}:{port}: {exc.strerror}; choose another with --port"
        ) from None
    stop = threading.Event()
    _stop_on_signals(stop)
    if args.json:
        print(json.dumps({"url": console.url, "over": data.where}), flush=True)
    else:
        print(f"console  {console.url} (read-only, over {data.where}); Ctrl-C stops", flush=True)
    _wait_for(stop)
    console.stop()
    return EXIT_OK


def _region(args: argparse.Namespace, local_region: str) -> str:
    """--region; else, against AWS, the region boto3 is configured with (AWS_REGION, the
    profile); against an endpoint (the local stack), the topology's."""
    if args.region:
        return str(args.region)
    if args.endpoint_url is None:
        import boto3

        configured = boto3.session.Session().region_name
        if configured:
            return str(configured)
    return local_region


def _dataset(name: str) -> str:
    if not DATASET_NAME.match(name):
        raise UsageError(f"dataset name '{name}' must match {DATASET_NAME.pattern}")
    return name


def _models(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.dataset is None:
        rows = []
        for dataset in registry.datasets():
            live = registry.live(dataset)
            rows.append(
                {
                    "dataset": dataset,
                    "live_version": live.version if live else None,
                    "versions": len(registry.versions(dataset)),
                }
            )
        if args.json:
            print(json.dumps({"datasets": rows}, indent=2))
        else:
            print(f"{'DATASET':<24} {'LIVE':>5} {'VERSIONS':>9}")
            for row in rows:
                live = "-" if row["live_version"] is None else row["live_version"]
                print(f"{row['dataset']:<24} {live!s:>5} {row['versions']:>9}")
        return EXIT_OK
    dataset = _dataset(args.dataset)
    versions = registry.versions(dataset)
    if not versions:
        print(f"sluice models: dataset '{dataset}' has no model versions", file=sys.stderr)
        return EXIT_FAILED
    live = registry.live(dataset)
    audit = registry.audit(dataset)
    if args.json:
        print(
            json.dumps(
                {
                    "dataset": dataset,
                    "live": live.model_dump(mode="json") if live else None,
                    "versions": [v.model_dump(mode="json") for v in versions],
                    "audit": [a.model_dump(mode="json") for a in audit],
                },
                indent=2,
            )
        )
        return EXIT_OK
    # STATUS is the lifecycle (an operator can force a refused version live); GATE is the
    # gate's verdict at evaluation, which nothing changes afterwards.
    print(f"{'VERSION':>7}  {'STATUS':<9}  {'GATE':<7}  {'METRIC':<20}  {'CREATED':<20}  RUN")
    for v in versions:
        value = "n/a" if v.metric_value is None else f"{v.metric_value:.4f}"
        marker = "*" if live and live.version == v.version else " "
        print(
            f"{v.version:>6}{marker}  {v.status.value:<9}  {v.gate or '-':<7}  "
            f"{v.metric + ' ' + value:<20}  {v.created_at:%Y-%m-%d %H:%M:%S}  {v.run_name}"
        )
    print("\naudit:")
    for entry in audit:
        version = "-" if entry.version is None else entry.version
        print(
            f"  {entry.at:%Y-%m-%d %H:%M:%S}  {entry.action:<11} v{version}  by {entry.actor}: "
            f"{entry.reason}"
        )
    return EXIT_OK


def _refused(command: str, exc: Exception, *, as_json: bool) -> int:
    """A registry refusal (a conflict, an invalid transition): one JSON object or one line."""
    if as_json:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
    else:
        print(f"sluice {command}: refused: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _operator_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _change(args: argparse.Namespace, operation: str) -> int:
    from functions.shared.registry import RegistryError

    registry = _registry(args)
    dataset = _dataset(args.dataset)
    try:
        current = registry.live(dataset)
        previous = current.version if current else None
        why = None
        if operation == "promote":
            pointer = registry.promote(
                dataset,
                args.version,
                expected_live=previous,
                actor=_operator_actor(),
                reason=args.reason,
                force=args.force,
            )
        else:
            rollback = registry.rollback(
                dataset, args.to, actor=_operator_actor(), reason=args.reason
            )
            pointer, previous, why = rollback.pointer, rollback.from_version, rollback.why
    except RegistryError as exc:
        return _refused(operation, exc, as_json=args.json)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "previous_live": previous,
                    "live": pointer.model_dump(mode="json"),
                }
                | ({} if why is None else {"why": why}),
                indent=2,
            )
        )
    elif why is not None:
        print(
            f"{dataset}: rolled back from version {previous} to version {pointer.version}: "
            f"{why}; generation {pointer.generation}"
        )
    else:
        print(
            f"{dataset}: version {pointer.version} is live (was {previous}); "
            f"generation {pointer.generation}"
        )
    return EXIT_OK


def _promote(args: argparse.Namespace) -> int:
    return _change(args, "promote")


def _rollback(args: argparse.Namespace) -> int:
    return _change(args, "rollback")


def _retire(args: argparse.Namespace) -> int:
    from functions.shared.registry import RegistryError

    registry = _registry(args)
    dataset = _dataset(args.dataset)
    if args.undo and args.purge:
        raise UsageError("--undo and --purge cannot go together")
    actor = _operator_actor()
    try:
        if args.undo:
            lifted = registry.unretire_dataset(dataset, actor=actor, reason=args.reason)
            document: dict[str, Any] = {"ok": True, "unretired": lifted.model_dump(mode="json")}
            line = f"{dataset}: back in service (retired since {lifted.at:%Y-%m-%d %H:%M:%S})"
            if registry.live(dataset) is not None:  # promote put them; retire deleted them
                put, alarms_error = _put_retraining_alarms(args.deployment, dataset)
                document["alarms_put"] = put
                if alarms_error is not None:
                    document["alarms_error"] = alarms_error
                    print(
                        f"sluice retire --undo: {dataset}'s retraining alarms were not put "
                        f"({alarms_error}); the next promotion puts them, or run "
                        "`sluice retire --undo` again",
                        file=sys.stderr,
                    )
        else:
            if args.purge:
                _confirm_purge(args, dataset)
            retirement = registry.retire_dataset(dataset, actor=actor, reason=args.reason)
            document = {"ok": True, "retired": retirement.model_dump(mode="json")}
            live = retirement.live_version
            line = (
                f"{dataset}: retired {retirement.at:%Y-%m-%d %H:%M:%S} by {retirement.actor}; "
                f"the API answers 410, drift, retraining and uploads stop; live version "
                f"{live if live is not None else '-'}, data and history kept"
            )
            deleted, alarms_error = _delete_retraining_alarms(args.deployment, dataset)
            document["alarms_deleted"] = deleted
            if alarms_error is not None:
                document["alarms_error"] = alarms_error
                print(
                    f"sluice retire: {dataset}'s retraining alarms were not deleted "
                    f"({alarms_error}); the retrain function skips a retired dataset, run "
                    "`sluice retire` again to delete them",
                    file=sys.stderr,
                )
            if args.purge:
                report = _purge(args, registry, dataset, actor)
                document["purged"] = report.model_dump(mode="json")
                line = (
                    f"{dataset}: purged: {report.raw_objects} raw and {report.artifact_objects} "
                    f"artifact object versions, {report.registry_records} registry records deleted"
                )
    except RegistryError as exc:
        return _refused("retire", exc, as_json=args.json)
    print(json.dumps(document, indent=2) if args.json else line)
    return EXIT_OK


def _put_retraining_alarms(deployment: Deployment, dataset: str) -> tuple[list[str], str | None]:
    """After a retirement is lifted: the dataset's retraining alarms, from the one definition
    (functions/shared/alarms.py) promote puts them from. Best effort, as the lift stands."""
    from functions.shared.alarms import MONITOR_PERIOD_SECONDS, CloudWatchRetrainAlarms

    period = deployment.alarm_period_seconds or MONITOR_PERIOD_SECONDS
    alarms = CloudWatchRetrainAlarms(
        deployment.client("cloudwatch"), deployment.stage, monitor_period_seconds=period
    )
    try:
        return alarms.ensure(dataset), None
    except Exception as exc:  # any transport or permission error of CloudWatch
        return [], f"{type(exc).__name__}: {exc}"


def _delete_retraining_alarms(deployment: Deployment, dataset: str) -> tuple[list[str], str | None]:
    """After the retirement is written: the dataset's retraining alarms (put at promote,
    functions/shared/alarms.py) go. Best effort, as the retirement already stands."""
    from functions.shared.alarms import CloudWatchRetrainAlarms

    try:
        return CloudWatchRetrainAlarms(deployment.client("cloudwatch"), deployment.stage).remove(
            dataset
        ), None
    except Exception as exc:  # any transport or permission error of CloudWatch
        return [], f"{type(exc).__name__}: {exc}"


def _buckets(deployment: Deployment) -> tuple[str, str]:
    """The raw and artifacts buckets: local.json's, or the topology's for the stage and the
    account the credentials belong to."""
    if deployment.raw_bucket and deployment.artifacts_bucket:
        return deployment.raw_bucket, deployment.artifacts_bucket
    from infra.topology import Topology

    account = deployment.client("sts").get_caller_identity()["Account"]
    topology = Topology(stage=deployment.stage, account=account, region=deployment.region)
    return topology.raw_bucket, topology.artifacts_bucket


def _confirm_purge(args: argparse.Namespace, dataset: str) -> None:
    """--yes, or the dataset's name typed at a terminal; anything else refuses (exit 2)."""
    if args.yes:
        return
    raw, artifacts = _buckets(args.deployment)
    if not sys.stdin.isatty():
        raise UsageError(
            f"--purge deletes '{dataset}' for good and there is no terminal to confirm on; "
            "add --yes to confirm"
        )
    print(
        f"This deletes for good every object version under {dataset}/ in s3://{raw} and "
        f"s3://{artifacts}, and every registry record of '{dataset}' in "
        f"{args.deployment.registry_table}.",
        file=sys.stderr,
    )
    try:
        typed = input(f"Type the dataset name ({dataset}) to confirm: ")
    except EOFError:
        typed = ""
    if typed.strip() != dataset:
        raise UsageError(f"purge of '{dataset}' not confirmed; nothing was changed")


def _purge(args: argparse.Namespace, registry: Any, dataset: str, actor: str) -> Any:
    from functions.shared.retirement import purge_dataset
    from functions.shared.storage import S3ObjectStore

    raw, artifacts = _buckets(args.deployment)
    try:
        return purge_dataset(
            S3ObjectStore(args.deployment.client("s3")),
            registry,
            dataset=dataset,
            raw_bucket=raw,
            artifacts_bucket=artifacts,
            actor=actor,
            reason=args.reason,
        )
    except RuntimeError as exc:  # S3 refused some deletions: the dataset stays retired
        raise CommandFailedError(f"{exc}; the dataset stays retired, run the purge again") from None


def _instances(text: str) -> list[Any]:
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        text = path.read_text()
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"instances are not valid JSON: {exc}") from None
    if isinstance(document, dict) and "instances" in document:
        document = document["instances"]
    if not isinstance(document, list):
        raise UsageError('give a JSON list of instances or {"instances": [...]}')
    return document


def _predict(args: argparse.Namespace) -> int:
    dataset = _dataset(args.dataset)
    body = json.dumps({"instances": _instances(args.instances)}).encode()
    path = f"/v1/models/{dataset}"
    if args.version is not None:
        path += f"/versions/{args.version}"
    path += ":predict"
    deployment: Deployment = args.deployment
    url = args.url or deployment.api_url
    if url:
        api_key = args.api_key or (None if args.url else deployment.api_key)
        cacert = args.cacert or (None if args.url else deployment.api_ca_bundle)
        status, answer = _post(url.rstrip("/") + path, body, api_key, cacert)
        where = url
    else:
        status, answer = _predict_in_process(args, path, body)
        where = f"in process against {deployment.describe()}"
    if status >= 500:
        error = answer.get("error") if isinstance(answer, dict) else answer
        hint = "" if args.debug or url else "; --debug shows the function's log"
        raise CommandFailedError(f"{error} (HTTP {status}, {where}){hint}")
    if args.json or status != 200:
        print(json.dumps(answer, indent=2), file=sys.stdout if status == 200 else sys.stderr)
    else:
        print(f"model version {answer.get('model_version')}:")
        for prediction in answer.get("predictions", []):
            print(f"  {json.dumps(prediction)}")
    return EXIT_OK if status == 200 else EXIT_FAILED


def _post(url: str, body: bytes, api_key: str | None, cacert: Path | None) -> tuple[int, Any]:
    import ssl

    headers = {"content-type": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    context = ssl.create_default_context(cafile=cacert) if cacert else None
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, {"error": error.reason}
    except (urllib.error.URLError, TimeoutError) as error:
        raise CommandFailedError(f"cannot reach {url}: {error}") from None


@contextmanager
def function_logs_to(sink: IO[str]) -> Iterator[None]:
    """Functions log JSON to stdout (Lambda's convention); run in this process, their logs go to
    ``sink`` (stderr, or nowhere) so that stdout stays the command's answer (``--json`` output
    parses)."""
    import logging

    from functions.shared.observability import logger

    stream = logger.registered_handler
    if not isinstance(stream, logging.StreamHandler):
        yield
        return
    previous = stream.setStream(sink)
    try:
        yield
    finally:
        stream.setStream(previous)


def _predict_in_process(args: argparse.Namespace, path: str, body: bytes) -> tuple[int, Any]:
    from infra.local.apigw import read_response, rest_event
    from infra.local.context import LocalLambdaContext
    from infra.topology import Topology

    deployment: Deployment = args.deployment
    topology = Topology(stage=deployment.stage)
    os.environ.update(topology.inference_environment())
    if deployment.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = deployment.endpoint_url
    os.environ["AWS_DEFAULT_REGION"] = deployment.region
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ["CAPTURE_SAMPLE_RATE"] = "0"  # a one-off call from a terminal is not traffic
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from functions.inference import handler

    event = rest_event("POST", path, body=body, headers={"content-type": "application/json"})
    # The function logs a failure with its traceback, in JSON: shown with --debug; without it,
    # the failure is one line (_predict)
    with function_logs_to(sys.stderr if args.debug else io.StringIO()):
        response = read_response(
            handler.lambda_handler(event, LocalLambdaContext.for_function(topology, "inference"))
        )
    return response.status, response.json()


def _env(args: argparse.Namespace) -> int:
    """``export`` lines (or JSON) for the local stack local.json names: its endpoint and region for
    the AWS CLI and boto3, keys it accepts, and the API's URL, key and CA file for curl."""
    import shlex

    from infra.local.local_file import LOCAL_FILE, LocalFileError, read_local_file

    try:
        local = read_local_file(args.state_dir)
    except LocalFileError as exc:
        raise UsageError(str(exc)) from None
    if local is None:
        raise CommandFailedError(
            f"no local stack: {args.state_dir / LOCAL_FILE} does not exist (start one with "
            "`sluice up`, or give --state-dir)"
        )
    variables = {
        "AWS_ENDPOINT_URL": local.aws_endpoint_url,
        **LOCAL_CREDENTIALS,
        "AWS_DEFAULT_REGION": local.region,
        "SLUICE_API_URL": local.api_url,
        "SLUICE_API_KEY": local.api_key,
    }
    if local.api_ca_bundle:
        variables["SLUICE_API_CA_BUNDLE"] = local.api_ca_bundle
    if args.json:
        print(json.dumps(variables, indent=2))
        return EXIT_OK
    again = "sluice env"
    if args.state_dir != Path(".sluice"):
        again += f" --state-dir {shlex.quote(str(args.state_dir))}"
    print(f'# the local stack in {args.state_dir / LOCAL_FILE}: eval "$({again})"')
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    import boto3

    from functions.shared.contract import TrainingConfig, parse_contract
    from functions.shared.errors import ContractError
    from infra.concurrency import reserved_concurrency
    from infra.doctor import AwsAccount, Plan, diagnose, render

    context = _cdk_context(args.cdk_json)
    try:
        reserved = reserved_concurrency(
            args.reserved_concurrency
            if args.reserved_concurrency is not None
            else context.get("reserved_concurrency")
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    training: list[TrainingConfig] = []
    for path in args.contract:
        try:
            training.append(parse_contract(path.read_bytes(), source=str(path)).training)
        except OSError as exc:
            raise UsageError(f"--contract {path}: {exc.strerror}") from None
        except ContractError as exc:
            raise UsageError(" ".join(str(exc).split())) from None
    plan = Plan(stage=args.doctor_stage, reserved=reserved, training=training or [TrainingConfig()])
    session = boto3.session.Session(region_name=args.region)
    region = session.region_name

    def client(service: str) -> object:
        return session.client(service, endpoint_url=args.endpoint_url)

    report = diagnose(AwsAccount(client), plan, region)
    print(report.model_dump_json(indent=2) if args.json else render(report))
    return EXIT_FAILED if report.problems else EXIT_OK


def _cdk_context(path: Path) -> dict[str, Any]:
    """cdk.json's ``context``; none when the file is absent (the doctor run elsewhere)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    context = document.get("context", {}) if isinstance(document, dict) else None
    if not isinstance(context, dict):
        raise UsageError(f"{path}: 'context' is not an object")
    return context


if __name__ == "__main__":
    raise SystemExit(main())
