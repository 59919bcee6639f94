"""``sluice demo``: the whole chain on one machine, in one process, under moto, with real clients.

Upload a contract and a CSV with boto3 → S3 emits the EventBridge event → the preprocess handler
builds a dataset version and starts a run → the pipeline definition (the same ASL file CDK
deploys) runs: the local SageMaker runner trains (candidates → best → ONNX → parity), evaluate
scores challenger and champion, the gate decides, promote or reject updates the registry →
predictions come back through the inference handler from API Gateway events.

Then, unless told not to, a deliberately worse version of the same data (its labels shuffled)
is uploaded, and the demo shows the gate refusing it while the first model keeps serving.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from moto import mock_aws

from functions.shared import layout
from functions.shared.contract import FeatureKind
from functions.shared.features import NULL_TOKENS, FeatureSpec
from functions.shared.model_card import ModelCard
from functions.shared.orchestration import RunInput
from functions.shared.registry import ModelRegistry
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import S3ObjectStore, parse_s3_uri, s3_uri
from infra.local.apigw import read_response, rest_event
from infra.local.pipeline import LocalLambdaContext, run_pipeline, use_endpoint
from infra.local.resources import provision, receive_upload_events
from infra.topology import Topology

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "churn"
PREDICTION_ROWS = 3
SHUFFLE_SEED = 7


class DemoError(RuntimeError):
    """The demo could not finish; the message says which step and why."""


@dataclass(frozen=True)
class DemoInputs:
    data: Path
    contract: Path
    dataset: str
    worse_upload: bool = True


def run_demo(inputs: DemoInputs) -> dict[str, Any]:
    topology = Topology(stage="demo")
    _quiet_functions()  # before use_endpoint imports the handlers: Powertools reads it then
    contract = json.loads(inputs.contract.read_bytes())
    with mock_aws():
        use_endpoint(topology, None)  # the demo's AWS is moto, patched into this process

        def clients(service: str) -> Any:
            return boto3.client(service, region_name=topology.region)

        resources = provision(clients, topology)
        chain = _Chain(topology, clients, lambda: receive_upload_events(clients, resources))
        chain.s3.put_object(
            Bucket=topology.raw_bucket,
            Key=layout.contract_key(inputs.dataset),
            Body=inputs.contract.read_bytes(),
        )
        data_key = f"{layout.data_prefix(inputs.dataset)}{inputs.data.name}"
        result: dict[str, Any] = {"dataset": inputs.dataset}
        result["first"] = chain.upload_and_run(data_key, inputs.data.read_bytes())
        if result["first"].get("live_version") is None or not inputs.worse_upload:
            return result
        worse = _shuffled_labels(inputs.data.read_bytes(), contract["target"])
        result["second"] = chain.upload_and_run(
            data_key, worse, note=f"the same rows with the '{contract['target']}' column shuffled"
        )
        return result


class _Chain:
    """One upload through every step, reporting what each step did and how long it took."""

    def __init__(
        self,
        topology: Topology,
        clients: Callable[[str], Any],
        drain: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.topology = topology
        self.s3 = clients("s3")
        self.sfn = clients("stepfunctions")
        self.store = S3ObjectStore(self.s3)
        self.registry: ModelRegistry = DynamoDBRegistry(
            clients("dynamodb"), topology.registry_table
        )
        self.drain = drain
        self.sample_rows: list[dict[str, str]] = []

    def upload_and_run(self, key: str, data: bytes, *, note: str = "") -> dict[str, Any]:
        from functions.inference import handler as inference
        from functions.preprocess import handler as preprocess

        steps: dict[str, float] = {}
        report: dict[str, Any] = {"upload": s3_uri(self.topology.raw_bucket, key)}
        if note:
            report["note"] = note
        with _timed(steps, "upload"):
            self.s3.put_object(Bucket=self.topology.raw_bucket, Key=key, Body=data)
            events = [e for e in self.drain() if e["detail"]["object"]["key"] == key]
        if len(events) != 1:
            raise DemoError(f"expected one upload event for {key}, got {len(events)}")
        with _timed(steps, "preprocess"):
            outcome = preprocess.lambda_handler(
                events[0], LocalLambdaContext.for_function(self.topology, "preprocess")
            )["outcomes"][0]
        report["preprocess"] = outcome
        if outcome["status"] != "started":
            if outcome.get("report_key"):
                report["rejection"] = json.loads(
                    self.store.get_bytes(self.topology.artifacts_bucket, outcome["report_key"])
                )
            report["steps_seconds"] = steps
            return report

        execution = self.sfn.describe_execution(executionArn=outcome["run_id"])
        run_input = RunInput.model_validate_json(execution["input"])
        with _timed(steps, "pipeline"):
            run = run_pipeline(self.topology, run_input, self.store)
        report["run"] = {
            "name": run.name,
            "status": run.status,
            "path": run.path,
            "error": run.error,
            "cause": run.cause,
            "states_seconds": {e.name: round(e.duration_seconds, 3) for e in run.history},
        }
        mine = [
            v for v in self.registry.versions(run_input.dataset) if v.run_name == run_input.run_name
        ]
        report["model_version"] = mine[-1].version if mine else None
        if mine:
            record = mine[-1]
            card = ModelCard.model_validate_json(
                self.store.get_bytes(*parse_s3_uri(record.card_uri))
            )
            evaluation_report = json.loads(self.store.get_bytes(*parse_s3_uri(record.report_uri)))
            report["model_status"] = record.status.value
            report["model_card"] = json.loads(card.model_dump_json())
            report["evaluation"] = {
                "test_rows": evaluation_report["test_rows"],
                "challenger": evaluation_report["challenger"]["report"],
                "champion": (evaluation_report.get("champion") or {}).get("report"),
                "champion_note": evaluation_report["champion_note"],
                "groups": evaluation_report["challenger"]["groups"],
                "gate": evaluation_report["decision"],
            }
            if not self.sample_rows:
                self.sample_rows = _sample_rows(data, card)
        live = self.registry.live(run_input.dataset)
        report["live_version"] = live.version if live else None
        if live is not None and self.sample_rows:
            with _timed(steps, "predict"):
                report["predictions"] = _predict(
                    inference.lambda_handler, self.topology, run_input.dataset, self.sample_rows
                )
        report["steps_seconds"] = steps
        return report


def _predict(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    topology: Topology,
    dataset: str,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    event = rest_event(
        "POST",
        f"/v1/models/{dataset}:predict",
        body=json.dumps({"instances": rows}),
        headers={"content-type": "application/json"},
    )
    response = read_response(handler(event, LocalLambdaContext.for_function(topology, "inference")))
    if response.status != 200:
        raise DemoError(f"predict answered {response.status}: {response.body.decode()[:500]}")
    answer: dict[str, Any] = response.json()
    return {"instances": rows, **answer}


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


@contextmanager
def _timed(steps: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = round(time.perf_counter() - started, 3)


def _quiet_functions() -> None:
    """A demo prints its own story: function logs at WARNING, no metrics, no tracing."""
    for name, value in {
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        os.environ.setdefault(name, value)


def render(result: dict[str, Any]) -> str:
    """The demo's result for a person: what happened, step by step, with the figures."""
    lines = [f"sluice demo — dataset '{result['dataset']}'"]
    lines += _render_upload("1. first upload", result["first"])
    if "second" in result:
        lines.append("")
        lines += _render_upload("2. a deliberately worse upload", result["second"])
    return "\n".join(lines)


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
    run = step["run"]
    lines.append(f"  run {run['name']}: {run['status']}, states {' → '.join(run['path'])}")
    if run["error"]:
        lines.append(f"    error {run['error']}: {str(run['cause'])[:300]}")
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
            lines.append(f"    {{{shown_in}, …}} → {json.dumps(prediction)}")
    steps = step.get("steps_seconds", {})
    lines.append("  timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    states = (step.get("run") or {}).get("states_seconds") or {}
    if states:
        lines.append("    per state: " + ", ".join(f"{k} {v:.2f} s" for k, v in states.items()))
    return lines
