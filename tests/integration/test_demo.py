"""`sluice demo` as a user runs it: a subprocess, their own CSV and contract, JSON out."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.processes import ChildProcess

REPO = Path(__file__).resolve().parents[2]


def sluice(*args: str) -> tuple[int, str]:
    done = _run(*args)
    return done.returncode, done.stdout + done.stderr


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def demo_json(*args: str) -> dict[str, Any]:
    """The JSON on stdout; the stack's own lines go to stderr."""
    done = _run("demo", "--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stack  stopped" in done.stderr.splitlines()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_bundled_sample_goes_live_and_the_worse_upload_is_refused() -> None:
    # When a user runs `make demo`'s command on the bundled sample
    result = demo_json()

    # Then it ran on a local stack on loopback, reached only through its endpoint and its API
    assert result["stack"]["aws_endpoint_url"].startswith("http://127.0.0.1:")
    assert result["stack"]["api_url"].startswith("http://127.0.0.1:")

    # and the first run trains, passes parity and the gate, and version 1 goes live
    first = result["first"]
    assert first["preprocess"]["rows"]["duplicates_dropped"] == 40
    assert first["run"]["status"] == "SUCCEEDED"
    assert first["run"]["path"][-2:] == ["Promote", "Promoted"]
    assert first["model_card"]["parity"]["passed"] is True
    assert first["evaluation"]["gate"]["passed"] is True
    assert first["evaluation"]["challenger"]["roc_auc"] > 0.8
    assert set(first["evaluation"]["groups"]["senior_citizen"]) == {"yes", "no"}
    assert first["model_version"] == 1 and first["live_version"] == 1
    assert first["model_report"]["uri"].endswith("/report/index.html")
    assert Path(first["model_report"]["file"]).read_bytes().startswith(b"<!DOCTYPE html>")
    predictions = first["predictions"]
    assert predictions["model_version"] == "1" and len(predictions["predictions"]) == 3
    for prediction in predictions["predictions"]:
        assert prediction["label"] in ("yes", "no")
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5
    # and the shuffled-label upload is refused on the threshold while version 1 keeps serving
    second = result["second"]
    assert second["run"]["status"] == "SUCCEEDED"
    assert second["run"]["path"][-2:] == ["Reject", "Refused"]
    assert second["evaluation"]["gate"]["passed"] is False
    assert any("misses threshold" in r for r in second["evaluation"]["gate"]["reasons"])
    assert second["model_version"] == 2 and second["model_status"] == "rejected"
    assert second["live_version"] == 1
    assert second["predictions"]["model_version"] == "1"
    assert second["predictions"]["predictions"] == predictions["predictions"]


def test_the_human_readable_demo_tells_the_story(tmp_path: Path) -> None:
    code, out = sluice("demo", "--skip-worse", "--report-dir", str(tmp_path))
    assert code == 0, out
    for expected in ("40 duplicates dropped", "→ PASS", "gate: PASS → promote", "predictions from"):
        assert expected in out, expected
    assert "deliberately worse" not in out
    # and it ends with where the version's model report is, a page that is there to open, and
    # where the console is served (the demo's own stopped with its stack)
    page = tmp_path / "churn-v1.html"
    last = out.rstrip().splitlines()[-5:]
    assert last[0] == f"  version 1: {page.resolve()}", out[-600:]
    assert last[2].startswith("console: ") and "http://127.0.0.1:8090/" in last[2], last
    assert "`sluice demo --serve`" in last[3], last
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Model report — churn version 1" in html


def _run_on(tmp_path: Path, frame: pd.DataFrame, contract: dict[str, Any]) -> dict[str, Any]:
    data = tmp_path / f"{contract['task']}.csv"
    frame.to_csv(data, index=False)
    contract_path = tmp_path / "contract.json"
    # a tiny search budget keeps the test short; the rest of the contract is the user's
    contract_path.write_text(json.dumps({**contract, "training": {"budget_seconds": 2}}))
    return demo_json("--data", str(data), "--contract", str(contract_path), "--skip-worse")


def test_a_users_regression_csv_with_categories_and_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 1500
    frame = pd.DataFrame(
        {
            "sqft": rng.integers(400, 4000, n).astype(float),
            "rooms": rng.integers(1, 7, n),
            "city": rng.choice(["Lisbon", "porto", " Faro", "Braga"], n),
        }
    )
    frame["price"] = 150 * frame["sqft"] + 9000 * frame["rooms"] + rng.normal(0, 20000, n)
    frame.loc[rng.random(n) < 0.05, "sqft"] = np.nan
    frame.loc[rng.random(n) < 0.05, "city"] = None

    result = _run_on(
        tmp_path,
        frame,
        {"target": "price", "task": "regression", "metric": "rmse", "threshold": 60000},
    )

    assert result["dataset"] == "regression"
    first = result["first"]
    card = first["model_card"]
    assert {f["name"]: f["kind"] for f in card["features"]} == {
        "sqft": "numeric",
        "rooms": "numeric",
        "city": "categorical",
    }
    assert card["parity"]["max_scaled_diff"] <= 1e-4
    test = first["evaluation"]["challenger"]
    # The floor is ≈ 40 000: noise 20 000, plus the 5 % of rows whose sqft is missing, where
    # imputation cannot recover ~150 × 1 040 of price (√(0.05) × 156 000 ≈ 35 000).
    assert test["rmse"] < 48000
    assert {"rmse", "mae", "r2"} <= set(test)
    assert first["live_version"] == 1
    assert all(isinstance(p, float) for p in first["predictions"]["predictions"])


def test_a_users_multiclass_csv_with_categories_and_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 1800
    usage = rng.gamma(2.0, 30.0, n)
    plan = rng.choice(["basic", "Plus", "PRO"], n)
    score = usage / 60 + np.where(plan == "PRO", 1.5, np.where(plan == "Plus", 0.7, 0.0))
    score += rng.normal(0, 0.4, n)
    tier = np.select([score < 1.0, score < 2.2], ["bronze", "silver"], "gold")
    frame = pd.DataFrame({"usage": usage, "plan": plan, "tier": tier})
    frame.loc[rng.random(n) < 0.05, "usage"] = np.nan
    frame.loc[rng.random(n) < 0.05, "plan"] = None

    result = _run_on(
        tmp_path,
        frame,
        {"target": "tier", "task": "classification", "metric": "f1_macro", "threshold": 0.6},
    )

    first = result["first"]
    test = first["evaluation"]["challenger"]
    assert set(test["per_class"]) == {"bronze", "silver", "gold"}
    assert len(test["confusion_matrix"]) == 3
    assert test["f1_macro"] > 0.7
    assert first["live_version"] == 1
    for prediction in first["predictions"]["predictions"]:
        assert set(prediction["probabilities"]) == {"bronze", "silver", "gold"}


def test_a_bad_contract_is_reported_and_the_demo_fails(tmp_path: Path) -> None:
    data = tmp_path / "tiny.csv"
    pd.DataFrame({"x": range(200), "y": ["a", "b"] * 100}).to_csv(data, index=False)
    contract = tmp_path / "contract.json"
    contract.write_text(
        json.dumps({"target": "y", "task": "classification", "metric": "rmse", "threshold": 0.5})
    )

    code, out = sluice("demo", "--data", str(data), "--contract", str(contract))

    assert code == 1
    assert "preprocess: rejected" in out
    assert "gate:" not in out
    assert "contract_invalid" in out and "metric 'rmse' is a regression metric" in out


def test_a_run_that_fails_in_training_shows_the_failing_state_and_its_cause(
    tmp_path: Path,
) -> None:
    # Given the sample data with a contract whose training asks for a hyperparameter that the
    # training script does not know: the training job fails
    contract = json.loads((REPO / "samples" / "churn" / "contract.json").read_text())
    contract["training"]["hyperparameters"] = {"bogus": 1}
    contract_path = tmp_path / "contract.json"
    contract_path.write_text(json.dumps(contract))
    data = str(REPO / "samples" / "churn" / "data" / "churn.csv")
    args = ("--data", data, "--contract", str(contract_path), "--dataset", "churn", "--skip-worse")
    cause = "AlgorithmError: TrainingError: unknown hyperparameter 'bogus'"

    # When the demo runs, as JSON and as text
    done = _run("demo", "--json", *args)
    code, text = sluice("demo", *args)

    # Then both name the failing state, its error and the training job's reason, verbatim
    assert done.returncode == 1 and code == 1
    run = json.loads(done.stdout)["first"]["run"]
    assert run["status"] == "FAILED" and run["path"][-3:] == ["Train", "RecordFailure", "RunFailed"]
    failure = run["failure"]
    assert (failure["state"], failure["error"]) == ("Train", "States.TaskFailed")
    assert failure["message"].startswith(cause)
    assert json.loads(failure["cause"])["FailureReason"] == failure["message"]
    assert run["decision"]["kind"] == "run_failed"
    assert "    failed at Train: States.TaskFailed" in text.splitlines()
    assert cause in " ".join(text.split())
    assert "RecordFailure step holds" not in text


def test_demo_serve_keeps_the_console_over_the_demos_stack_until_ctrl_c(tmp_path: Path) -> None:
    # Given `sluice demo --serve` as a user runs it
    command = [sys.executable, "-m", "infra.cli", "demo", "--serve", "--skip-worse"]
    command += ["--report-dir", str(tmp_path)]
    demo = ChildProcess(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        demo.wait(
            lambda lines: any(line.startswith("console  http") for line in lines),
            240,
            timed_out="no console URL",
            ended="sluice demo ended",
            error=AssertionError,
        )
        # When the printed URL is opened
        url = re.search(r"^console  (http://127\.0\.0\.1:\d+/) ", demo.said, re.M)
        assert url is not None, demo.said
        with urllib.request.urlopen(url.group(1), timeout=10) as page:
            body = page.read().decode()
        # Then the console shows the demo's dataset with its live version, and the story told
        # before it does not claim the stack has stopped
        assert "churn" in body and "live" in body.lower(), body
        assert "the demo's stack has stopped" not in demo.said
    finally:
        demo.process.send_signal(signal.SIGINT)
        demo.process.wait(timeout=60)
    # And Ctrl-C ends it cleanly, the stack stopped
    rest = demo.rest()
    assert demo.process.returncode == 0, demo.said + rest
    assert "stack  stopped" in demo.said + rest
