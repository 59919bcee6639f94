"""Soak: ``sluice up`` for a long period with a ~1 GB dataset loaded, uploads that train, and
steady prediction traffic; its disk, open files and memory sampled from /proc must stay flat.

``python -m bench.soak --seconds 3600`` (issue 16's hour; ``make soak`` runs the shorter
``tests/soak/test_resources.py``, ``SLUICE_SOAK_SECONDS``, default 600). Everything is real:

- ``sluice up`` in its own process, on free ports, with a throwaway state directory and its own
  ``TMPDIR`` (so temp files it leaves behind are counted);
- the big dataset: a deterministic churn-shaped CSV of ``--dataset-mb`` (1000 MB, under
  preprocess's 1 GiB cap) generated in a temp directory and uploaded with boto3's managed
  transfer (multipart, as ``aws s3 cp`` does) to ``bulk/data/`` in the raw bucket, before
  ``bulk``'s contract: its event is refused (``contract_missing``) and the object stays, held
  by the endpoint (beyond 5 MiB moto keeps it in a deleted-but-open temp file) and saved by
  every snapshot from then on. It is not trained on: a 1 GB table does not preprocess and
  train in reasonable time on this 2-core machine (docs/decisions.md 2026-12-03);
- ``--uploads`` (10) small churn files, spread evenly over the period, each starting a run
  (preprocess, training in a subprocess, evaluate, gate, promote) over the dataset's files;
- one client thread predicting at ``--rate`` requests/s over a keep-alive connection.

Every ``--interval`` seconds the sampler reads, for the ``sluice up`` process and apart for
its descendants (training subprocesses): resident memory, open file descriptors, and the files
open but deleted with their bytes (``/proc/PID/fd`` links ending ``(deleted)``, sized with
``os.stat`` on the link); and the disk used under the state directory and the stack's
``TMPDIR``. Disk in the verdict is those two plus the deleted-but-open bytes.

Warm-up ends ``SETTLE_SECONDS`` (60, two of the stack's memory releases) after the big object
is in the snapshot and the first of the uploads has finished its run; the baseline is the
median of the first ``WINDOW`` (3) samples from then on taken with no child process (a
trainer's memory comes and goes with its run and is not the stack's), the end the median of
the last 3, taken once the period is over and every run has ended. The verdict: the stack's
RSS, fds and disk at the end are at most ``MAX_GROWTH`` (10 %) above the baseline, every upload
ran, no prediction failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.http import API_KEY, DATASET, HOST, PREDICT_PATH, BenchError, go_live, sluice_up_command
from tests.processes import ChildProcess

MIB = 1 << 20
MAX_GROWTH = 0.10  # issue 16: flat is at most +10 % after warm-up
# Warm-up lasts this long after the conditions below hold: two of the stack's memory releases
# (infra/local/memory.py), so the baseline is not memory the allocator is about to give back.
SETTLE_SECONDS = 2 * 30.0
BULK_DATASET = "bulk"
BULK_KEY = f"{BULK_DATASET}/data/bulk.csv"
UPLOAD_ROWS = 600
START_SECONDS = 120.0
RUN_SECONDS = 300.0  # one upload's run, from its put to its end in runs.jsonl
DEFAULT_SECONDS, DEFAULT_DATASET_MB, DEFAULT_UPLOADS = 3600.0, 1000, 10
DEFAULT_RATE, DEFAULT_INTERVAL = 20.0, 10.0
# Samples per median at each end: a socket or a pipe open at the instant of one sample (a boto3
# call, a capture flush) is noise, not growth; a leak moves the median as it moves every sample.
WINDOW = 3


# -- what is sampled ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessFigures:
    """One process, or several summed: resident memory, open fds, deleted-but-open files."""

    rss_bytes: int = 0
    fds: int = 0
    deleted_files: int = 0
    deleted_bytes: int = 0

    def __add__(self, other: ProcessFigures) -> ProcessFigures:
        return ProcessFigures(
            self.rss_bytes + other.rss_bytes,
            self.fds + other.fds,
            self.deleted_files + other.deleted_files,
            self.deleted_bytes + other.deleted_bytes,
        )


def process_figures(pid: int) -> ProcessFigures:
    """Read from /proc; a process that ended meanwhile counts as nothing."""
    deleted = deleted_bytes = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ProcessFigures()
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(" (deleted)"):
                deleted += 1
                deleted_bytes += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:  # closed since the listing
            continue
    rss_kib = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    return ProcessFigures(rss_kib * 1024, len(fds), deleted, deleted_bytes)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, theirs, ...), from each process's parent id."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name, in (), may hold spaces
        parents.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found.extend(children)
        frontier.extend(children)
    return found


def disk_bytes(root: Path) -> int:
    """Bytes of every file under ``root`` (apparent size; files vanishing meanwhile skipped)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


