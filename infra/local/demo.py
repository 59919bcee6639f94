"""``sluice demo``: the local stack started, used only through real clients, and stopped.

``LocalStack`` (what ``sluice up`` runs) starts on free loopback ports with a throwaway state
directory. The demo uploads the contract and the CSV with boto3 to its AWS endpoint; from there
the stack's own machinery does the work: S3 emits the EventBridge event, the router hands it to
the preprocess handler, which builds a dataset version and starts a run; the run worker executes
the pipeline definition (the same ASL file CDK deploys): the local SageMaker runner trains
(candidates → best → ONNX → parity), evaluate scores challenger and champion, the gate decides,
promote or reject updates the registry. The demo waits for the model to answer over HTTP, asks
the API for predictions with the API key, and reads the model card and the evaluation report
back from S3 to tell the story.

Each version's model report (evaluate writes it beside the model, in the stack's S3, which goes
when the demo ends) is copied to ``report_dir``; the demo ends by printing where.

Then, unless told not to, a deliberately worse version of the same data (its labels shuffled)
is uploaded, and the demo shows the gate refusing it while the first model keeps serving.
"""

from __future__ import annotations

import csv
import io
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from functions.shared import layout
from functions.shared.contract import FeatureKind
from functions.shared.features import NULL_TOKENS, FeatureSpec
from functions.shared.model_card import ModelCard
from functions.shared.registry import ModelRegistry
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import S3ObjectStore, parse_s3_uri, s3_uri
from infra.console.server import DEFAULT_PORT
from infra.local.pipeline import failure_lines
from infra.local.stack import (
    UPLOADS_FILE,
    LocalStack,
    RunRecord,
    StackConfig,
    free_port,
    read_history,
)
from infra.topology import Topology

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "churn"
PREDICTION_ROWS = 3
SHUFFLE_SEED = 7
DEMO_API_KEY = "sluice-demo-key"
WAIT_SECONDS = 600.0
POLL_SECONDS = 0.1
CONSOLE_URL = f"http://127.0.0.1:{DEFAULT_PORT}/"


class DemoError(RuntimeError):
    """The demo could not finish; the message says which step and why."""


@dataclass(frozen=True)
class DemoInputs:
    data: Path
    contract: Path
    dataset: str
    worse_upload: bool = True
    # where each version's report page is copied (the stack's S3 goes with the demo)
    report_dir: Path = Path(tempfile.gettempdir()) / "sluice-demo-reports"


def run_demo(
    inputs: DemoInputs,
    *,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    then: Callable[[dict[str, Any], LocalStack], None] | None = None,
) -> dict[str, Any]:
    """``log`` receives the stack's own lines (components, uploads, runs) as they happen;
    ``then(result, stack)``, when given, runs before the stack stops (``sluice demo --serve``
    keeps the console up there until Ctrl-C)."""
    _demo_environment()  # before the stack imports the handlers: Powertools reads it then
    contract = json.loads(inputs.contract.read_bytes())
    with tempfile.TemporaryDirectory(prefix="sluice-demo-") as state_dir:
        config = StackConfig(
            topology=Topology(stage="demo"),
            aws_port=free_port(),
            api_port=free_port(),
            api_key=DEMO_API_KEY,
            state_dir=Path(state_dir),
        )
        try:
            with LocalStack(config, log=lambda line: log(f"stack  {line}")) as stack:
                result = _drive(stack, inputs, contract)
                if then is not None:
                    then(result, stack)
                return result
        finally:
            log("stack  stopped")


