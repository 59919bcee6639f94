"""Cold start: a fresh Python process to the first prediction returned, vs the peer and the floor.

``python -m bench.coldstart [--quick] [--json]``. Trains a small churn-like classifier with the
real training entry point (``bench.predict.train_model``) and the scikit-learn peer on the same
split, starts moto's server on loopback and publishes the model into it as a promotion leaves it
(files in S3, version live in the registry table). Then, in rounds that alternate the three so
that the machine's other load weighs on all alike, each sample is a fresh ``python -c`` process:

- **sluice**: ``import functions.inference.handler`` (the import time), then the first
  ``lambda_handler`` call on the stored API Gateway predict event with one row: the registry's
  live pointer read from DynamoDB, model card and ONNX file read from S3 (moto's server, over
  HTTP on loopback), the sha256 checked, the session built, the row predicted and answered;
- **peer**: bench/peer.py's handler, inlined (importing ``bench.peer`` would also import
  sluice's pydantic feature schema, which the peer does not need): ``json``, ``joblib``,
  ``numpy``, ``pandas`` and the scikit-learn modules of its pipeline imported, then
  ``joblib.load`` of the pipeline from local disk (a shortcut in its favour: no S3, no registry,
  no check) and the same event answered;
- **peer, model in S3**: the same peer importing ``boto3`` too and reading its pipeline with
  one ``GetObject`` from moto's server, as it would in Lambda with its model in S3 like
  sluice's: the AWS SDK's share (import ≈ 0.1 s, client creation ≈ 0.05 s, half of it botocore
  parsing its service models' JSON) that the local-disk peer does not pay;
- **floor**: ``numpy`` and ``onnxruntime`` imported, the same ONNX file read from local disk,
  one ``InferenceSession`` built and run once on feeds already encoded: what no handler beats.

Every child times itself with ``time.perf_counter`` from its first line and prints JSON; the
parent adds the process start (its ``Popen`` to the child's first line; ``perf_counter`` is
``CLOCK_MONOTONIC`` on Linux, shared by both processes). A cold start is start + import + first
request; the process's exit after answering is not counted (Lambda freezes it instead).

Bytecode: measured the usual way, ``.pyc`` present (a warm-up round, not counted, writes any
that are missing) and the OS page cache warm, for all three alike: that compares the code, not
the packaging. The full run adds one sample of sluice and of the peer with the bytecode their
Lambda zips would ship, read from a ``PYTHONPYCACHEPREFIX`` folder: the standard library's (the
runtime's own) for both, and for sluice its dependencies', which the inference layer ships
compiled (layers/README.md, "bytecode"); the rest is compiled at import, as on Lambda.
Tracing is disabled, as in the local stack. Target: at most 0.6 s and at least 3× faster than
the peer.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import Figure, Section, run_cli

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ROUNDS, QUICK_ROUNDS = 7, 2
TARGET_SECONDS = 0.6  # a fresh process to its first prediction
PEER_TARGET = 3.0  # at least this many times faster than the peer
CHILD_TIMEOUT = 60.0
KINDS = ("sluice", "peer", "floor", "peer_s3")
PHASES = ("start", "import", "request", "total")
FORBIDDEN = ("pandas", "sklearn", "scipy", "pyarrow")  # never on the inference path

# Each child: the clock starts at its first line, the JSON answer is its last line of stdout.
SLUICE_CHILD = """\
import time
t0 = time.perf_counter()
import functions.inference.handler as handler
t1 = time.perf_counter()
import json, sys
with open(sys.argv[1]) as f:
    event = json.load(f)

class Context:
    function_name = "sluice-inference-coldstart"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:sluice-coldstart"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

t2 = time.perf_counter()
response = handler.lambda_handler(event, Context())
t3 = time.perf_counter()
print(json.dumps({
    "started": t0, "import": t1 - t0, "request": t3 - t2,
    "status": response["statusCode"], "body": json.loads(response["body"]),
    "modules": len(sys.modules), "forbidden": [m for m in sys.argv[2:] if m in sys.modules],
}))
"""

PEER_CHILD = """\
import time
t0 = time.perf_counter()
import json
import joblib
import numpy as np
import pandas as pd
import sklearn.compose, sklearn.ensemble, sklearn.impute, sklearn.pipeline, sklearn.preprocessing
t1 = time.perf_counter()
import sys
with open(sys.argv[2]) as f:
    event = json.load(f)
features = json.loads(sys.argv[3])

