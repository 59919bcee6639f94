"""``sluice demo``: the pipeline's data half on one machine, under moto, with real clients.

Upload a contract and a CSV with boto3 → S3 emits the EventBridge event → the preprocess handler
builds a dataset version and starts a run → the local SageMaker runner executes the training
entry point (candidates → best → ONNX → parity) → model.tar.gz lands where SageMaker puts it.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from functions.shared import layout
from functions.shared.model_card import MODEL_CARD_FILE, ModelCard
from functions.shared.orchestration import RunInput
from functions.shared.storage import S3ObjectStore, parse_s3_uri, s3_uri
from infra.local.resources import provision, receive_upload_events
from infra.local.training_runner import run_training_job
from infra.topology import Topology

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "churn"


class DemoError(RuntimeError):
    """The demo could not finish; the message says which step and why."""


@dataclass(frozen=True)
class DemoInputs:
    data: Path
    contract: Path
    dataset: str


def training_job_request(run: RunInput, topology: Topology) -> dict[str, Any]:
    """The CreateTrainingJob request a run makes (the state machine's Train state, in Python)."""
    return {
        "TrainingJobName": run.training_job_name,
        "HyperParameters": run.hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix"}},
            }
            for channel, uri in (("train", run.train_uri), ("validation", run.validation_uri))
        ],
        "OutputDataConfig": {
            "S3OutputPath": s3_uri(topology.artifacts_bucket, layout.models_prefix(run.dataset))
        },
        "ResourceConfig": {"InstanceType": run.instance_type, "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": run.stopping_condition.MaxRuntimeInSeconds},
    }


def run_demo(inputs: DemoInputs) -> dict[str, Any]:
    topology = Topology(stage="demo")
    os.environ.update(topology.preprocess_environment())
    for name, value in {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": topology.region,
    }.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

    from functions.preprocess import handler  # after the environment is set

    steps: dict[str, float] = {}
    with mock_aws():

        def clients(service: str) -> Any:
            return boto3.client(service, region_name=topology.region)

        resources = provision(clients, topology)
        s3 = clients("s3")
        started = time.perf_counter()
        s3.put_object(
            Bucket=topology.raw_bucket,
            Key=layout.contract_key(inputs.dataset),
            Body=inputs.contract.read_bytes(),
        )
        data_key = f"{layout.data_prefix(inputs.dataset)}{inputs.data.name}"
        s3.upload_file(str(inputs.data), topology.raw_bucket, data_key)
        events = [
            e
            for e in receive_upload_events(clients, resources)
            if e["detail"]["object"]["key"] == data_key
        ]
        if len(events) != 1:
            raise DemoError(f"expected one upload event for {data_key}, got {len(events)}")
        steps["upload"] = time.perf_counter() - started

        started = time.perf_counter()
        handler._deps.cache_clear()
        outcome = handler.lambda_handler(events[0], _Context())["outcomes"][0]
        steps["preprocess"] = time.perf_counter() - started
        result: dict[str, Any] = {
            "dataset": inputs.dataset,
            "upload": s3_uri(topology.raw_bucket, data_key),
            "preprocess": outcome,
        }
        if outcome["status"] != "started":
            report = None
            if outcome.get("report_key"):
                report = json.loads(
                    s3.get_object(Bucket=topology.artifacts_bucket, Key=outcome["report_key"])[
                        "Body"
                    ].read()
                )
            result["rejection"] = report
            result["steps_seconds"] = steps
            return result

        execution = clients("stepfunctions").describe_execution(executionArn=outcome["run_id"])
        run = RunInput.model_validate_json(execution["input"])
        started = time.perf_counter()
        job = run_training_job(training_job_request(run, topology), S3ObjectStore(s3))
        steps["training"] = time.perf_counter() - started
        result["training_job"] = job.model_dump(by_alias=True, exclude={"stdout_tail"})
        if job.training_job_status != "Completed" or job.model_artifacts is None:
            result["steps_seconds"] = steps
            return result
        card = _model_card(s3, job.model_artifacts.s3_model_artifacts)
        result["model_card"] = json.loads(card.model_dump_json())
        result["steps_seconds"] = steps
        return result


def _model_card(s3: Any, uri: str) -> ModelCard:
    bucket, key = parse_s3_uri(uri)
    archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile(MODEL_CARD_FILE)
        if member is None:
            raise DemoError(f"{uri} has no {MODEL_CARD_FILE}")
        return ModelCard.model_validate_json(member.read())


class _Context:
    function_name = "sluice-preprocess-demo"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:sluice-preprocess"
    aws_request_id = "demo"


def render(result: dict[str, Any]) -> str:
    """The demo's result for a person: what happened, step by step, with the figures."""
    lines = [f"sluice demo — dataset '{result['dataset']}'", f"  uploaded {result['upload']}"]
    pre = result["preprocess"]
    lines.append(f"  preprocess: {pre['status']} — {pre['reason']}")
    if pre["status"] != "started":
        for violation in (result.get("rejection") or {}).get("violations", []):
            lines.append(f"    ✗ {violation['rule']}: {violation['message']}")
        if pre.get("report_key"):
            lines.append(f"    report: {pre['report_key']}")
        return "\n".join(lines)
    rows = pre["rows"]
    dropped = ", ".join(f"{k}={v}" for k, v in rows["rejected"].items()) or "none"
    lines += [
        f"    dataset version {pre['dataset_version']}: read {rows['read']} rows, "
        f"{rows['duplicates_dropped']} duplicates dropped, rows dropped by rule: {dropped}",
        "    accepted {accepted}: train {train} / validation {validation} / test {test}".format(
            accepted=rows["accepted"], **rows["per_split"]
        ),
        f"    run {pre['run_name']} started",
    ]
    job = result.get("training_job", {})
    lines.append(
        f"  training job {job.get('TrainingJobName')}: {job.get('TrainingJobStatus')}"
        f" in {job.get('TrainingTimeInSeconds')} s"
    )
    if job.get("FailureReason"):
        lines.append(f"    reason: {job['FailureReason']}")
    card = result.get("model_card")
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
        lines.append(f"  artifact {job['ModelArtifacts']['S3ModelArtifacts']}")
    steps = result.get("steps_seconds", {})
    lines.append("  timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    return "\n".join(lines)
