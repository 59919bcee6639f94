"""``sluice up`` on a port something else holds: it exits at once with one line naming the port
and the flag that moves it, rather than hang after werkzeug's "Address already in use"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on (127.0.0.1, as sluice up's default host)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("flag", ["--aws-port", "--api-port"])
def test_up_on_a_taken_port_exits_at_once_naming_the_port_and_flag(
    flag: str, taken_port: int, tmp_path: Path
) -> None:
    # Given a port in use, passed as the AWS port or the API port (the other one free)
    ports = {"--aws-port": free_port(), "--api-port": free_port(), flag: taken_port}
    command = [sys.executable, "-m", "infra.cli", "up", "--state-dir", str(tmp_path)]
    for name, port in ports.items():
        command += [name, str(port)]
    # When sluice up starts
    try:
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired as exc:  # the hang this test exists for
        pytest.fail(f"sluice up still running after {exc.timeout} s: {exc.output!r}")
    # Then it exits non-zero with one line that names the port and the flag that changes it
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode != 0
    assert len(lines) == 1, lines
    assert str(taken_port) in lines[0] and flag in lines[0]
    assert "in use" in lines[0]


def test_up_on_a_taken_console_port_stops_the_stack_and_names_the_flag(
    taken_port: int, tmp_path: Path
) -> None:
    # Given the console's port, asked for with --console-port, held by another program
    command = [sys.executable, "-m", "infra.cli", "up", "--state-dir", str(tmp_path)]
    command += ["--aws-port", str(free_port()), "--api-port", str(free_port())]
    command += ["--console-port", str(taken_port)]
    # When sluice up starts, it stops what it started and exits 2 naming the port and the flag
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert str(taken_port) in last and "--console-port" in last and "in use" in last
    assert "ready" not in done.stdout
