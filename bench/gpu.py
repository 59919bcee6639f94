"""The GPU training path: XGBoost with ``device="cuda"`` against the CPU, on the same data.

``python -m bench.gpu`` (1M rows; ``--rows N``, ``--json PATH`` to keep the figures; the run
recorded in ``bench/gpu.json``, which ``bench.training`` quotes, was ``--json bench/gpu.json`` on
an NVIDIA H200 with 16 cores). What a
SageMaker training job on a GPU instance does differently from a CPU one is one parameter:
``build_candidates(..., num_gpus=1)`` builds XGBoost with ``device="cuda"`` (LightGBM and the
linear model stay on the CPU, docs/training.md). This measures that, on ``bench.training``'s
synthetic table (20 numeric + 5 categorical columns, 3 classes):

1. the XGBoost candidate's fit alone (``fit_candidate``, the default configuration, early
   stopping on validation), on the CPU with every core and on the GPU, the same splits, and
   their validation figures (the GPU's histogram method is not bit-identical to the CPU's, so
   the figures agree closely, not exactly);
2. the whole entry point with XGBoost alone, ``train(paths, Hyperparameters(max_trials=1,
   candidates=("xgboost",)), num_gpus=1)``: the fit, the refit on train + validation, ONNX
   export and the parity check of the GPU-fitted model, with the card's ``training.device``
   (``--entry-cpu``: the same on the CPU).

Without CUDA (no GPU, or the ``xgboost-cpu`` wheel ``make`` installs) it says so and exits 0:
the figures need the full ``xgboost`` wheel on a CUDA machine (docs/decisions/, "GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine
from bench.training import bench_version
from functions.shared.model_card import Device
from functions.training.candidates import build_xgboost, fit_candidate
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.splits import load_schema, load_split
from functions.training.train import train


def cuda_available() -> str | None:
    """None when XGBoost can train on a CUDA device here, else why not."""
    import xgboost

    if not xgboost.build_info().get("USE_CUDA"):
        return "this xgboost build has no CUDA (the xgboost-cpu wheel)"
    try:
        xgboost.train(
            {"device": "cuda", "tree_method": "hist"},
            xgboost.DMatrix(np.zeros((4, 1)), label=np.zeros(4)),
            num_boost_round=1,
        )
    except xgboost.core.XGBoostError as error:
        return f"no CUDA device: {str(error).splitlines()[0]}"
    return None


def measure(
    rows: int, keep: Path | None = None, gpu_counts: Sequence[int] = (1, 0)
) -> dict[str, Any]:
    """The figures; ``keep``: written again after each step, so a run cut short keeps the
    steps it finished."""
    why_not = cuda_available()
    if why_not:
        return {"rows": rows, "measured": False, "why": why_not}
    figures: dict[str, Any] = {"rows": rows, "measured": True, "machine": machine()}

    def done(key: str, value: Any) -> None:
        figures[key] = value
        if keep:
            keep.write_text(json.dumps(figures, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="sluice-gpu-") as tmp:
        root = Path(tmp)
        paths = bench_version(rows, root)
        schema = load_schema(paths.train)
        train_split = load_split(paths.train, schema, "train")
        validation = load_split(paths.validation, schema, "validation")
        hp = Hyperparameters(max_trials=1)
        cores = os.cpu_count() or 1
        done("train_rows", train_split.rows)
        fits: dict[str, dict[str, Any]] = {}
        devices: tuple[Device, ...] = ("cuda", "cpu", "cuda")  # the first pays CUDA's start-up
        for device in devices:
            pipeline = build_xgboost(schema, hp, device=device, n_jobs=cores)
            started = time.perf_counter()
            fitted = fit_candidate("xgboost", pipeline, schema, train_split, validation)
            seconds = time.perf_counter() - started
            key = device if device not in fits else f"{device}_warm"
            fits[key] = {
                "seconds": round(seconds, 2),
                "metric": round(fitted.record.metric_value or 0.0, 5),
                "trees_per_class": int(str(fitted.record.params.get("best_iteration", -1))) + 1,
            }
            done("xgboost_fit", fits)
        done("speed_up", round(fits["cpu"]["seconds"] / fits["cuda_warm"]["seconds"], 2))
        # XGBoost alone: the family the GPU changes (LightGBM and linear, on the CPU either
        # way, are bench.training's); the entry point adds export and parity around it
        entry_hp = Hyperparameters(max_trials=1, candidates=("xgboost",))
        entry: dict[str, Any] = {}
        for gpus in gpu_counts:
            out = root / f"model-{gpus}"
            out.mkdir()
            run_paths = SageMakerPaths(
                train=paths.train,
                validation=paths.validation,
                model=out,
                output=root / f"output-{gpus}",
                config=paths.config,
            )
            started = time.perf_counter()
            card = train(run_paths, entry_hp, num_gpus=gpus)
            entry["gpu" if gpus else "cpu"] = {
                "seconds": round(time.perf_counter() - started, 2),
                "device": card.training.device,
                "chosen": card.chosen,
                card.metric: card.validation[card.metric],
                "parity_max_abs_diff": card.parity.max_abs_diff,
                "parity_passed": card.parity.passed,
            }
            done("train_entry_point", entry)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="also write the figures here, step by step")
    parser.add_argument(
        "--entry-cpu", action="store_true", help="time the whole entry point on the CPU too"
    )
    args = parser.parse_args(argv)
    figures = measure(args.rows, args.json, (1, 0) if args.entry_cpu else (1,))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