def peer_response(pipeline, features, event):  # bench.peer.peer_response, verbatim
    instances = json.loads(event["body"])["instances"]
    frame = pd.DataFrame.from_records(instances, columns=list(features))
    probabilities = pipeline.predict_proba(frame)
    classes = [str(c) for c in pipeline.classes_]
    labels = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)].tolist()
    predictions = [
        {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
        for label, row in zip(labels, probabilities.tolist(), strict=True)
    ]
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"predictions": predictions}),
    }

t2 = time.perf_counter()
pipeline = joblib.load(sys.argv[1])
response = peer_response(pipeline, features, event)
t3 = time.perf_counter()
print(json.dumps({
    "started": t0, "import": t1 - t0, "request": t3 - t2,
    "status": response["statusCode"], "body": json.loads(response["body"]),
    "modules": len(sys.modules),
}))
"""

# The peer as it would run in Lambda with its model in S3, like sluice's: boto3 imported, the
# pipeline read with one GetObject (argv[1]: "bucket/key") instead of from local disk.
PEER_S3_CHILD = PEER_CHILD.replace(
    "import sklearn.compose", "import boto3, io\nimport sklearn.compose"
).replace(
    "pipeline = joblib.load(sys.argv[1])",
    "bucket, key = sys.argv[1].split('/', 1)\n"
    "body = boto3.client('s3').get_object(Bucket=bucket, Key=key)['Body'].read()\n"
    "pipeline = joblib.load(io.BytesIO(body))",
)

FLOOR_CHILD = """\
import time
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
t1 = time.perf_counter()
import json, sys
with open(sys.argv[2]) as f:
    encoded = json.load(f)
t2 = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    model = f.read()
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
feeds = {
    name: np.asarray(values, dtype=np.float32 if kind == "float32" else object).reshape(-1, 1)
    for name, (kind, values) in encoded.items()
}
outputs = session.run(None, feeds)
t3 = time.perf_counter()
print(json.dumps({
    "started": t0, "import": t1 - t0, "request": t3 - t2, "status": 200,
    "outputs": [o.tolist() for o in outputs if isinstance(o, np.ndarray)],
    "modules": len(sys.modules),
}))
"""


class BenchError(RuntimeError):
    """A child failed or answered something else than a prediction; the message says why."""


def _child_env(endpoint: str, tmp: Path, pycache: Path | None = None) -> dict[str, str]:
    """This environment, less anything that changes how Python starts, plus dummy AWS settings
    pointing at moto's server; with ``pycache``, bytecode is read from (and written to) that
    folder only (``PYTHONPYCACHEPREFIX``), not from the ``__pycache__`` folders."""
    from bench.predict import TABLE

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONPROFILEIMPORTTIME")
        and not k.startswith("AWS_")
        and not k.startswith("POWERTOOLS_")
    }
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "REGISTRY_TABLE": TABLE,
            "POWERTOOLS_SERVICE_NAME": "sluice-inference-coldstart",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    if pycache is not None:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _without_pyc(
    kind: str, command: tuple[str, list[str]], endpoint: str, tmp: Path
) -> dict[str, Any]:
    """One sample with the bytecode the Lambda zips ship: the standard library's (the
    runtime has its own) and, for sluice, its dependencies' (the inference layer ships
    ``unchecked-hash`` ``.pyc``, layers/README.md), not sluice's own code; for the peer, whose
    ``pip install -t`` bytecode is timestamp-checked against mtimes Lambda changes, only the
    standard library's. A first run writes every ``.pyc`` into an empty prefix folder, the
    others are deleted, and the measured run reads that folder."""
    pycache = tmp / f"pycache-{kind}"
    script, args = command
    _spawn(script, args, _child_env(endpoint, tmp, pycache))
    paths = sysconfig.get_paths()
    kept = [paths["stdlib"]] + ([paths["purelib"], paths["platlib"]] if kind == "sluice" else [])
    keep = [(pycache / path.lstrip(os.sep)).resolve() for path in kept]
    for compiled in pycache.rglob("*.pyc"):
        if not any(compiled.resolve().is_relative_to(folder) for folder in keep):
            compiled.unlink()
    env = {**_child_env(endpoint, tmp, pycache), "PYTHONDONTWRITEBYTECODE": "1"}
    return _spawn(script, args, env)


def _spawn(script: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One fresh process: its answer, with ``start`` (Popen to its first line) and ``total``."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"child exited {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result["status"] != 200:
        raise BenchError(f"child answered {result['status']}: {result.get('body')}")
    result["start"] = result["started"] - started
    result["total"] = result["start"] + result["import"] + result["request"]
    return result


def _encoded_feeds(card: Any, event: dict[str, Any]) -> dict[str, tuple[str, list[Any]]]:
    """The event's rows encoded as the model takes them, as JSON for the floor child."""
    from functions.shared.features import instances_to_columns, onnx_feeds

    rows = json.loads(event["body"])["instances"]
    feeds = onnx_feeds(card.features, instances_to_columns(card.features, rows), card.input_names)
    return {
        name: ("float32" if array.dtype.kind == "f" else "object", array.ravel().tolist())
        for name, array in feeds.items()
    }


