"""What every sluice SageMaker Processing job shares: where the container contract's paths are,
how a job says why it failed, how it boots in an image that lacks its packages.

The jobs (functions/preprocess/part_job.py, functions/batch/job.py) run in the CPU variant of the
training image with their function's code zip on ``PYTHONPATH``; their ``job_boot`` modules call
``boot`` first, which installs the job's pinned ``job-requirements.txt`` when the image lacks a
package. Only the standard library is imported here, so that ``boot`` runs before anything is
installed.

The local runner (infra/local/processing_runner.py) honours the same contract under another
root, ``SLUICE_OPT_ML``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

OPT_ML_ENV = "SLUICE_OPT_ML"  # the local runner's stand-in for /opt/ml
MESSAGE_LIMIT = 1024  # DescribeProcessingJob's ExitMessage keeps the first 1 KB
REQUIREMENTS_FILE = "job-requirements.txt"
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.M)


def opt_ml() -> Path:
    return Path(os.environ.get(OPT_ML_ENV, "/opt/ml"))


def under_opt_ml(path: str) -> Path:
    """A container path (``/opt/ml/...``) where this process sees it."""
    return opt_ml() / Path(path).relative_to("/opt/ml")


def peak_rss_bytes() -> int:
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def failed(exc: BaseException) -> int:
    """Say why the job failed where SageMaker reads it (``/opt/ml/output/message``, the first
    1 KB), print the trace for the job's log, and give the exit code 1."""
    message = opt_ml() / "output" / "message"
    message.parent.mkdir(parents=True, exist_ok=True)
    message.write_bytes(f"{type(exc).__name__}: {exc}".encode()[:MESSAGE_LIMIT])
    traceback.print_exc()
    return 1


def pins(package: str) -> dict[str, str]:
    """The distributions a job's ``job-requirements.txt`` (beside its package) pins."""
    text = importlib.resources.files(package).joinpath(REQUIREMENTS_FILE).read_text()
    return dict(_PIN.findall(text))


def missing(package: str) -> list[str]:
    """The pinned distributions this interpreter does not have at all (another version of one
    is used as it is: the image's own builds are left alone)."""
    absent = []
    for name in pins(package):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            absent.append(name)
    return absent


def boot(package: str, entry: str) -> int:
    """Install ``package``'s job requirements if any is missing, then run ``entry``'s ``main``
    (a module path), returning its exit code."""
    if missing(package):
        text = importlib.resources.files(package).joinpath(REQUIREMENTS_FILE).read_text()
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as out:
            out.write(text)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "-r", out.name],
            check=True,
        )
    run: Callable[[], int] = importlib.import_module(entry).main
    return run()