def _drive(stack: LocalStack, inputs: DemoInputs, contract: dict[str, Any]) -> dict[str, Any]:
    chain = _Chain(stack, inputs.report_dir)
    stack.client("s3").put_object(
        Bucket=stack.config.topology.raw_bucket,
        Key=layout.contract_key(inputs.dataset),
        Body=inputs.contract.read_bytes(),
    )
    data_key = f"{layout.data_prefix(inputs.dataset)}{inputs.data.name}"
    result: dict[str, Any] = {
        "dataset": inputs.dataset,
        "stack": {"aws_endpoint_url": stack.endpoint, "api_url": stack.api_url},
        # stopped with the demo's stack: `sluice demo --serve` keeps it (and sets its URL)
        "console": {"url": CONSOLE_URL, "open_with": "sluice demo --serve, or sluice up"},
    }
    result["first"] = chain.upload_and_run(inputs.dataset, data_key, inputs.data.read_bytes())
    if result["first"].get("live_version") is None or not inputs.worse_upload:
        return result
    worse = _shuffled_labels(inputs.data.read_bytes(), contract["target"])
    note = f"the same rows with the '{contract['target']}' column shuffled"
    result["second"] = chain.upload_and_run(inputs.dataset, data_key, worse, note=note)
    return result


class _Chain:
    """One upload through the stack, reporting what each step did and how long it took. The
    demo only watches: boto3 against the endpoint, HTTP against the API, the history files."""

    def __init__(self, stack: LocalStack, report_dir: Path) -> None:
        self.stack = stack
        self.report_dir = report_dir
        self.topology = stack.config.topology
        self.s3 = stack.client("s3")
        self.store = S3ObjectStore(self.s3)
        self.registry: ModelRegistry = DynamoDBRegistry(
            stack.client("dynamodb"), self.topology.registry_table
        )
        self.sample_rows: list[dict[str, Any]] = []

    def upload_and_run(
        self, dataset: str, key: str, data: bytes, *, note: str = ""
    ) -> dict[str, Any]:
        steps: dict[str, float] = {}
        report: dict[str, Any] = {"upload": s3_uri(self.topology.raw_bucket, key)}
        if note:
            report["note"] = note
        seen = len(read_history(self.stack.config.state_dir, UPLOADS_FILE))
        with _timed(steps, "upload"):
            self.s3.put_object(Bucket=self.topology.raw_bucket, Key=key, Body=data)
        with _timed(steps, "preprocess"):
            record = self._wait(lambda: self._upload_outcome(seen, key), f"the outcome of {key}")
        outcome = {k: v for k, v in record.items() if k not in ("at", "key")}
        report["preprocess"] = outcome
        if outcome["status"] != "started":
            if outcome.get("report_key"):
                report["rejection"] = json.loads(
                    self.store.get_bytes(self.topology.artifacts_bucket, outcome["report_key"])
                )
            report["steps_seconds"] = steps
            return report

        schema_key = f"{layout.version_prefix(dataset, outcome['dataset_version'])}dataset.json"
        schema = json.loads(self.store.get_bytes(self.topology.artifacts_bucket, schema_key))
        report["columns"] = schema.get("columns", [])
        with _timed(steps, "pipeline"):
            run = self._wait(lambda: self._run(outcome["run_name"]), f"run {outcome['run_name']}")
        report["run"] = {
            "name": run.name,
            "status": run.status,
            "path": run.path,
            "error": run.error,
            "cause": run.cause,
            "failure": run.failure,  # the failing state's error and cause, verbatim
            "decision": run.decision,
            "states_seconds": run.states_seconds,
        }
        mine = [v for v in self.registry.versions(dataset) if v.run_name == run.name]
        report["model_version"] = mine[-1].version if mine else None
        if mine:
            version_record = mine[-1]
            card = ModelCard.model_validate_json(
                self.store.get_bytes(*parse_s3_uri(version_record.card_uri))
            )
            evaluation_report = json.loads(
                self.store.get_bytes(*parse_s3_uri(version_record.report_uri))
            )
            report["model_status"] = version_record.status.value
            report["model_report"] = self._save_report(
                dataset, version_record.version, version_record.model_uri
            )
            report["model_card"] = json.loads(card.model_dump_json())
            report["evaluation"] = {
                "test_rows": evaluation_report["test_rows"],
                "challenger": evaluation_report["challenger"]["report"],
                "champion": (evaluation_report.get("champion") or {}).get("report"),
                "intervals": {  # bootstrap intervals of the contract metric
                    "challenger": evaluation_report["challenger"].get("interval"),
                    "champion": (evaluation_report.get("champion") or {}).get("interval"),
                },
                "champion_note": evaluation_report["champion_note"],
                "groups": evaluation_report["challenger"]["groups"],
                "gate": evaluation_report["decision"],
            }
            if not self.sample_rows:
                self.sample_rows = _sample_rows(data, card)
        live = self.registry.live(dataset)
        report["live_version"] = live.version if live else None
        if live is not None and self.sample_rows:
            with _timed(steps, "live over HTTP"):
                self._wait(
                    lambda: self._serving(dataset) == str(live.version),
                    f"the API to serve version {live.version}",
                )
            with _timed(steps, "predict over HTTP"):
                report["predictions"] = self._predict(dataset, self.sample_rows)
        report["steps_seconds"] = steps
        return report

    def _save_report(self, dataset: str, version: int, model_uri: str) -> dict[str, str]:
        """The version's report page, read from the stack's S3 and written to ``report_dir``."""
        bucket, model_key = parse_s3_uri(model_uri)
        page_key = layout.model_report_page_of(model_key)
        saved = self.report_dir / f"{dataset}-v{version}.html"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_bytes(self.store.get_bytes(bucket, page_key))
        return {"uri": s3_uri(bucket, page_key), "file": str(saved.resolve())}

    def _upload_outcome(self, seen: int, key: str) -> dict[str, Any] | None:
        records = read_history(self.stack.config.state_dir, UPLOADS_FILE)[seen:]
        return next((r for r in records if r.get("key") == key), None)

    def _run(self, name: str) -> RunRecord | None:
        return next((r for r in self.stack.runs if r.name == name), None)

    def _serving(self, dataset: str) -> str | None:
        """The version ``GET /v1/models/{dataset}`` reports AVAILABLE, if any."""
        status, body = self._http("GET", f"/v1/models/{dataset}")
        if status != 200:
            return None
        available = [v for v in body["model_version_status"] if v["state"] == "AVAILABLE"]
        return str(available[0]["version"]) if available else None

    def _predict(self, dataset: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        status, answer = self._http("POST", f"/v1/models/{dataset}:predict", {"instances": rows})
        if status != 200:
            raise DemoError(f"predict answered {status}: {json.dumps(answer)[:500]}")
        return {"instances": rows, **answer}

    def _http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"x-api-key": self.stack.config.api_key, "content-type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.stack.api_url + path, data=data, headers=headers, method=method
        )
        context = (
            ssl.create_default_context(cafile=self.stack.certificate.cert_path)
            if self.stack.certificate
            else None
        )
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def _wait(self, condition: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(POLL_SECONDS)
        raise DemoError(f"gave up after {WAIT_SECONDS:.0f} s waiting for {what}")


def _sample_rows(data: bytes, card: ModelCard) -> list[dict[str, Any]]:
    """The first rows of the upload as a client would send them: features only, numbers as JSON
    numbers, empty cells as null."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    rows: list[dict[str, Any]] = []
    for raw in reader:
        try:
            rows.append(
                {spec.name: _json_value(raw.get(spec.name), spec) for spec in card.features}
            )
        except ValueError:
            continue  # a row preprocessing rejected (e.g. text in a numeric column)
        if len(rows) == PREDICTION_ROWS:
            break
    return rows


def _json_value(cell: str | None, spec: FeatureSpec) -> Any:
    text = (cell or "").strip()
    if text in NULL_TOKENS:
        return None
    return float(text) if spec.kind is FeatureKind.NUMERIC else text


def _shuffled_labels(data: bytes, target: str) -> bytes:
    """The same file with the target column permuted: every feature distribution unchanged, the
    signal gone. A model trained on it must not replace one trained on the real labels."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    header = next(reader)
    rows = list(reader)
    column = header.index(target)
    labels = [row[column] for row in rows]
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(labels))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row, j in zip(rows, order, strict=True):
        row[column] = labels[j]
        writer.writerow(row)
    return out.getvalue().encode()


