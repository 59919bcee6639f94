"""What calibration inside the graph costs a warm 1-row predict.

``python -m bench.calibration [--quick] [--json]``. Fits bench/predict.py's churn-like
classifier (both families), exports each to ONNX, appends a temperature
(``export.append_temperature``: Clip, Log, Mul, Softmax) and times ``InferenceSession.run`` on
one row for the graph with and without those nodes, interleaved in short rounds so that the
machine's other load weighs on both alike, with the inference function's session options; and
the session load (the part of a cold start that depends on the graph) the same way. The
handler around the session is the same code for either graph, so the difference here is all
that calibration adds to bench/predict.py's warm predict.

Target: the calibrated graph at most 10 µs slower than the uncalibrated one (floor) per family,
a fifteenth of issue 17's 150 µs budget for a warm 1-row predict through the handler; absolute,
because the nodes cost the same whatever the model, so a ratio would punish a fast model.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort
from numpy.typing import NDArray

from bench.predict import synthetic_version
from bench.report import Figure, Section, run_cli
from functions.shared.scoring import session_options
from functions.training.calibration import PROBABILITY_FLOOR
from functions.training.candidates import build_candidates, fit_candidate
from functions.training.export import append_temperature, to_onnx
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.splits import load_split

ADDED_TARGET_US = 10.0
TEMPERATURE = 1.7  # any value costs the same four nodes
CALLS = 20  # per timing, to get above the clock's resolution
ROUNDS, QUICK_ROUNDS = 300, 60
LOADS, QUICK_LOADS = 40, 10


def measure(quick: bool = False) -> Section:
    section = Section("calibration", "Calibration in the graph: warm 1-row session.run")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        schema = synthetic_version(root / "version")
        paths = SageMakerPaths.for_version(root / "version", root)
        train = load_split(paths.train, schema, "train")
        validation = load_split(paths.validation, schema, "validation")
        hyperparameters = Hyperparameters(n_estimators=100)
        pipelines = build_candidates(schema, hyperparameters, num_gpus=0, n_jobs=1)
        for name, pipeline in pipelines.items():
            fitted = fit_candidate(name, pipeline, schema, train, validation).pipeline
            raw = to_onnx(fitted, schema)
            calibrated = append_temperature(raw, TEMPERATURE, PROBABILITY_FLOOR)
            times = _interleaved(
                raw, calibrated, validation.feeds, QUICK_ROUNDS if quick else ROUNDS
            )
            sluice, floor = statistics.median(times[1]), statistics.median(times[0])
            section.add(
                Figure(
                    what=f"{name}: calibrated, 1 row (median)",
                    unit="µs",
                    sluice=round(sluice, 1),
                    floor=round(floor, 1),
                    target=f"≤ floor + {ADDED_TARGET_US:g} µs",
                    met=sluice - floor <= ADDED_TARGET_US,
                    note="floor: the same model's graph without the four calibration nodes",
                )
            )
            loads = _loads(raw, calibrated, QUICK_LOADS if quick else LOADS)
            section.add(
                Figure(
                    what=f"{name}: calibrated, session load (median)",
                    unit="ms",
                    sluice=round(statistics.median(loads[1]), 2),
                    floor=round(statistics.median(loads[0]), 2),
                    note="the cold start's share that the graph decides; floor as above",
                )
            )
            section.details[f"{name}_bytes"] = {"raw": len(raw), "calibrated": len(calibrated)}
    return section


def _loads(raw: bytes, calibrated: bytes, rounds: int) -> tuple[list[float], list[float]]:
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds + 1):  # the first round warms onnxruntime up and is dropped
        for graph, kept in zip((raw, calibrated), times, strict=True):
            started = time.perf_counter()
            ort.InferenceSession(graph, session_options(), providers=["CPUExecutionProvider"])
            kept.append((time.perf_counter() - started) * 1e3)
    return times[0][1:], times[1][1:]


def _interleaved(
    raw: bytes, calibrated: bytes, feeds: dict[str, NDArray[Any]], rounds: int
) -> tuple[list[float], list[float]]:
    sessions = [
        ort.InferenceSession(graph, session_options(), providers=["CPUExecutionProvider"])
        for graph in (raw, calibrated)
    ]
    one_row = {key: value[:1] for key, value in feeds.items()}
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for session, kept in zip(sessions, times, strict=True):
            started = time.perf_counter()
            for _ in range(CALLS):
                session.run(None, one_row)
            kept.append((time.perf_counter() - started) / CALLS * 1e6)
    return times


def main() -> None:
    run_cli(measure)


if __name__ == "__main__":
    main()
