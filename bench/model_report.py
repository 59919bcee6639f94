"""How long evaluate takes to build the model report for a 100k-row test split.

``python -m bench.model_report [--quick] [--json]``. bench/predict.py's churn-like table (6
numeric, 2 categorical features) is generated large enough for a 100 000-row test split; a
model is trained by the real entry point on 2 100 of the training rows (the size of the model
does not change what the report costs, the test rows do); then, as evaluate does, both the
challenger and a champion (the same model) are scored on the test split, and the report is
built (every figure's numbers, permutation importance, fairness by ``region``'s 12 groups) and
drawn (the page, each figure's SVG). Scoring is evaluate's cost either way and is timed apart.

Target: the report (build + draw) under 10 s for 100k rows (issue 18).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.predict import synthetic_version
from bench.report import Figure, Section, run_cli
from functions.evaluate.logic import TestSplit, score_model, score_rows
from functions.evaluate.model_report import ReportInputs, build_model_report
from functions.evaluate.models import ChampionNote
from functions.evaluate.report_html import figures, report_html
from functions.shared.gate import gate_inputs
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
from functions.shared.scoring import ScoringModel
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.splits import read_channel_frame
from functions.training.train import train

TEST_ROWS, QUICK_TEST_ROWS = 100_000, 20_000
TARGET_SECONDS = 10.0
TRAIN_ROWS, VALIDATION_ROWS = 2100, 450


def measure(quick: bool = False) -> Section:
    rows = QUICK_TEST_ROWS if quick else TEST_ROWS
    section = Section("model_report", f"Model report for a {rows:,}-row test split")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        version = root / "version"
        synthetic_version(version, rows=int(rows / 0.15) + 1)
        for name, keep in (("train", TRAIN_ROWS), ("validation", VALIDATION_ROWS)):
            path = version / name / "part-0.parquet"
            pd.read_parquet(path).iloc[:keep].to_parquet(path, index=False)
        paths = SageMakerPaths.for_version(version, root)
        train(paths, Hyperparameters(n_estimators=100, max_trials=1), num_gpus=0)
        card = ModelCard.model_validate_json((paths.model / MODEL_CARD_FILE).read_text())
        model = ScoringModel(
            (paths.model / MODEL_FILE).read_bytes(), card, expected_sha256=card.onnx.sha256
        )
        frame = read_channel_frame(version / "test").iloc[:rows]
        split = TestSplit({c: frame[c].to_numpy() for c in frame.columns}, len(frame))

        started = time.perf_counter()
        rows_scored = score_rows(model, split, role="challenger")
        champion_rows = score_rows(model, split, role="champion")
        scored = time.perf_counter() - started
        score = score_model(
            model, split, metric=card.metric, role="challenger", version=None, rows=rows_scored
        )
        inputs = gate_inputs(
            card.metric, score.metric_value, score.metric_value, threshold=0.6, tolerance=0.01
        )
        report_inputs = ReportInputs(
            dataset=card.dataset,
            dataset_version=card.dataset_version,
            run_name="bench",
            card=card,
            model=model,
            columns=split.columns,
            challenger=rows_scored,
            challenger_score=score,
            champion=champion_rows,
            champion_score=score.model_copy(update={"role": "champion", "version": 1}),
            champion_note=ChampionNote(version=1, scored=True, reason="bench"),
            gate=inputs,
            decision=inputs.decide(),
            sensitive=["region"],
            fairness_threshold=0.1,
            schema=None,
            profile=None,
        )
        started = time.perf_counter()
        report = build_model_report(report_inputs, created_at=datetime.now(UTC))
        built = time.perf_counter() - started
        started = time.perf_counter()
        drawn = figures(report)
        page = report_html(report, drawn)
        json_bytes = report.model_dump_json().encode()
        drawn_seconds = time.perf_counter() - started
    total = built + drawn_seconds
    section.add(
        Figure(
            what=f"report build + draw, {rows:,} test rows",
            unit="s",
            sluice=round(total, 2),
            target=f"≤ {TARGET_SECONDS:g} s",
            met=total <= TARGET_SECONDS,
            note=(
                f"build {built:.2f} s (permutation importance "
                f"{report.importance.rows} rows × {len(report.importance.features)} features × "
                f"{report.importance.repeats}), draw {drawn_seconds:.2f} s; scoring both models, "
                f"which evaluate does for the gate anyway: {scored:.2f} s"
            ),
        )
    )
    section.add(Figure(what="report page", unit="KB", sluice=round(len(page) / 1024, 1)))
    section.add(Figure(what="JSON twin", unit="KB", sluice=round(len(json_bytes) / 1024, 1)))
    section.details["figures"] = sorted(drawn)
    return section


def main() -> None:
    run_cli(measure)


if __name__ == "__main__":
    main()
