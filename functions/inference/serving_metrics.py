"""Serving metrics, aggregated in the process and published as one CloudWatch EMF document per
dataset and model version per window, not one per request.

Per request the prediction route calls ``record`` (a few list appends under a lock: ≈ 2 µs); an
EMF document per request would cost ≈ 30 µs, twice the model's own run on one row. When the
window (60 s) has passed, the next invocation's ``maybe_flush`` prints the documents (stdout is
CloudWatch Logs, which turns EMF into metrics):

- ``Requests`` (count), ``PredictLatency`` (ms, up to 100 values per document: a sample of the
  window; CloudWatch computes percentiles from them), ``InstancesPerRequest`` (values);
- the prediction mix: ``Predictions`` per ``class`` for a classifier, ``PredictionP10/P50/P90``
  for a regressor;
dimensions ``dataset`` and ``model_version`` (and ``class``); and, dimension ``dataset`` only (the
errors alarm of infra/alarms.py watches it), ``Errors`` (predict requests answered 422 or 5xx:
the model exists but could not answer them) and ``ErrorRate`` (errors over all predict requests
of the window). Errors are counted where they are
mapped (functions/inference/errors.py: ``ClientErrors``, ``ServerErrors``).

A window still open when Lambda reclaims the environment is lost: these are operational metrics,
a sample by nature. With metrics disabled as Powertools decides it (``is_metrics_disabled``:
``POWERTOOLS_METRICS_DISABLED``, or ``POWERTOOLS_DEV`` without it) nothing is printed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from functions.shared.observability import emf_document, emit_emf

NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
DEFAULT_NAMESPACE = "Sluice"
WINDOW_SECONDS = 60.0
MAX_VALUES = 100  # EMF's limit of values per metric per document


@dataclass
class _Window:
    requests: int = 0
    latency_ms: list[float] = field(default_factory=list)
    instances: list[float] = field(default_factory=list)
    classes: Counter[str] = field(default_factory=Counter)
    values: list[float] = field(default_factory=list)


class ServingMetrics:
    def __init__(
        self,
        *,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        emit: Callable[[str], None] = emit_emf,
        enabled: bool | None = None,
        namespace: str | None = None,
    ) -> None:
        self._window_seconds = window_seconds
        self._clock, self._wall, self._emit = clock, wall, emit
        self.enabled = (not is_metrics_disabled()) if enabled is None else enabled
        self.namespace = namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._errors: Counter[str] = Counter()
        self._opened = clock()

    def record(
        self,
        dataset: str,
        model_version: str,
        seconds: float,
        instances: int,
        predictions: Sequence[Any],
    ) -> None:
        if not self.enabled:
            return
        with self._lock:
            window = self._windows.get((dataset, model_version))
            if window is None:
                window = self._windows[(dataset, model_version)] = _Window()
            window.requests += 1
            if len(window.latency_ms) < MAX_VALUES:
                window.latency_ms.append(seconds * 1000.0)
                window.instances.append(float(instances))
            for prediction in predictions:
                if isinstance(prediction, dict):
                    window.classes[str(prediction.get("label"))] += 1
                else:
                    window.values.append(float(prediction))

    def record_error(self, dataset: str) -> None:
        """A predict request for ``dataset`` answered 422 or 5xx."""
        if not self.enabled:
            return
        with self._lock:
            self._errors[dataset] += 1

    def maybe_flush(self) -> int:
        """Print the documents of a window that has run its time; returns how many."""
        if not self.enabled or self._clock() - self._opened < self._window_seconds:
            return 0
        return self.flush()

    def flush(self) -> int:
        with self._lock:
            windows, self._windows = self._windows, {}
            errors, self._errors = self._errors, Counter()
            self._opened = self._clock()
        documents = [doc for key, window in windows.items() for doc in self._documents(key, window)]
        answered: Counter[str] = Counter()
        for (dataset, _), window in windows.items():
            answered[dataset] += window.requests
        timestamp = int(self._wall() * 1000)
        for dataset in sorted(set(answered) | set(errors)):
            failed = errors[dataset]
            documents.append(
                emf_document(
                    self.namespace,
                    timestamp,
                    ["dataset"],
                    [{"Name": "Errors", "Unit": "Count"}, {"Name": "ErrorRate", "Unit": "None"}],
                    {
                        "dataset": dataset,
                        "Errors": failed,
                        "ErrorRate": failed / (failed + answered[dataset]),
                    },
                )
            )
        for document in documents:
            self._emit(json.dumps(document, separators=(",", ":")))
        return len(documents)

    def _documents(self, key: tuple[str, str], window: _Window) -> list[dict[str, Any]]:
        dataset, version = key
        timestamp = int(self._wall() * 1000)
        base = {"dataset": dataset, "model_version": version}
        metrics: list[dict[str, str]] = [
            {"Name": "Requests", "Unit": "Count"},
            {"Name": "PredictLatency", "Unit": "Milliseconds"},
            {"Name": "InstancesPerRequest", "Unit": "Count"},
        ]
        values: dict[str, Any] = {
            "Requests": window.requests,
            "PredictLatency": window.latency_ms,
            "InstancesPerRequest": window.instances,
        }
        if window.values:
            p10, p50, p90 = np.quantile(np.asarray(window.values), [0.1, 0.5, 0.9]).tolist()
            for name, value in (
                ("PredictionP10", p10),
                ("PredictionP50", p50),
                ("PredictionP90", p90),
            ):
                metrics.append({"Name": name, "Unit": "None"})
                values[name] = value
        documents = [
            emf_document(
                self.namespace, timestamp, ["dataset", "model_version"], metrics, {**base, **values}
            )
        ]
        for label, count in sorted(window.classes.items()):
            documents.append(
                emf_document(
                    self.namespace,
                    timestamp,
                    ["dataset", "model_version", "class"],
                    [{"Name": "Predictions", "Unit": "Count"}],
                    {**base, "class": label, "Predictions": count},
                )
            )
        return documents