def run(rounds: int, no_pyc_sample: bool) -> dict[str, Any]:
    import boto3
    import onnxruntime as ort
    from moto.server import ThreadedMotoServer

    from bench.peer import peer_response, save_peer
    from bench.predict import BUCKET, DATASET, predict_event, publish, train_model, train_peer
    from infra.local.stack import free_port

    with tempfile.TemporaryDirectory(prefix="sluice-bench-coldstart-") as name:
        tmp = Path(name)
        onnx_bytes, card, test = train_model(tmp / "train")
        peer = train_peer(tmp / "train")
        peer_file = save_peer(peer, tmp)
        model_file = tmp / "model.onnx"
        model_file.write_bytes(onnx_bytes)
        event = predict_event(test, card, 1)
        event_file = tmp / "event.json"
        event_file.write_text(json.dumps(event))
        feeds_file = tmp / "feeds.json"
        feeds_file.write_text(json.dumps(_encoded_feeds(card, event)))
        names = [f.name for f in card.features]
        expected_peer = json.loads(peer_response(peer, names, event)["body"])

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = free_port(HOST)
        server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://{HOST}:{port}"
            clients = {
                service: boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")
                for service in ("s3", "dynamodb")
            }
            publish(onnx_bytes, card, s3=clients["s3"], dynamodb=clients["dynamodb"])
            peer_key = f"{DATASET}/peer/{peer_file.name}"
            clients["s3"].put_object(Bucket=BUCKET, Key=peer_key, Body=peer_file.read_bytes())
            env = _child_env(endpoint, tmp)
            commands = {
                "sluice": (SLUICE_CHILD, [str(event_file), *FORBIDDEN]),
                "peer": (PEER_CHILD, [str(peer_file), str(event_file), json.dumps(names)]),
                "floor": (FLOOR_CHILD, [str(model_file), str(feeds_file)]),
                "peer_s3": (
                    PEER_S3_CHILD,
                    [f"{BUCKET}/{peer_key}", str(event_file), json.dumps(names)],
                ),
            }
            # Round 0 is a warm-up, not counted: .pyc written, page cache and moto's backends warm.
            samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
            warmup: dict[str, dict[str, Any]] = {}
            for round_ in range(rounds + 1):
                for kind in KINDS:
                    script, args = commands[kind]
                    result = _spawn(script, args, env)
                    if round_ == 0:
                        warmup[kind] = result
                    else:
                        samples[kind].append(result)
                if round_ == 0:
                    _check(warmup, card.classes or [], expected_peer)
            no_pyc = {
                kind: _without_pyc(kind, commands[kind], endpoint, tmp)
                for kind in (("sluice", "peer") if no_pyc_sample else ())
            }
        finally:
            server.stop()
    return {
        "samples": samples,
        "no_pyc": no_pyc,
        "model": card.chosen,
        "onnxruntime": ort.__version__,
    }


def _check(
    answers: dict[str, dict[str, Any]], classes: list[str], expected_peer: dict[str, Any]
) -> None:
    """The children answer what they should: sluice one prediction, with no training library
    imported and the floor's probabilities (the same model); the inlined peer exactly
    bench.peer's answer."""
    sluice, peer, floor, peer_s3 = (answers[kind] for kind in KINDS)
    predictions = sluice["body"]["predictions"]
    if len(predictions) != 1 or sluice["forbidden"]:
        raise BenchError(f"sluice answered {predictions}, imported {sluice['forbidden']}")
    for answer in (peer, peer_s3):
        if answer["body"] != expected_peer:
            raise BenchError(f"the inlined peer answered {answer['body']}, not {expected_peer}")
    if len(floor["outputs"]) == 2 and classes:
        answered = [predictions[0]["probabilities"][c] for c in classes]
        if max(abs(a - b) for a, b in zip(answered, floor["outputs"][1][0], strict=True)) > 1e-6:
            raise BenchError(f"sluice answered {answered}, the floor {floor['outputs'][1][0]}")


