"""``sluice up`` and its trainer under the signals an operator's machine sends: a terminal's Ctrl-C
(SIGINT to the whole process group), SIGKILL, and a restart after a trainer outlived its stack.
Real processes throughout: ``sluice up`` in a subprocess, a small dataset, linear-only training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from infra.cli import main as cli_main
from infra.local.stack import (
    DEAD_LETTER_FILE,
    PENDING_DIR,
    RUNS_FILE,
    UPLOADS_FILE,
    free_port,
    read_history,
)
from infra.local.trainers import TRAINERS_DIR, TrainerRecord, start_time
from infra.topology import Topology
from tests.builders import churn_frame, contract_bytes, csv_bytes
from tests.processes import ChildProcess, gone

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; PR_SET_PDEATHSIG")

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 120
TOPOLOGY = Topology(stage="local")
FAST_TRAINING = {"hyperparameters": {"candidates": "linear"}}
# What a resumed run's end must not print (the spurious error of issue 16, or any other)
ERROR_MARKS = ("ExecutionDoesNotExist", "not in the endpoint", "Traceback", '"ERROR"', "failed")


class Up(ChildProcess):
    """``sluice up`` leading its own process group, as a shell's foreground job."""

    def __init__(self, state_dir: Path) -> None:
        self.aws_port, self.api_port = free_port(), free_port()
        command = [
            sys.executable, "-m", "infra.cli", "up", "--state-dir", str(state_dir),
            "--aws-port", str(self.aws_port), "--api-port", str(self.api_port),
        ]  # fmt: skip
        super().__init__(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "POWERTOOLS_LOG_LEVEL": "WARNING"},
            new_session=True,
        )

    def read_until(self, prefix: str, times: int = 1) -> None:
        self.wait(
            lambda lines: sum(line.startswith(prefix) for line in lines) >= times,
            WAIT_SECONDS,
            timed_out=f"no {prefix!r} line; sluice up said",
            ended="sluice up ended early",
            error=AssertionError,
        )

    def upload(self) -> None:
        s3 = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.aws_port}", region_name=TOPOLOGY.region
        )
        bucket = TOPOLOGY.raw_bucket
        s3.put_object(
            Bucket=bucket, Key="churn/contract.json", Body=contract_bytes(training=FAST_TRAINING)
        )
        s3.put_object(
            Bucket=bucket, Key="churn/data/jan.csv", Body=csv_bytes(churn_frame(1500, seed=3))
        )

    def trainer(self) -> int:
        """The pid of the training subprocess once it runs (found in /proc, not in sluice's
        own pid files: this is what the kernel says is running)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            for pid in _children(self.process.pid):
                if "functions/training/train.py" in _cmdline(pid):
                    return pid
            assert self.process.poll() is None, f"sluice up ended:\n{self.said}"
            time.sleep(0.05)
        raise AssertionError(f"no trainer appeared; sluice up said:\n{self.said}")

    def ctrl_c(self) -> str:
        """SIGINT to the whole process group, as a terminal sends it; the rest of what it says."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGUSR1)  # every thread's stack, to its stderr
            time.sleep(2.0)
            self.process.kill()
            raise AssertionError(
                f"sluice up did not stop {WAIT_SECONDS} s after Ctrl-C; it said (its threads' "
                f"stacks last):\n{self.said}{self.rest()}"
            ) from None
        return self.rest()

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _killed_while_training(state_dir: Path) -> int:
    """A first life: upload, wait until the trainer runs and the dataset version is saved, then
    SIGKILL ``sluice up`` alone (not its group). Returns the trainer's pid."""
    up = Up(state_dir)
    try:
        up.read_until("ready")
        up.upload()
        trainer = up.trainer()
        index = state_dir / "state" / "index.json"
        deadline = time.monotonic() + 30
        while "manifest.json" not in (index.read_text() if index.is_file() else ""):
            assert time.monotonic() < deadline, "the dataset version was never saved"
            time.sleep(0.02)
        assert start_time(trainer) is not None, "training ended before the kill"
    finally:
        up.end()
    assert list((state_dir / PENDING_DIR).glob("*.json")), "the run was not journaled"
    return trainer


def _runs(state_dir: Path) -> list[str]:
    return [run["status"] for run in read_history(state_dir, RUNS_FILE)]


