"""``sluice up``'s console holds its own lines only: the functions' JSON logs go to
``<state dir>/logs/``, and to the console as well with ``--verbose``. A real ``sluice up``, a real
request over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from infra.local.local_file import LOCAL_FILE
from infra.local.stack import free_port
from tests.processes import ChildProcess

ROOT = Path(__file__).resolve().parents[2]


def _refused_request(state_dir: Path) -> None:
    """A predict call for a model that does not exist: the inference function logs, in JSON,
    that it refused it (404)."""
    local = json.loads((state_dir / LOCAL_FILE).read_text())
    request = urllib.request.Request(
        f"{local['api_url']}/v1/models/nosuch:predict",
        data=b'{"instances": [{"a": 1}]}',
        headers={"content-type": "application/json", "x-api-key": local["api_key"]},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 404


@pytest.mark.parametrize("verbose", [False, True])
def test_the_console_holds_human_lines_and_the_json_logs_go_to_the_logs_folder(
    verbose: bool, tmp_path: Path
) -> None:
    # Given sluice up running (with or without --verbose)
    command = [sys.executable, "-m", "infra.cli", "up", "--state-dir", str(tmp_path)]
    command += ["--aws-port", str(free_port()), "--api-port", str(free_port())]
    command += ["--verbose"] if verbose else []
    # PYTHONFAULTHANDLER: a stop that hangs is aborted below, and says where each thread was
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    up = ChildProcess(command, cwd=tmp_path, env=env)
    try:
        up.wait_ready(60)
        # When a function logs (the API refuses a request for an unknown model)
        _refused_request(tmp_path)
    finally:
        up.process.send_signal(signal.SIGINT)
        try:
            up.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.process.send_signal(signal.SIGABRT)
            up.process.wait(timeout=30)
            pytest.fail(f"sluice up did not stop within 60 s of SIGINT:\n{up.said}{up.rest()}")
    console = up.said + up.rest()
    # Then the day's log file has the function's JSON line
    logs = sorted((tmp_path / "logs").glob("sluice-*.log"))
    assert len(logs) == 1
    logged = [json.loads(line) for line in logs[0].read_text().splitlines() if line[:1] == "{"]
    assert any(r.get("message") == "request refused" for r in logged), logs[0].read_text()
    # And the console names the folder once, and holds no JSON unless asked for it
    assert f"logs     {tmp_path / 'logs'}/" in console
    json_lines = [line for line in console.splitlines() if line.lstrip().startswith("{")]
    if verbose:
        assert any('"request refused"' in line for line in json_lines), console
    else:
        assert json_lines == [], console
        assert "Traceback" not in console
    assert up.process.returncode == 0