@dataclass(frozen=True)
class Sample:
    seconds: float  # since sluice up printed "ready"
    stack: ProcessFigures  # the sluice up process itself
    children: int
    children_figures: ProcessFigures
    state_bytes: int  # under the state directory (snapshot blobs and index, histories)
    tmp_bytes: int  # under the stack's TMPDIR
    runs: int  # runs ended so far (runs.jsonl)
    predictions: int  # prediction requests answered so far

    @property
    def disk_bytes(self) -> int:
        """What the stack holds on disk: its files, its temp files, its deleted-but-open ones."""
        return self.state_bytes + self.tmp_bytes + self.stack.deleted_bytes


def sample(pid: int, started: float, state_dir: Path, tmp_dir: Path, predictions: int) -> Sample:
    below = descendants(pid)
    children = ProcessFigures()
    for child in below:
        children = children + process_figures(child)
    return Sample(
        seconds=round(time.monotonic() - started, 1),
        stack=process_figures(pid),
        children=len(below),
        children_figures=children,
        state_bytes=disk_bytes(state_dir),
        tmp_bytes=disk_bytes(tmp_dir),
        runs=len(_history(state_dir, "runs.jsonl")),
        predictions=predictions,
    )


# -- the verdict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    what: str
    baseline: float  # the median of the first WINDOW idle samples once warm
    end: float  # the median of the last WINDOW idle samples
    peak: float  # the highest idle sample from the baseline on

    @property
    def ratio(self) -> float:
        return self.end / self.baseline if self.baseline else float("inf")

    @property
    def flat(self) -> bool:
        return self.end <= self.baseline * (1 + MAX_GROWTH)


