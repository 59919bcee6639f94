"""`sluice demo` as a user runs it: a subprocess, their own CSV and contract, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]


def sluice(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def demo_json(*args: str) -> dict[str, Any]:
    code, out = sluice("demo", "--json", *args)
    assert code == 0, out
    result: dict[str, Any] = json.loads(out)
    return result


def test_the_bundled_sample_trains_and_passes_parity() -> None:
    code, out = sluice("demo")
    assert code == 0, out
    assert "dataset version" in out
    assert "40 duplicates dropped" in out
    assert "→ PASS" in out
    assert "linear" in out and "xgboost" in out


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
    data = tmp_path / "houses.csv"
    frame.to_csv(data, index=False)
    contract = tmp_path / "contract.json"
    contract.write_text(
        json.dumps({"target": "price", "task": "regression", "metric": "rmse", "threshold": 60000})
    )

    result = demo_json("--data", str(data), "--contract", str(contract))

    assert result["dataset"] == "houses"
    assert result["preprocess"]["status"] == "started"
    card = result["model_card"]
    assert card["task"] == "regression"
    assert {f["name"]: f["kind"] for f in card["features"]} == {
        "sqft": "numeric",
        "rooms": "numeric",
        "city": "categorical",
    }
    assert card["parity"]["passed"] is True
    assert card["parity"]["max_scaled_diff"] <= 1e-4
    assert card["validation"]["rmse"] < 40000  # noise is 20 000; a working model is near it
    assert result["training_job"]["ModelArtifacts"]["S3ModelArtifacts"].endswith(
        "/output/model.tar.gz"
    )


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
    assert "contract_invalid" in out and "metric 'rmse' is a regression metric" in out
