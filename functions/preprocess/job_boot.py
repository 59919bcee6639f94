"""The processing container's entry point (``python3 -m functions.preprocess.job_boot``, the code
zip on ``PYTHONPATH``): installs the part job's pinned requirements (``job-requirements.txt``)
when the image lacks them, then runs the job. Only the standard library is imported until then.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import subprocess
import sys
import tempfile

NEEDED = ("numpy", "pandas", "pyarrow", "pydantic", "aws_lambda_powertools", "boto3")


def missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install() -> None:
    pins = importlib.resources.files("functions.preprocess").joinpath("job-requirements.txt")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as out:
        out.write(pins.read_text())
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "-r", out.name],
        check=True,
    )


def main() -> int:
    if missing():
        install()
    from functions.preprocess.part_job import main as run_job

    return run_job()


if __name__ == "__main__":
    sys.exit(main())