@dataclass
class SoakReport:
    seconds: float
    dataset_bytes: int
    bulk_status: str  # what preprocess made of the big object's event
    uploads: list[dict[str, Any]]  # key, status, run name, run status
    samples: list[Sample]
    warm_index: int  # the first idle sample once warm
    predictions: Counter[int]  # status → count (0: the connection failed)
    prediction_failures: Counter[str] = field(default_factory=Counter)

    @property
    def baseline(self) -> Sample:
        return self.samples[self.warm_index]

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    def growth(self) -> list[Growth]:
        idle = [s for s in self.samples[self.warm_index :] if s.children == 0]
        first, last = idle[:WINDOW], idle[-WINDOW:]
        measures: dict[str, Callable[[Sample], float]] = {
            "RSS (MiB)": lambda s: s.stack.rss_bytes / MIB,
            "open fds": lambda s: float(s.stack.fds),
            "deleted-but-open (MiB)": lambda s: s.stack.deleted_bytes / MIB,
            "disk incl. deleted-open (MiB)": lambda s: s.disk_bytes / MIB,
        }
        return [
            Growth(
                what,
                statistics.median(map(measure, first)),
                statistics.median(map(measure, last)),
                max(map(measure, idle)),
            )
            for what, measure in measures.items()
        ]

    @property
    def failed_uploads(self) -> list[dict[str, Any]]:
        return [u for u in self.uploads if u.get("run_status") != "SUCCEEDED"]

    @property
    def prediction_errors(self) -> int:
        return sum(count for status, count in self.predictions.items() if status != 200)

    @property
    def passed(self) -> bool:
        return (
            all(g.flat for g in self.growth())
            and not self.failed_uploads
            and self.prediction_errors == 0
            and self.predictions[200] > 0
        )

    def table(self) -> str:
        head = (
            f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>4} {'del-open':>13} {'state MiB':>9} "
            f"{'tmp MiB':>7} {'children':>12} {'runs':>4} {'predicts':>8}"
        )
        lines = [head]
        for index, s in enumerate(self.samples):
            mark = " ← warm" if index == self.warm_index else ""
            lines.append(
                f"{s.seconds:7.0f} {s.stack.rss_bytes / MIB:8.0f} {s.stack.fds:4d} "
                f"{s.stack.deleted_files:3d} /{s.stack.deleted_bytes / MIB:6.0f} M "
                f"{s.state_bytes / MIB:9.0f} {s.tmp_bytes / MIB:7.1f} "
                f"{s.children:2d} /{s.children_figures.rss_bytes / MIB:5.0f} M "
                f"{s.runs:4d} {s.predictions:8d}{mark}"
            )
        return "\n".join(lines)

    def verdict(self) -> str:
        first = self.samples[0]
        lines = [
            f"soak: {self.seconds:.0f} s, dataset {self.dataset_bytes / 1e9:.2f} GB in "
            f"s3://…/{BULK_KEY} ({self.bulk_status}), {len(self.uploads)} uploads "
            f"({len(self.uploads) - len(self.failed_uploads)} runs SUCCEEDED), "
            f"{sum(self.predictions.values())} predictions "
            f"({self.prediction_errors} errors: {dict(self.predictions)})",
            f"start (t={first.seconds:.0f} s): RSS {first.stack.rss_bytes / MIB:.0f} MiB, "
            f"fds {first.stack.fds}, deleted-open {first.stack.deleted_bytes / MIB:.0f} MiB, "
            f"disk {first.disk_bytes / MIB:.0f} MiB",
            f"warm-up ends at t={self.baseline.seconds:.0f} s; end at t={self.end.seconds:.0f} s",
        ]
        for g in self.growth():
            lines.append(
                f"  {g.what:<30} {g.baseline:9.1f} → {g.end:9.1f} ({(g.ratio - 1) * 100:+.1f} %, "
                f"peak {g.peak:.1f}) {'flat' if g.flat else 'GREW'}"
            )
        lines.append(
            "verdict: "
            + ("flat (≤ +10 % after warm-up)" if self.passed else "NOT flat or not all ran")
        )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "dataset_bytes": self.dataset_bytes,
            "bulk_status": self.bulk_status,
            "uploads": self.uploads,
            "warm_index": self.warm_index,
            "predictions": {str(k): v for k, v in self.predictions.items()},
            "prediction_failures": dict(self.prediction_failures),
            "growth": [{**asdict(g), "flat": g.flat} for g in self.growth()],
            "passed": self.passed,
            "samples": [asdict(s) for s in self.samples],
        }


# -- the load -----------------------------------------------------------------------------------