def test_ctrl_c_to_the_process_group_lets_the_training_run_finish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given sluice up, in its own process group, training a run
    up = Up(tmp_path)
    try:
        up.read_until("ready")
        up.upload()
        trainer = up.trainer()
        # (which `sluice status` shows as running, not as a run waiting to resume)
        capsys.readouterr()
        assert cli_main(["status", "--state-dir", str(tmp_path), "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert start_time(trainer) is not None, "training ended before status was read"
        assert status["running"] and status["running"]["dataset"] == "churn", status
        assert status["pending"] == [], status
        assert [d["last_run"]["status"] for d in status["datasets"]] == ["running"], status
        # (and SIGUSR1 prints every thread's stack, the run worker's among them, and goes on)
        os.kill(up.process.pid, signal.SIGUSR1)
        up.read_until('  File "')
        up.wait(
            lambda lines: any("_run_worker" in line for line in lines),
            10,
            timed_out="no run worker in the stacks",
            ended="sluice up ended on SIGUSR1",
            error=AssertionError,
        )
        # When the terminal's Ctrl-C reaches the whole group, the trainer included
        rest = up.ctrl_c()
    finally:
        up.end()
    said = up.said + rest
    # Then sluice up stops cleanly after the run finished: recorded SUCCEEDED, never FAILED
    assert up.process.returncode == 0, said
    assert _runs(tmp_path) == ["SUCCEEDED"], said
    assert "FAILED" not in said and "KeyboardInterrupt" not in said, said
    assert "stopped" in said
    # and nothing is left to resume, and no trainer is left running
    assert not list((tmp_path / PENDING_DIR).glob("*.json"))
    assert not list((tmp_path / TRAINERS_DIR).glob("*.json"))
    assert start_time(trainer) is None


def test_sigkill_takes_the_trainer_along_and_the_resumed_run_ends_without_error(
    tmp_path: Path,
) -> None:
    # Given sluice up killed with SIGKILL while its trainer runs
    trainer = _killed_while_training(tmp_path)
    killed = time.monotonic()
    # Then the trainer is gone within two seconds of its parent
    assert gone(trainer, 2.0), f"trainer {trainer} outlived sluice up"
    print(f"trainer gone {time.monotonic() - killed:.3f} s after sluice up's SIGKILL was reaped")

    # When sluice up starts again and the resumed run ends
    up = Up(tmp_path)
    try:
        up.read_until("ready")
        assert "1 run(s) resumed" in up.said, up.said
        up.read_until("run ", times=2)  # started, then its end
        time.sleep(1.0)  # the run's end event reaches the retrain handler after that line
        rest = up.ctrl_c()
    finally:
        up.end()
    said = up.said + rest
    # Then the run succeeded once, and nothing about its end is an error
    assert _runs(tmp_path) == ["SUCCEEDED"], said
    assert [u["status"] for u in read_history(tmp_path, UPLOADS_FILE)] == ["started"]
    assert not [mark for mark in ERROR_MARKS if mark in said], said
    assert not read_history(tmp_path, DEAD_LETTER_FILE)
    assert up.process.returncode == 0, said


def test_a_restart_ends_a_trainer_that_outlived_its_stack_and_trains_once(tmp_path: Path) -> None:
    # Given a stack killed while training, and a trainer of that run still running afterwards
    # (one started without the death signal): its pid file, as the stack writes one
    trainer = _killed_while_training(tmp_path)
    assert gone(trainer, 2.0)
    job = TrainerRecord.model_validate_json(
        next((tmp_path / TRAINERS_DIR).glob("*.json")).read_bytes()
    ).job
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "functions/training/train.py"],
        start_new_session=True,
    )
    try:
        record = TrainerRecord(
            pid=orphan.pid, start_time=start_time(orphan.pid), job=job, argv=orphan.args
        )
        (tmp_path / TRAINERS_DIR / f"{job}.json").write_text(record.model_dump_json())

        # When sluice up starts again
        up = Up(tmp_path)
        try:
            up.read_until("ready")
            # Then the orphan was ended before the run resumed (no training beside it)
            assert orphan.poll() == -signal.SIGKILL, up.said
            assert f"pid {orphan.pid}" in up.said and "1 run(s) resumed" in up.said, up.said
            # and the resumed run trains once and ends
            up.read_until("run ", times=2)
            rest = up.ctrl_c()
        finally:
            up.end()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()
    said = up.said + rest
    assert _runs(tmp_path) == ["SUCCEEDED"], said
    assert up.process.returncode == 0, said
    assert not list((tmp_path / TRAINERS_DIR).glob("*.json"))


def test_sigint_stops_sluice_up_started_with_sigint_ignored(tmp_path: Path) -> None:
    # Given `sluice up` started as a script's background job starts it: a shell without job
    # control runs `cmd &` with SIGINT ignored, the child inherits that, and Python then installs
    # no KeyboardInterrupt for SIGINT
    command = [
        "bash", "-c", 'trap "" INT; exec "$@"', "bash",
        sys.executable, "-m", "infra.cli", "up", "--state-dir", str(tmp_path),
        "--aws-port", str(free_port()), "--api-port", str(free_port()),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POWERTOOLS_LOG_LEVEL": "WARNING"}
    up = ChildProcess(command, cwd=ROOT, env=env)
    try:
        up.wait_ready(WAIT_SECONDS)
        # When it is sent SIGINT (`kill -INT`, as the script stops it)
        up.process.send_signal(signal.SIGINT)
        # Then it stops as after a Ctrl-C, at once and cleanly
        up.process.wait(timeout=60)
    finally:
        if up.process.poll() is None:
            up.process.kill()
    rest = up.rest()
    assert up.process.returncode == 0, up.said + rest
    assert "stopped" in up.said + rest
