"""The batch job's container entry point (``python3 -m functions.batch.job_boot``, the code zip
on ``PYTHONPATH``): installs ``job-requirements.txt`` when the image lacks a package, then runs
the job (functions/shared/processing_job.py). Only the standard library is imported until
then."""

from __future__ import annotations

import sys

from functions.shared.processing_job import boot

if __name__ == "__main__":
    sys.exit(boot("functions.batch", "functions.batch.job"))
