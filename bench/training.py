"""Time the whole training entry point on a synthetic classification dataset.

``python -m bench.training`` (100k and 1M rows; ``--quick``: 20k) or ``--rows N`` for one size.
What train() does inside a SageMaker job, after the channels are on disk: both candidates with
the default hyperparameters, ONNX export and the parity check. The floor is the chosen
candidate's own fit: what training costs with nothing around it. The GPU speed-up is quoted
from ``bench/gpu.json``, what ``python -m bench.gpu`` measured on a CUDA machine.
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

from bench.report import Figure, Section, render
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.train import train
from tests.datasets import synthetic, write_dataset_version

TARGET_ROWS, TARGET_SECONDS = 100_000, 60.0
GPU_RECORD = Path(__file__).with_name("gpu.json")  # python -m bench.gpu on a CUDA machine
NUMERIC, CATEGORICAL, CLASSES = 20, 5, 3


def measure(quick: bool = False, sizes: Sequence[int] | None = None) -> Section:
    section = Section(
        "training",
        f"Training entry point, CPU ({NUMERIC} numeric + {CATEGORICAL} categorical, "
        f"{CLASSES} classes)",
    )
    for rows in sizes or ((20_000,) if quick else (TARGET_ROWS, 1_000_000)):
        card, total = _train(rows)
        fits = {c.name: c.fit_seconds for c in card.candidates}
        target = rows == TARGET_ROWS
        section.add(
            Figure(
                f"train {rows // 1000}k rows: candidates + export + parity",
                "s",
                total,
                floor=fits[card.chosen],
                target=f"< {TARGET_SECONDS:.0f} s" if target else None,
                met=total < TARGET_SECONDS if target else None,
                note=f"floor: {card.chosen} fit alone; "
                + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in fits.items())
                + f", load {card.training.load_seconds:.1f}, export "
                f"{card.training.export_seconds:.1f}, parity {card.training.parity_seconds:.1f}",
            )
        )
    section.add(gpu_figure())
    return section


def gpu_figure(record: Path = GPU_RECORD) -> Figure:
    """The GPU speed-up as ``python -m bench.gpu`` recorded it on a CUDA machine (none here)."""
    if not record.exists():
        return Figure(
            "GPU speed-up at 1M rows (device=cuda)", "×", None, target="≥ 5×", note="not measured"
        )
    figures = json.loads(record.read_text())
    fits, when = figures["xgboost_fit"], figures["machine"]
    return Figure(
        f"GPU speed-up at {figures['rows'] // 1000}k rows (device=cuda)",
        "×",
        figures["speed_up"],
        better="higher",
        target="≥ 5×",
        met=figures["speed_up"] >= 5,
        note=f"bench.gpu, {when['date']}, on {when['platform']}, {when['cores']} cores "
        "(bench/gpu.json): "
        f"XGBoost fit {fits['cpu']['seconds']} s CPU, {fits['cuda_warm']['seconds']} s GPU; "
        "not measurable here (no CUDA)",
    )


def bench_version(rows: int, root: Path) -> SageMakerPaths:
    """The bench's synthetic table as a dataset version under ``root``, laid out as a training
    job's channels (bench.gpu trains on the same table)."""
    generated = synthetic(
        rows,
        task="classification",
        metric="f1_macro",
        n_numeric=NUMERIC,
        n_categorical=CATEGORICAL,
        n_classes=CLASSES,
        name="bench",
    )
    write_dataset_version(root / "version", generated)
    return SageMakerPaths.for_version(root / "version", root)


def _train(rows: int) -> tuple[Any, float]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        paths = bench_version(rows, Path(tmp))
        started = time.perf_counter()
        card = train(paths, Hyperparameters(), num_gpus=0)
        return card, time.perf_counter() - started


def run(rows: int) -> list[tuple[str, str]]:
    card, total = _train(rows)
    figures = [
        (
            "rows (train / validation)",
            f"{card.training.rows_train} / {card.training.rows_validation}",
        ),
        ("columns", f"{NUMERIC} numeric + {CATEGORICAL} categorical, {CLASSES} classes"),
        ("cores", str(os.cpu_count())),
        ("load seconds", f"{card.training.load_seconds:.2f}"),
    ]
    for candidate in card.candidates:
        chosen = " (chosen)" if candidate.name == card.chosen else ""
        detail = f"{candidate.fit_seconds:.2f}  {card.metric}={candidate.metric_value:.4f}{chosen}"
        if "best_iteration" in candidate.params:
            detail += f", {int(str(candidate.params['best_iteration'])) + 1} trees/class"
        figures.append((f"fit seconds: {candidate.name}", detail))
    figures += [
        ("export seconds", f"{card.training.export_seconds:.2f}"),
        (
            "parity seconds",
            f"{card.training.parity_seconds:.2f}  max diff {card.parity.max_abs_diff:.1e}",
        ),
        ("total seconds", f"{total:.2f}"),
        ("target (100k rows)", _verdict(rows, total)),
    ]
    return figures


def _verdict(rows: int, total: float) -> str:
    if rows != TARGET_ROWS:
        return f"< {TARGET_SECONDS:.0f} s applies to {TARGET_ROWS} rows only"
    return f"< {TARGET_SECONDS:.0f} s: {'met' if total < TARGET_SECONDS else 'MISSED'}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="one size, with the detailed table")
    parser.add_argument("--quick", action="store_true", help="20k rows")
    parser.add_argument("--json", action="store_true", help="print the section as JSON")
    args = parser.parse_args(argv)
    if args.rows and not args.json:
        figures = run(args.rows)
        width = max(len(name) for name, _ in figures)
        for name, value in figures:
            print(f"{name:<{width}}  {value}")
        return
    started = time.perf_counter()
    section = measure(args.quick, [args.rows] if args.rows else None)
    section.seconds = time.perf_counter() - started
    print(json.dumps(section.to_json()) if args.json else render(section))


if __name__ == "__main__":
    main()
