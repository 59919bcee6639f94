"""SageMaker script-mode entry point: candidates -> ranked -> refit -> ONNX export -> parity check.

The candidates are searched and ranked on validation, fitted on train; the one to export is then
refit on train + validation (refit.py; the ``refit`` hyperparameter, true by default, from the
contract's ``training.refit``). The test split is never read here: the evaluate step scores it.

A classifier's graph is calibrated (a temperature after its probabilities) when that lowers the
cross-fitted validation log loss (calibration.py), before the parity check, which then compares
it with the native model calibrated the same way. The temperature is decided and fitted with the
train-only model, the one that has not seen the validation rows, and carried to the refit graph.

The best candidate whose ONNX export passes the parity check ships; a better one that failed is
recorded in the card's ``parity_failures``. The run fails (ParityError) only when none passes.

Run as ``python functions/training/train.py`` with the repository root on PYTHONPATH (SageMaker
puts the code directory there; infra/local/training_runner.py sets it). The training asset
therefore ships ``functions/__init__.py``, ``functions/shared`` and ``functions/training``, with
``functions/training/requirements.txt`` copied to its root where the container installs it.

Inputs: the ``train`` channel (``*.parquet`` + ``dataset.json``), the ``validation`` channel
(``*.parquet``) and ``hyperparameters.json``. Outputs in SM_MODEL_DIR: ``model.onnx`` and
``model_card.json``. On any failure the reason goes to ``$SM_OUTPUT_DIR/failure`` (SageMaker's
FailureReason) and the process exits non-zero, leaving the model directory without a model.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
import pandas as pd
import skl2onnx
import sklearn
import xgboost
from pydantic import JsonValue

from functions.shared.errors import ParityError
from functions.shared.features import DatasetSchema, onnx_input_names
from functions.shared.model_card import (
    MODEL_CARD_FILE,
    MODEL_FILE,
    CalibrationRecord,
    CandidateRecord,
    ModelCard,
    ParityFailure,
    ParityReport,
    RefitRecord,
    TrainingInfo,
)
from functions.shared.progress import (
    PROGRESS_FILE_ENV,
    Progress,
    append_to,
    report_progress,
    route_progress,
)
from functions.training.calibration import calibrate_export
from functions.training.candidates import (
    FittedCandidate,
    device_for,
    rank_candidates,
)
from functions.training.ensemble import Blend, choose_ensemble
from functions.training.explanation import with_explanation
from functions.training.export import describe_onnx, to_onnx
from functions.training.parity import measure_parity, parity_failure_message
from functions.training.refit import refit_candidate
from functions.training.script_mode import (
    Hyperparameters,
    SageMakerPaths,
    failure_reason,
    load_hyperparameters,
    num_gpus_from_env,
    write_failure,
)
from functions.training.search import Searcher
from functions.training.splits import Split, load_schema, load_split, require_every_class

log = logging.getLogger("sluice.training")


def train(
    paths: SageMakerPaths,
    hyperparameters: Hyperparameters,
    num_gpus: int,
    *,
    n_jobs: int | None = None,
) -> ModelCard:
    """Train every candidate, export the best that passes parity to ONNX, write model and card.

    Raises TrainingError for unusable inputs and ParityError when no candidate's export agrees
    with its native model; nothing is written to ``paths.model`` in either case.
    """
    started = time.perf_counter()
    schema = load_schema(paths.train)
    train_split = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    require_every_class(schema, train_split)
    load_seconds = time.perf_counter() - started

    names = hyperparameters.candidates
    searcher = Searcher(
        schema, hyperparameters, train_split, validation, num_gpus=num_gpus, n_jobs=n_jobs
    )
    fitted = []
    for number, name in enumerate(names, start=1):
        detail = f"candidate {number} of {len(names)}: {name} on {train_split.rows} rows"
        _progress(schema, started, number - 1, len(names), detail)
        fitted.append(searcher.search(name, families_left=len(names) - number + 1))
    ranked = rank_candidates(fitted, schema.metric)
    refit = (
        partial(refit_candidate, schema=schema, train=train_split, validation=validation)
        if hyperparameters.refit
        else None
    )
    _progress(schema, started, len(names), len(names), "export to ONNX and parity check")
    # a blend is tried first; None when no blend beats the best family alone
    blend = choose_ensemble(
        ranked,
        schema,
        validation,
        max_members=hyperparameters.max_ensemble_members,
        refit_rows=(train_split.rows, train_split.rows + validation.rows) if refit else None,
    )
    shipped = export_first_passing(
        [*([blend] if blend else []), *ranked], schema, validation, refit
    )
    best = shipped.candidate  # the refit one, where training refits
    # The explanation table rides in the model file, so it shares the model's sha256 (a blend's
    # table lists its members: explanation.py).
    model_bytes = with_explanation(shipped.model_bytes, best.pipeline, schema, train_split.feeds)

    paths.model.mkdir(parents=True, exist_ok=True)
    model_path = paths.model / MODEL_FILE
    model_path.write_bytes(model_bytes)
    sha256 = hashlib.sha256(model_path.read_bytes()).hexdigest()
    card = ModelCard(
        dataset=schema.dataset,
        dataset_version=schema.dataset_version,
        task=schema.task,
        target=schema.target,
        metric=schema.metric,
        features=list(schema.features),
        classes=schema.classes,
        chosen=best.name,
        candidates=_records(fitted, blend, best),
        validation=shipped.validation,
        parity=shipped.parity,
        parity_failures=shipped.failures,
        onnx=describe_onnx(model_bytes, sha256, shipped.session),
        calibration=shipped.calibration,
        onnx_input_names=onnx_input_names(schema.features),
        training=TrainingInfo(
            seconds=round(time.perf_counter() - started, 3),
            load_seconds=round(load_seconds, 3),
            export_seconds=round(shipped.export_seconds, 3),
            parity_seconds=round(shipped.parity_seconds, 3),
            rows_train=train_split.rows,
            rows_validation=validation.rows,
            gpus=num_gpus,
            device=device_for(num_gpus),
            hyperparameters=hyperparameters.model_dump(mode="json"),
            libraries=library_versions(),
        ),
        created_at=datetime.now(UTC),
    )
    (paths.model / MODEL_CARD_FILE).write_text(card.model_dump_json(indent=2), encoding="utf-8")
    return card


def _records(
    fitted: Sequence[FittedCandidate], blend: Blend | None, shipped: FittedCandidate | Blend
) -> list[CandidateRecord]:
    """The card's candidates: each family's record, the blend's last; what shipped carries its
    refit (a blend's members each theirs)."""
    members = shipped.members if isinstance(shipped, Blend) else (shipped,)
    refitted = {m.name: m.record for m in members}
    records = [refitted.get(f.name, f.record) for f in fitted]
    if blend is not None:
        records.append(shipped.record if isinstance(shipped, Blend) else blend.record)
    return records


def _progress(schema: DatasetSchema, started: float, done: int, total: int, detail: str) -> None:
    report_progress(
        Progress(
            step="train",
            dataset=schema.dataset,
            done=done,
            total=total,
            unit="candidates",
            detail=detail,
            elapsed_seconds=round(time.perf_counter() - started, 1),
        )
    )


@dataclass(frozen=True)
class Shipped:
    """The candidate or blend that ships (refit, where training refits), its graph, and what it
    took to find it."""

    candidate: FittedCandidate | Blend
    model_bytes: bytes
    session: Any  # the onnxruntime session the parity check ran
    parity: ParityReport
    failures: list[ParityFailure]
    export_seconds: float
    parity_seconds: float
    calibration: CalibrationRecord | None
    validation: dict[str, JsonValue]  # the shipped graph's validation report (calibrated or not)


def export_first_passing(
    ranked: Sequence[FittedCandidate | Blend],
    schema: DatasetSchema,
    validation: Split,
    refit: Callable[[FittedCandidate], FittedCandidate] | None = None,
) -> Shipped:
    """Export and parity-check candidates in rank order; the first that passes ships. A blend
    is one graph of its members' exports (ensemble.py), checked against the native blend.

    A candidate that fails is recorded with its figures and the next one is tried, so a
    converter's imprecision on one model family costs the run its best model, not the run.

    With ``refit``, each candidate is refit (on train + validation: refit.py) just before its
    export, so only those tried pay for it; the temperature still comes from the train-only
    fit's validation probabilities, and parity compares the refit model with its own graph.

    Raises
    ------
    ParityError
        When no candidate passes, naming each one's figures.
    """
    failures: list[ParityFailure] = []
    export_seconds = parity_seconds = 0.0
    for selected in ranked:
        candidate: FittedCandidate | Blend = selected
        if refit is not None:  # a blend refits each member
            candidate = selected.refit(refit) if isinstance(selected, Blend) else refit(selected)
        clock = time.perf_counter()
        graph = (
            candidate.to_onnx(schema, to_onnx)
            if isinstance(candidate, Blend)
            else to_onnx(candidate.pipeline, schema)
        )
        exported = calibrate_export(
            candidate.pipeline, graph, schema, validation, temperature_from=selected.pipeline
        )
        model_bytes = exported.model_bytes
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        export_seconds += time.perf_counter() - clock
        clock = time.perf_counter()
        try:
            report = measure_parity(exported.native, session, schema, validation)
        except ParityError as exc:  # outputs of the wrong shape: nothing to compare
            failure = ParityFailure(candidate=candidate.name, reason=str(exc))
        else:
            if report.passed:
                return Shipped(
                    candidate,
                    model_bytes,
                    session,
                    report,
                    failures,
                    export_seconds,
                    parity_seconds + time.perf_counter() - clock,
                    exported.record,
                    exported.validation or candidate.record.validation,
                )
            reason = parity_failure_message(report, candidate.name)
            failure = ParityFailure(candidate=candidate.name, reason=reason, report=report)
        parity_seconds += time.perf_counter() - clock
        log.warning("parity failed, trying the next candidate: %s", failure.reason)
        failures.append(failure)
    raise ParityError(
        "; ".join(f.reason for f in failures) + "; no candidate passed, so no model ships"
    )


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "xgboost": xgboost.__version__,
        "lightgbm": lightgbm.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnxmltools": onnxmltools.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }


def summary(card: ModelCard) -> str:
    """The lines CloudWatch shows for a finished job."""
    lines = [
        f"sluice training: {card.dataset} {card.dataset_version} ({card.task}, "
        f"metric {card.metric}) on {card.training.rows_train} train / "
        f"{card.training.rows_validation} validation rows, device {card.training.device}",
    ]
    for candidate in card.candidates:
        mark = "*" if candidate.name == card.chosen else " "
        weighted = (
            "  balanced class weights"
            if candidate.class_weighting and candidate.class_weighting.chosen == "balanced"
            else ""
        )
        lines.append(
            f" {mark} {candidate.name:<8} {card.metric}={_figure(candidate.metric_value)}  "
            f"fit {candidate.fit_seconds:.1f} s{weighted}{_trials(candidate)}{_members(candidate)}"
        )
    chosen = card.chosen_candidate
    shipped = {m.name for m in chosen.members} or {chosen.name}  # a blend: each member's refit
    for candidate in card.candidates:
        if candidate.name in shipped and candidate.refit is not None:
            lines.append(_refit_line(candidate.name, candidate.refit, card.training.rows_train))
    parity = card.parity
    agreement = (
        "" if parity.label_agreement is None else f", labels agree {parity.label_agreement:.2%}"
    )
    lines.append(
        f"parity passed on {parity.rows} rows: max diff {parity.max_scaled_diff:.2g} "
        f"<= {parity.tolerance:g}{agreement}"
    )
    if card.parity_fallback:
        lines.append(f"parity fallback: {card.parity_fallback}")
    lines.append(
        f"model.onnx {card.onnx.bytes} bytes sha256 {card.onnx.sha256[:12]}; "
        f"total {card.training.seconds:.1f} s"
    )
    return "\n".join(lines)


def _refit_line(name: str, refit: RefitRecord, rows_train: int) -> str:
    rounds = (
        ""
        if refit.iterations is None
        else f": {refit.iterations} rounds ({refit.selected_iterations} early-stopped on "
        f"{rows_train} train rows)"
    )
    weighted = ", balanced class weights" if refit.class_weight == "balanced" else ""
    return (
        f"refit {name} on {refit.rows} train + validation rows{rounds}{weighted}, "
        f"{refit.seconds:.1f} s"
    )


def _trials(candidate: CandidateRecord) -> str:
    search = candidate.search
    if search is None:
        return ""
    return (
        f"  {len(candidate.trials)} trials ({search.selection}, stopped by "
        f"{search.stopped_by.replace('_', ' ')}), best #{search.best_trial}"
    )


def _members(candidate: CandidateRecord) -> str:
    if not candidate.members:
        return ""
    weights = ", ".join(f"{m.name} {m.weight:.2f}" for m in candidate.members)
    return f"  blend of {weights} ({candidate.params.get('selection')})"


def _figure(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point; returns the process exit code.

    Hyperparameters are read from ``hyperparameters.json``. SageMaker also appends them to the
    command line as ``--key value``; those arguments are accepted and ignored, so the file stays
    the one source.
    """
    argparse.ArgumentParser(add_help=False).parse_known_args(argv)
    environment = os.environ if env is None else env
    paths = SageMakerPaths.from_env(environment)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    if environment.get(PROGRESS_FILE_ENV):  # the local runner reads it back as the job runs
        route_progress(append_to(Path(environment[PROGRESS_FILE_ENV])))
    try:
        card = train(
            paths, load_hyperparameters(paths.hyperparameters_file), num_gpus_from_env(environment)
        )
    except Exception as exc:
        reason = failure_reason(exc)
        write_failure(paths, reason)
        log.exception("training failed: %s", reason)
        return 1
    print(summary(card), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
