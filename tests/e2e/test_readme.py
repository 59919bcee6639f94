"""README's local-stack example, run as written: the block a new user copies (``eval "$(sluice
env)"``, the AWS CLI, the sluice CLI, curl) goes through bash against a real ``sluice up``.

The lines are not rewritten: the test only gives them the directory they expect (``.venv/bin/
sluice`` and ``samples/`` relative to it) and an environment without AWS credentials, so the keys
``sluice env`` exports are the only ones the AWS CLI finds. Where no ``aws`` is installed (it is
not a project dependency: awscli pins the exact botocore of its own release), ``aws s3 cp`` runs
through a stand-in that makes the same PutObject with boto3 from the same environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local.stack import free_port
from tests.processes import ChildProcess

ROOT = Path(__file__).resolve().parents[2]
MARKER = 'eval "$(.venv/bin/sluice env)"'
START_SECONDS = 60
BLOCK_SECONDS = 150  # the block waits for a run: ≈ 10 s here, alone on 2 cores

# `aws s3 cp FILE s3://BUCKET/KEY` as the AWS CLI does it, for a machine without the AWS CLI.
AWS_STAND_IN = """\
import sys
from pathlib import Path

import boto3

if sys.argv[1:3] != ["s3", "cp"] or not sys.argv[4].startswith("s3://"):
    sys.exit(f"aws stand-in: only 's3 cp FILE s3://BUCKET/KEY', not {sys.argv[1:]}")
source, target = sys.argv[3], sys.argv[4]
bucket, _, key = target.removeprefix("s3://").partition("/")
boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=Path(source).read_bytes())
print(f"upload: {source} to {target}")
"""


def readme_block(marker: str) -> str:
    """The README's ```bash block that holds ``marker``."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"README.md has {len(found)} bash blocks with {marker!r}"
    return found[0]


def user_directory(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A checkout as the README's lines expect it, and a shell environment with no AWS keys."""
    home = tmp_path / "checkout"
    (home / ".venv" / "bin").mkdir(parents=True)
    (home / "samples").symlink_to(ROOT / "samples")
    sluice = home / ".venv" / "bin" / "sluice"
    sluice.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(ROOT))} "
        f'exec {shlex.quote(sys.executable)} -m infra.cli "$@"\n'
    )
    sluice.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if shutil.which("aws") is None:
        aws = tools / "aws"
        (tools / "aws_stand_in.py").write_text(AWS_STAND_IN)
        aws.write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {tools / "aws_stand_in.py"} "$@"\n'
        )
        aws.chmod(0o755)
    environment |= {
        "PATH": f"{tools}{os.pathsep}{environment.get('PATH', '')}",
        # no profile either: only what `sluice env` exports
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    return home, environment


def test_the_readme_local_stack_example_runs_as_written(tmp_path: Path) -> None:
    block = readme_block(MARKER)
    home, environment = user_directory(tmp_path)
    # Given `sluice up` running in that checkout (free ports: the README's defaults may be taken)
    ports = ["--aws-port", str(free_port()), "--api-port", str(free_port())]
    up = ChildProcess(
        [sys.executable, "-m", "infra.cli", "up", *ports],
        cwd=home,
        env=environment | {"PYTHONPATH": str(ROOT)},
    )
    try:
        up.wait_ready(START_SECONDS)
        # When the README's block runs in bash, line by line as written, stopping at a failure
        try:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=home,
                env=environment,
                capture_output=True,
                text=True,
                timeout=BLOCK_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the block ran past {exc.timeout} s; sluice up said:\n{up.said}")
    finally:
        up.process.send_signal(signal.SIGINT)
        up.process.wait(timeout=60)
    rest = up.rest()
    said = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nsluice up:\n{up.said}{rest}"
    # Then every line succeeds: the AWS CLI uploads with the keys `sluice env` exported
    assert done.returncode == 0, said
    for name in ("contract.json", "data/churn.csv"):
        uploaded = (
            f"upload: samples/churn/{name} to s3://sluice-raw-local-123456789012/churn/{name}"
        )
        assert uploaded in done.stdout, said
    # and `sluice models churn` lists version 1 live, passed by the gate
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["1*", "live", "passed"] in [row[:3] for row in rows], said
    # and curl's predict answers with a label and the class probabilities from version 1
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer.get("model_version") == "1", said
    [prediction] = answer["predictions"]
    assert prediction["label"] in ("yes", "no")
    assert set(prediction["probabilities"]) == {"no", "yes"}
    # and the stack's console stayed clean while curl -f hung up on each 404 of the wait
    assert "Traceback" not in rest, said
