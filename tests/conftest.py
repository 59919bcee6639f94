"""Shared test setup: Powertools in test mode, fake AWS credentials, no real AWS ever."""

from __future__ import annotations

import os

# Set before any handler module is imported: these are read at import time.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "SluiceTest")
os.environ.setdefault("POWERTOOLS_DEV", "false")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_SESSION_TOKEN"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)


from collections.abc import Iterator

import pytest

from functions.shared.observability import metrics
from tests.models import KINDS, TrainedModel, train_model


@pytest.fixture(autouse=True)
def _no_leftover_metrics() -> Iterator[None]:
    """Every test starts and ends with the shared Metrics object empty: a test that maps an error
    outside a handler's ``log_metrics`` (which flushes) leaves a metric that a later test on the
    same worker would otherwise find in its EMF document (the order depends on xdist)."""
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedModel]:
    """One small real model per kind (binary, multiclass, regression), trained once per session."""
    return {kind: train_model(tmp_path_factory.mktemp(f"model-{kind}"), kind) for kind in KINDS}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup` (make test), a module's tests share one worker, so
    its module fixtures (a trained model, a moto server, a synthesized app) are built once; the
    infra folder is one group, since its synths and layer builds share `.build/` and the
    session-scoped synthesized app."""
    for item in items:
        path = item.path.relative_to(config.rootpath).as_posix()
        group = "infra" if path.startswith("tests/infra/") else path
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A 300-column classifier (linear, ≈ 1 s): the width at which the 1 MiB body, not the
    instance limit, decides how many instances fit in one request."""
    from functions.training.script_mode import Hyperparameters
    from tests.datasets import synthetic, write_dataset_version

    return train_model(
        tmp_path_factory.mktemp("model-wide"),
        "wide",
        Hyperparameters(candidates=("linear",), max_trials=1),
        generate=lambda root: write_dataset_version(
            root,
            synthetic(
                400,
                task="classification",
                metric="accuracy",
                n_numeric=300,
                n_categorical=0,
                name="wide",
            ),
        ),
    )