def _median(samples: list[dict[str, Any]], phase: str) -> float:
    return float(statistics.median(sample[phase] for sample in samples))


def measure(quick: bool = False) -> Section:
    outcome = run(QUICK_ROUNDS if quick else ROUNDS, no_pyc_sample=not quick)
    samples: dict[str, list[dict[str, Any]]] = outcome["samples"]
    median = {kind: {p: _median(samples[kind], p) for p in PHASES} for kind in KINDS}
    sluice, peer, floor, peer_s3 = (median[kind] for kind in KINDS)
    n = len(samples["sluice"])
    section = Section(
        "coldstart",
        "Cold start: fresh Python process → first prediction, inference handler vs "
        "scikit-learn + joblib (peer) vs bare onnxruntime (floor)",
    )
    met = sluice["total"] <= TARGET_SECONDS and peer["total"] / sluice["total"] >= PEER_TARGET
    section.add(
        Figure(
            "cold start, fresh process → first prediction",
            "s",
            sluice=sluice["total"],
            peer=peer["total"],
            floor=floor["total"],
            target=f"≤ {TARGET_SECONDS} s, ≥ {PEER_TARGET:.0f}× peer",
            met=met,
            note=f"median of {n} rounds; each includes the process start "
            f"(sluice {sluice['start']:.3f}, peer {peer['start']:.3f}, "
            f"floor {floor['start']:.3f} s); .pyc present, page cache warm; "
            "S3 and DynamoDB are moto's server on loopback",
        )
    )
    section.add(
        Figure(
            "import time",
            "s",
            sluice=sluice["import"],
            peer=peer["import"],
            floor=floor["import"],
            note="sluice: import functions.inference.handler; peer: json, joblib, numpy, "
            "pandas, its sklearn modules; floor: numpy, onnxruntime",
        )
    )
    section.add(
        Figure(
            "first request after import",
            "s",
            sluice=sluice["request"],
            peer=peer["request"],
            floor=floor["request"],
            note="sluice: registry read, card and model from S3, sha256, session, predict; "
            "peer: joblib.load from local disk, predict; floor: session from local file, run",
        )
    )
    section.add(
        Figure(
            "cold start, peer's model in S3 as sluice's is",
            "s",
            sluice=sluice["total"],
            peer=peer_s3["total"],
            note=f"the same peer importing boto3 and reading its pipeline with one GetObject "
            f"(import {peer_s3['import']:.2f} s, first request {peer_s3['request']:.2f} s): "
            "the AWS SDK's share that the local-disk peer above does not pay",
        )
    )
    no_pyc: dict[str, dict[str, Any]] = outcome["no_pyc"]
    if no_pyc:
        section.add(
            Figure(
                "cold start, bytecode as the Lambda zips ship",
                "s",
                sluice=no_pyc["sluice"]["total"],
                peer=no_pyc["peer"]["total"],
                note=f"one sample each; import {no_pyc['sluice']['import']:.2f} s "
                f"(peer {no_pyc['peer']['import']:.2f} s): sluice's layer ships its .pyc, its "
                "own code and the peer's pip -t tree are compiled at import (layers/README.md)",
            )
        )
    section.details = {
        "model": outcome["model"],
        "onnxruntime": outcome["onnxruntime"],
        "rounds": n,
        "median_s": {kind: {p: round(v, 4) for p, v in m.items()} for kind, m in median.items()},
        "per_round_s": {
            kind: [{p: round(s[p], 4) for p in PHASES} for s in samples[kind]] for kind in KINDS
        },
        "modules_imported": {kind: samples[kind][0]["modules"] for kind in KINDS},
        "shipped_bytecode_s": {
            kind: {p: round(sample[p], 4) for p in PHASES} for kind, sample in no_pyc.items()
        },
        "bytecode": ".pyc present and page cache warm for all three (a warm-up round first), "
        "the usual way to measure; shipped_bytecode_s (full run only) is one sample of sluice "
        "and of the peer with the .pyc their Lambda zips would hold: the standard library's, "
        "and sluice's dependencies' (its inference layer ships unchecked-hash .pyc)",
        "services": "S3 and DynamoDB: moto's server on loopback, in the benchmark's process",
        "tracing": "disabled (POWERTOOLS_TRACE_DISABLED), as in the local stack; in Lambda with "
        "tracing active, Powertools also imports the X-Ray SDK and patches botocore at import",
    }
    return section


def main(argv: list[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
