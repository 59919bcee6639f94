"""Live quality: the live model's predictions against the truth its clients report.

For one dataset, run by the drift job right after the drift measurement:

1. Feedback received in the last ``window_hours`` is read (``<dataset>/feedback/dt=…/hr=…/``,
   written by functions/inference/feedback.py). An instance reported more than once counts once,
   with its latest report: by ``received_at``, then by object key, then by line.
2. Capture records of the last ``window_hours + CAPTURE_LEAD_HOURS`` are read
   (``<dataset>/capture/…``, functions/inference/capture.py): a prediction precedes its feedback,
   by up to a day here, so the capture window starts a day earlier.
3. The two are joined on ``(request_id, index)``. An item is **matched** when the capture holds
   the live version's prediction for it; **unmatched** when the capture holds no usable
   prediction for it, which is the common case: capture keeps a random sample of requests
   (``CAPTURE_SAMPLE_RATE``, 10 % by default), so only that share of feedback can ever match.
   The sample is random, so the matched items estimate the live model's quality without bias;
   they are just fewer. Items answered by another version (before a promotion) are counted as
   ``other_version`` and left out.
4. A classifier's quality is its accuracy (the captured label equals the reported one, both as
   strings), a regressor's its RMSE. ``drop`` is the relative degradation against the same
   metric of the same version on the test split at evaluation (the registry record when its
   contract metric is that metric, else the challenger's report in ``evaluation.json``):
   ``(offline - live) / offline`` for accuracy, ``(live - offline) / offline`` for RMSE.

Under ``MIN_MATCHED`` matched items nothing is measured (status ``skipped``, with the reason)
and nothing is published: missing data is how an alarm sees "no feedback". A measurement is
written to ``<dataset>/quality/<UTC minute>/report.json`` and ``<dataset>/quality/latest.json``;
the caller publishes ``QualityOutcome.metrics()``.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from functions.shared import layout
from functions.shared.features import normalise_category
from functions.shared.model_card import ModelCard
from functions.shared.registry import ModelRegistry, ModelVersionNotFoundError
from functions.shared.storage import ObjectStore, parse_s3_uri, s3_uri

WINDOW_HOURS = 24
CAPTURE_LEAD_HOURS = 24
MIN_MATCHED = 30

QualityMetric = Literal["accuracy", "rmse"]
METRIC_NAMES: dict[QualityMetric, str] = {"accuracy": "LiveAccuracy", "rmse": "LiveRMSE"}

# (request_id, index): one predicted instance.
Key = tuple[str, int]


class QualityOutcome(BaseModel):
    """What one run found for one dataset; JSON-serialisable (the local stack appends it to its
    drift log)."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    status: Literal["measured", "skipped"]
    reason: str
    model_version: int | None = None
    metric: QualityMetric | None = None
    value: float | None = None  # live accuracy or RMSE over the matched items
    offline_value: float | None = None  # the same metric on the test split at evaluation
    drop: float | None = None  # relative degradation; positive is worse
    feedback: int = 0  # distinct instances reported in the window
    matched: int = 0
    unmatched: int = 0
    other_version: int = 0
    window_hours: int = WINDOW_HOURS
    at: datetime | None = None
    report_uri: str | None = None

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """The CloudWatch metrics to publish, ``(name, dimensions, value)``, dimension
        ``dataset`` only: ``LiveAccuracy`` or ``LiveRMSE``, ``FeedbackMatched``,
        ``FeedbackUnmatched`` and, when the offline score is known, ``LiveQualityDrop``.
        Nothing unless measured."""
        if self.status != "measured" or self.metric is None or self.value is None:
            return []
        dims = {"dataset": self.dataset}
        out = [
            (METRIC_NAMES[self.metric], dims, self.value),
            ("FeedbackMatched", dict(dims), float(self.matched)),
            ("FeedbackUnmatched", dict(dims), float(self.unmatched)),
        ]
        if self.drop is not None:
            out.append(("LiveQualityDrop", dict(dims), self.drop))
        return out


def run_quality(
    store: ObjectStore,
    registry: ModelRegistry,
    *,
    artifacts_bucket: str,
    dataset: str,
    now: datetime,
    window_hours: int = WINDOW_HOURS,
    min_matched: int = MIN_MATCHED,
) -> QualityOutcome:
    """Measure the live model's quality on the feedback of the last ``window_hours``."""
    base = {"dataset": dataset, "window_hours": window_hours, "at": now.astimezone(UTC)}
    live = registry.live(dataset)
    if live is None:
        return QualityOutcome(**base, status="skipped", reason="no live model")
    card = ModelCard.model_validate_json(store.get_bytes(*parse_s3_uri(live.card_uri)))
    metric: QualityMetric = "accuracy" if card.task == "classification" else "rmse"
    base |= {"model_version": live.version, "metric": metric}
    feedback = latest_feedback(store, artifacts_bucket, dataset, now, window_hours)
    if not feedback:
        return QualityOutcome(
            **base, status="skipped", reason=f"no feedback in the last {window_hours} h"
        )
    predictions = captured_predictions(
        store, artifacts_bucket, dataset, set(feedback), now, window_hours + CAPTURE_LEAD_HOURS
    )
    scores: list[float] = []
    other_version = 0
    for key, actual in feedback.items():
        found = predictions.get(key)
        if found is not None and found[0] != str(live.version):
            other_version += 1
            continue
        score = None if found is None else _score(card.task, found[1], actual)
        if score is not None:
            scores.append(score)
    matched = len(scores)
    counts = {
        "feedback": len(feedback),
        "matched": matched,
        "unmatched": len(feedback) - matched - other_version,
        "other_version": other_version,
    }
    if matched < min_matched:
        return QualityOutcome(
            **base,
            **counts,
            status="skipped",
            reason=f"{matched} of {len(feedback)} feedback items matched a captured prediction "
            f"of version {live.version}; at least {min_matched} are needed",
        )
    mean = math.fsum(scores) / matched
    value = mean if metric == "accuracy" else math.sqrt(mean)
    offline = offline_score(store, registry, dataset, live.version, metric)
    outcome = QualityOutcome(
        **base,
        **counts,
        status="measured",
        reason=f"{metric} {value:.4g} of version {live.version} on {matched} matched feedback "
        f"items of the last {window_hours} h",
        value=value,
        offline_value=offline,
        drop=quality_drop(metric, value, offline),
    )
    return _write_reports(store, artifacts_bucket, outcome, now)