def write_dataset(path: Path, target_bytes: int) -> int:
    """A churn-shaped CSV of about ``target_bytes`` (never over), the same bytes every time:
    chunks of ``churn_frame`` rows, seeded by their index, ids running on."""
    from tests.builders import churn_frame

    chunk_rows, written, start = 100_000, 0, 0
    with path.open("wb") as sink:
        header = True
        while True:
            frame = churn_frame(chunk_rows, seed=start // chunk_rows, start_id=start)
            data = frame.to_csv(index=False, header=header).encode()
            if written + len(data) > target_bytes:
                break
            sink.write(data)
            written += len(data)
            start += chunk_rows
            header = False
    return written


class Predictor(threading.Thread):
    """One client at a steady rate on a keep-alive connection, until stopped."""

    def __init__(self, port: int, body: bytes, rate: float) -> None:
        super().__init__(name="soak-predictor", daemon=True)
        self.port, self.body, self.period = port, body, 1.0 / rate
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self._stop_event = threading.Event()

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        headers = {"content-type": "application/json", "x-api-key": API_KEY}
        connection = http.client.HTTPConnection(HOST, self.port, timeout=30)
        due = time.monotonic()
        while not self._stop_event.is_set():
            try:
                connection.request("POST", PREDICT_PATH, self.body, headers)
                response = connection.getresponse()
                answer = response.read()
                self.statuses[response.status] += 1
                if response.status != 200:
                    self.failures[f"{response.status}: {answer[:200]!r}"] += 1
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # reconnects on the next request
                self.statuses[0] += 1
                self.failures[type(exc).__name__] += 1
            due += self.period
            self._stop_event.wait(max(0.0, due - time.monotonic()))
        connection.close()


def _history(state_dir: Path, name: str) -> list[dict[str, Any]]:
    from infra.local.stack import read_history

    return read_history(state_dir, name)


def _in_snapshot(state_dir: Path, bucket: str, key: str) -> bool:
    try:
        index = json.loads((state_dir / "state" / "index.json").read_bytes())
    except (OSError, ValueError):  # not written yet, or being replaced
        return False
    return key in index.get("buckets", {}).get(bucket, {})


class _Stack(ChildProcess):
    """``sluice up`` in its own process group, with its own TMPDIR."""

    def __init__(self, command: list[str], tmp_dir: Path) -> None:
        super().__init__(
            command,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING", "TMPDIR": str(tmp_dir)},
        )

    def wait_for(self, prefix: str, seconds: float) -> None:
        self.wait(
            lambda lines: any(line.startswith(prefix) for line in lines),
            seconds,
            timed_out=f"no {prefix!r} after {seconds:.0f} s",
            ended="sluice up ended early",
            error=BenchError,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def _running(command: list[str], tmp_dir: Path) -> Iterator[_Stack]:
    stack = _Stack(command, tmp_dir)
    try:
        stack.wait_for("ready", START_SECONDS)
        yield stack
    finally:
        stack.stop()


def soak(
    seconds: float = DEFAULT_SECONDS,
    *,
    dataset_mb: int = DEFAULT_DATASET_MB,
    dataset_file: Path | None = None,
    uploads: int = DEFAULT_UPLOADS,
    rate: float = DEFAULT_RATE,
    interval: float = DEFAULT_INTERVAL,
    log: Any = print,
) -> SoakReport:
    """Run the soak and return its samples and verdict (``log`` gets progress lines)."""
    import boto3
    from boto3.s3.transfer import TransferConfig

    from infra.local.stack import free_port
    from infra.topology import Topology
    from tests.builders import churn_frame, csv_bytes

    topology = Topology(stage="local")
    aws_port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="sluice-soak-") as tmp:
        root = Path(tmp)
        state_dir, stack_tmp = root / ".sluice", root / "tmp"
        stack_tmp.mkdir()
        clock = time.monotonic()
        dataset = dataset_file or root / "bulk.csv"
        if dataset_file is not None and dataset_file.is_file():  # made by an earlier soak
            dataset_bytes = dataset_file.stat().st_size
        else:
            dataset_bytes = write_dataset(dataset, dataset_mb * 1_000_000)
        took = time.monotonic() - clock
        log(f"soak: {dataset_bytes / 1e9:.2f} GB dataset ready in {took:.0f} s ({dataset})")
        command = sluice_up_command(state_dir, aws_port, api_port)
        # the drift job runs a few times in the period, as it would hourly in a day
        command += ["--drift-seconds", str(max(60, round(seconds / 4)))]
        with _running(command, stack_tmp) as stack:
            pid, started = stack.process.pid, time.monotonic()
            samples: list[Sample] = []
            predictor: Predictor | None = None

            def take() -> Sample:
                answered = predictor.answered if predictor else 0
                taken = sample(pid, started, state_dir, stack_tmp, answered)
                samples.append(taken)
                return taken

            take()
            s3 = boto3.client(
                "s3",
                endpoint_url=f"http://{HOST}:{aws_port}",
                region_name=topology.region,
                aws_access_key_id="local",
                aws_secret_access_key="local",
            )
            body = go_live(aws_port, api_port)  # churn's contract and first file; a live model
            take()
            clock = time.monotonic()
            s3.upload_file(
                str(dataset),
                topology.raw_bucket,
                BULK_KEY,
                Config=TransferConfig(multipart_chunksize=64 * MIB, max_concurrency=4),
            )
            if dataset_file is None:
                dataset.unlink()  # the bucket holds it now
            log(f"soak: dataset uploaded in {time.monotonic() - clock:.0f} s")
            predictor = Predictor(api_port, body, rate)
            predictor.start()
            spacing = seconds / uploads
            period_start = time.monotonic()
            done: list[dict[str, Any]] = []
            pending: list[dict[str, Any]] = []
            warm_index: int | None = None
            settled_from: float | None = None  # when the warm-up conditions first held
            next_sample = time.monotonic()
            while True:
                now = time.monotonic() - period_start
                if len(done) + len(pending) < uploads and now >= len(done + pending) * spacing:
                    index = len(done) + len(pending)
                    frame = churn_frame(UPLOAD_ROWS, seed=100 + index, start_id=10**7 * (index + 1))
                    key = f"{DATASET}/data/soak-{index:02d}.csv"
                    s3.put_object(Bucket=topology.raw_bucket, Key=key, Body=csv_bytes(frame))
                    pending.append({"key": key, "at": round(now, 1)})
                    log(f"soak: t={now:.0f} s upload {index + 1}/{uploads} {key}")
                for upload in list(pending):
                    if _upload_ended(state_dir, upload):
                        pending.remove(upload)
                        done.append(upload)
                        log(f"soak: {upload['key']}: {upload.get('run_status')}")
                    elif time.monotonic() - period_start - upload["at"] > RUN_SECONDS:
                        raise BenchError(f"{upload['key']}: no run ended in {RUN_SECONDS:.0f} s")
                if time.monotonic() >= next_sample:
                    taken = take()
                    next_sample += interval
                    if (
                        warm_index is None
                        and settled_from is None
                        and done
                        and _in_snapshot(state_dir, topology.raw_bucket, BULK_KEY)
                    ):
                        settled_from = taken.seconds
                    if (
                        warm_index is None
                        and settled_from is not None
                        and taken.seconds - settled_from >= SETTLE_SECONDS
                        and taken.children == 0
                    ):
                        warm_index = len(samples) - 1
                        log(f"soak: warm at t={taken.seconds:.0f} s")
                if now >= seconds and not pending and len(done) == uploads:
                    break
                time.sleep(0.5)
            predictor.stop()
            # the end: every run over, nothing training; one save cycle for what is in flight
            time.sleep(6)
            idle_at_end = 0
            while idle_at_end < WINDOW:
                idle_at_end += take().children == 0
                time.sleep(2)
            bulk = [r for r in _history(state_dir, "uploads.jsonl") if r.get("key") == BULK_KEY]
            if not bulk:
                raise BenchError(f"the {BULK_KEY} upload event was never handled")
            if warm_index is None:
                raise BenchError("never warm: the big object was never saved in the snapshot")
            return SoakReport(
                seconds=seconds,
                dataset_bytes=dataset_bytes,
                bulk_status=bulk[0]["status"],
                uploads=done,
                samples=samples,
                warm_index=warm_index,
                predictions=predictor.statuses,
                prediction_failures=predictor.failures,
            )


def _upload_ended(state_dir: Path, upload: dict[str, Any]) -> bool:
    """Once the upload's record names its run and the run has ended, note both on ``upload``."""
    records = [r for r in _history(state_dir, "uploads.jsonl") if r.get("key") == upload["key"]]
    if not records:
        return False
    record = records[0]
    upload["status"] = record["status"]
    if record["status"] != "started":
        upload["run_status"] = None
        return True
    runs = [r for r in _history(state_dir, "runs.jsonl") if r.get("name") == record["run_name"]]
    if not runs:
        return False
    upload["run"], upload["run_status"] = record["run_name"], runs[0]["status"]
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--dataset-mb", type=int, default=DEFAULT_DATASET_MB)
    parser.add_argument("--uploads", type=int, default=DEFAULT_UPLOADS)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="predictions per second")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="between samples")
    parser.add_argument(
        "--dataset", type=Path, help="keep the generated CSV here and reuse it on the next soak"
    )
    parser.add_argument("--json", type=Path, help="also write the samples and verdict here")
    args = parser.parse_args(argv)
    report = soak(
        args.seconds,
        dataset_mb=args.dataset_mb,
        dataset_file=args.dataset,
        uploads=args.uploads,
        rate=args.rate,
        interval=args.interval,
    )
    print(report.table())
    print(report.verdict())
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2, default=str))
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
