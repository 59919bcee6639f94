"""The SageMaker training job's code (train.py is the entry point).

OpenMP threads that wait for work spin by default. LightGBM links the system libgomp, which
reads this variable once, when it loads: with it unset, a 2 000-row fit on 2 cores shared with
other processes took 27 s instead of 2.7 s (docs/decisions.md, 2026-12-03). Set here, before any
module of this package imports lightgbm; a value the caller set is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