def quality_drop(metric: QualityMetric, live: float, offline: float | None) -> float | None:
    """The relative degradation from ``offline`` to ``live`` (positive: worse), or None when
    the offline score is unknown or zero."""
    if offline is None or not offline > 0:
        return None
    return (offline - live) / offline if metric == "accuracy" else (live - offline) / offline


def offline_score(
    store: ObjectStore, registry: ModelRegistry, dataset: str, version: int, metric: QualityMetric
) -> float | None:
    """The version's ``metric`` on the test split at evaluation, or None if not recorded."""
    try:
        record = registry.get(dataset, version)
    except ModelVersionNotFoundError:
        return None
    if record.metric == metric:
        return record.metric_value
    bucket, key = parse_s3_uri(record.report_uri)
    if store.head(bucket, key) is None:
        return None
    try:
        value = json.loads(store.get_bytes(bucket, key))["challenger"]["report"][metric]
    except (ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def latest_feedback(
    store: ObjectStore, bucket: str, dataset: str, now: datetime, window_hours: int
) -> dict[Key, Any]:
    """The latest ``actual`` reported for each instance in ``[now - window_hours, now]``."""
    start = now - timedelta(hours=window_hours)
    reports: list[tuple[str, str, int, Key, Any]] = []
    for key, number, record in _records(
        store, bucket, dataset, now, window_hours, layout.feedback_hour_prefix
    ):
        try:
            received = _parse_time(record["received_at"])
            instance = (str(record["request_id"]), int(record["index"]))
            actual = record["actual"]
        except (KeyError, TypeError, ValueError):
            continue
        if start <= received <= now:
            reports.append((record["received_at"], key, number, instance, actual))
    reports.sort(key=lambda r: r[:3])
    return {instance: actual for _, _, _, instance, actual in reports}


def captured_predictions(
    store: ObjectStore, bucket: str, dataset: str, wanted: set[Key], now: datetime, hours: int
) -> dict[Key, tuple[str, Any]]:
    """``(model_version, prediction)`` of each wanted instance captured in the last ``hours``."""
    start = now - timedelta(hours=hours)
    found: dict[Key, tuple[str, Any]] = {}
    for _, _, record in _records(store, bucket, dataset, now, hours, layout.capture_hour_prefix):
        try:
            instance = (str(record["request_id"]), int(record["index"]))
            if instance not in wanted or not start <= _parse_time(record["at"]) <= now:
                continue
            found[instance] = (str(record["model_version"]), record["prediction"])
        except (KeyError, TypeError, ValueError):
            continue
    return found


def _records(
    store: ObjectStore,
    bucket: str,
    dataset: str,
    now: datetime,
    hours: int,
    hour_prefix: Callable[[str, datetime], str],
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(object key, line number, record)`` of every gzip'd JSON Lines object in the hourly
    partitions from ``now`` back ``hours`` hours."""
    for hours_back in range(hours + 1):
        prefix = hour_prefix(dataset, now - timedelta(hours=hours_back))
        for info in store.list(bucket, prefix):
            lines = gzip.decompress(store.get_bytes(bucket, info.key)).splitlines()
            for number, line in enumerate(lines):
                try:
                    record = json.loads(line)
                except ValueError:  # a blank or torn line: the rest of the object still counts
                    continue
                if isinstance(record, dict):
                    yield info.key, number, record


def _score(task: str, prediction: Any, actual: Any) -> float | None:
    """1 or 0 (a classifier right or wrong), a squared error (a regressor), or None when the
    captured prediction or the reported value cannot be compared."""
    if task == "classification":
        label = prediction.get("label") if isinstance(prediction, dict) else prediction
        if label is None:
            return None
        # Normalised as classes are matched: a label captured as 1 or true equals "1" or "True".
        return 1.0 if normalise_category(label) == normalise_category(actual) else 0.0
    if not _is_number(prediction) or not _is_number(actual):
        return None
    return (float(prediction) - float(actual)) ** 2


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _write_reports(
    store: ObjectStore, bucket: str, outcome: QualityOutcome, now: datetime
) -> QualityOutcome:
    prefix = f"{layout.quality_prefix(outcome.dataset)}{now.astimezone(UTC):%Y-%m-%dT%H%MZ}/"
    reported = outcome.model_copy(update={"report_uri": s3_uri(bucket, f"{prefix}report.json")})
    body = reported.model_dump_json(indent=2).encode() + b"\n"
    store.put_bytes(bucket, f"{prefix}report.json", body)
    store.put_bytes(bucket, f"{layout.quality_prefix(outcome.dataset)}latest.json", body)
    return reported