def _rounded(value: Any) -> Any:
    """Figures as a person reads them: four decimals."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


@contextmanager
def _timed(steps: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = round(time.perf_counter() - started, 3)


def _demo_environment() -> None:
    """A demo prints its own story: function logs at WARNING, no metrics, no tracing; and its
    API re-reads the live pointer every second rather than every 5 s, so a promotion shows at
    once (a setting of the inference function, as on AWS)."""
    for name, value in {
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "MODEL_CACHE_TTL_SECONDS": "1",
    }.items():
        os.environ.setdefault(name, value)


def render(result: dict[str, Any], *, stopped: bool = True) -> str:
    """The demo's result for a person: what happened, step by step, with the figures; with
    ``stopped`` (the stack went with the demo), how to get a console that stays."""
    stack = result["stack"]
    lines = [
        f"sluice demo — dataset '{result['dataset']}'",
        f"local stack: AWS endpoint {stack['aws_endpoint_url']}, API {stack['api_url']} "
        "(uploads with boto3, predictions over HTTP with the API key)",
    ]
    lines += _render_upload("1. first upload", result["first"])
    if "second" in result:
        lines.append("")
        lines += _render_upload("2. a deliberately worse upload", result["second"])
    reports = [
        (step["model_version"], step["model_report"]["file"])
        for step in (result.get("first"), result.get("second"))
        if step and step.get("model_report")
    ]
    if reports:
        lines += ["", "model reports (one self-contained page per version, open in a browser):"]
        lines += [f"  version {version}: {path}" for version, path in reports]
    return "\n".join([*lines, *(["", *CONSOLE_LINES] if stopped else [])])


# The demo's stack (and its console) stops with the demo: how to get a console that stays.
CONSOLE_LINES = (
    f"console: {CONSOLE_URL} is the web console (datasets, versions, runs, reports, drift, "
    "audit); the demo's stack has stopped with it:",
    "  `sluice demo --serve` runs the demo and keeps its stack and console up until Ctrl-C;",
    "  `sluice up` serves one over your own local stack (`sluice console --stage S` over a "
    "deployment)",
)


def _render_columns(columns: list[dict[str, Any]]) -> list[str]:
    """The column roles preprocessing inferred: the features with their kinds, then each
    column left out, with why."""
    if not columns:
        return []
    features = [f"{c['column']} ({c['kind']})" for c in columns if c["use"] == "feature"]
    lines = [f"    features: {', '.join(features)}"]
    lines += [
        f"    ! left out '{c['column']}': {c['reason']}" for c in columns if c["use"] == "excluded"
    ]
    return lines


def _render_upload(title: str, step: dict[str, Any]) -> list[str]:
    lines = [f"{title}: {step['upload']}"]
    if step.get("note"):
        lines.append(f"  ({step['note']})")
    pre = step["preprocess"]
    lines.append(f"  preprocess: {pre['status']} — {pre['reason']}")
    if pre["status"] != "started":
        for violation in (step.get("rejection") or {}).get("violations", []):
            lines.append(f"    ✗ {violation['rule']}: {violation['message']}")
        if pre.get("report_key"):
            lines.append(f"    report: {pre['report_key']}")
        return lines
    rows = pre["rows"]
    dropped = ", ".join(f"{k}={v}" for k, v in rows["rejected"].items()) or "none"
    lines += [
        f"    dataset version {pre['dataset_version']}: read {rows['read']} rows, "
        f"{rows['duplicates_dropped']} duplicates dropped, rows dropped by rule: {dropped}",
        "    accepted {accepted}: train {train} / validation {validation} / test {test}".format(
            accepted=rows["accepted"], **rows["per_split"]
        ),
    ]
    lines += [
        f"    ! left out {f['key']} ({f['rule']}), report {f['report_key']}"
        for f in pre.get("excluded", [])
    ]
    lines += _render_columns(step.get("columns", []))
    run = step["run"]
    lines.append(f"  run {run['name']}: {run['status']}, states {' → '.join(run['path'])}")
    if run.get("failure"):
        lines += failure_lines(run["failure"], indent="    ", full_text_in="`sluice demo --json`")
    elif run["error"]:
        failure = {"state": run["path"][-1], "error": run["error"], "message": run["cause"]}
        lines += failure_lines(failure, indent="    ", full_text_in="`sluice demo --json`")
    card = step.get("model_card")
    if card:
        metric = card["metric"]
        lines.append(f"  candidates (validation {metric}):")
        for candidate in card["candidates"]:
            mark = "★" if candidate["name"] == card["chosen"] else " "
            value = candidate["metric_value"]
            shown = "n/a" if value is None else f"{value:.4f}"
            lines.append(
                f"    {mark} {candidate['name']:<10} {metric}={shown}  "
                f"fit {candidate['fit_seconds']:.2f} s"
            )
        parity = card["parity"]
        agreement = parity["label_agreement"]
        lines.append(
            f"  parity ONNX vs native on {parity['rows']} validation rows: max |Δ| "
            f"{parity['max_abs_diff']:.2e} (tolerance {parity['tolerance']:.0e})"
            + (f", labels agree {agreement:.2%}" if agreement is not None else "")
            + f", ties {parity['ties']} → {'PASS' if parity['passed'] else 'FAIL'}"
        )
        lines.append(
            f"  model.onnx sha256 {card['onnx']['sha256'][:16]}…, {card['onnx']['bytes']} bytes"
        )
    evaluation = step.get("evaluation")
    if evaluation:
        gate = evaluation["gate"]
        challenger = evaluation["challenger"]
        figures = ", ".join(
            f"{k} {challenger[k]:.4f}"
            for k in ("roc_auc", "f1_macro", "accuracy", "log_loss", "rmse", "mae", "r2")
            if isinstance(challenger.get(k), float)
        )
        lines.append(f"  test split ({evaluation['test_rows']} rows): {figures}")
        interval = (evaluation.get("intervals") or {}).get("challenger")
        if interval and card:
            lines.append(
                f"    {card['metric']} {interval['level']:.0%} bootstrap interval "
                f"{interval['low']:.4f}–{interval['high']:.4f} ({interval['resamples']} resamples)"
            )
        lines.append(f"    champion: {evaluation['champion_note']['reason']}")
        for column, groups in evaluation["groups"].items():
            shown = ", ".join(
                f"{g}: {v.get(card['metric'] if card else '', 'n/a')!s:.6} ({v['rows']} rows)"
                for g, v in groups.items()
            )
            lines.append(f"    by {column}: {shown}")
        verdict = "PASS → promote" if gate["passed"] else "REFUSED → reject"
        lines.append(f"  gate: {verdict}")
        lines += [f"    · {reason}" for reason in gate["reasons"]]
    lines.append(
        f"  registry: model version {step.get('model_version')} is "
        f"{step.get('model_status', 'not registered')}; live version {step['live_version']}"
    )
    predictions = step.get("predictions")
    if predictions:
        lines.append(f"  predictions from live version {predictions['model_version']}:")
        for instance, prediction in zip(
            predictions["instances"], predictions["predictions"], strict=True
        ):
            shown_in = ", ".join(f"{k}={v}" for k, v in list(instance.items())[:4])
            lines.append(f"    {{{shown_in}, …}} → {json.dumps(_rounded(prediction))}")
    steps = step.get("steps_seconds", {})
    lines.append("  timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    states = (step.get("run") or {}).get("states_seconds") or {}
    if states:
        lines.append("    per state: " + ", ".join(f"{k} {v:.2f} s" for k, v in states.items()))
    return lines
