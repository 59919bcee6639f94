"""The drift job: the live model's recent captured inputs against its training profile.

For one dataset: the live pointer names the model, its card the dataset version, whose
``profile.json`` (written by preprocessing) is the baseline. The capture objects of the last
``window_hours`` (``<dataset>/capture/dt=…/hr=…/``, written by the inference function) are read,
newest hours first, up to ``max_rows`` instances of the live version; the comparison
(``stats.drift``) and the reports go to ``<artifacts>/<dataset>/drift/<UTC minute>/report.json``
and ``report.html``, and ``latest.json`` points at them. The caller publishes
``DriftResult.metrics()``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from functions.drift.report import report_html, report_json
from functions.drift.stats import DriftResult, drift
from functions.shared import layout
from functions.shared.contract import FeatureKind
from functions.shared.model_card import ModelCard
from functions.shared.registry import ModelRegistry
from functions.shared.storage import ObjectNotFoundError, ObjectStore, parse_s3_uri, s3_uri

WINDOW_HOURS = 24
MAX_ROWS = 50_000


class DriftJobOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    dataset: str
    status: Literal["measured", "skipped", "failed"]
    reason: str
    missing_key: str | None = None  # a failure's object that was not there (s3://bucket/key)
    model_version: int | None = None
    live_rows: int = 0
    report_uri: str | None = None
    result: DriftResult | None = None


def run_drift(
    store: ObjectStore,
    registry: ModelRegistry,
    *,
    artifacts_bucket: str,
    dataset: str,
    now: datetime,
    window_hours: int = WINDOW_HOURS,
    max_rows: int = MAX_ROWS,
) -> DriftJobOutcome:
    live = registry.live(dataset)
    if live is None:
        return DriftJobOutcome(dataset=dataset, status="skipped", reason="no live model")
    card = ModelCard.model_validate_json(store.get_bytes(*parse_s3_uri(live.card_uri)))
    profile_key = f"{layout.version_prefix(dataset, card.dataset_version)}profile.json"
    if store.head(artifacts_bucket, profile_key) is None:
        return DriftJobOutcome(
            dataset=dataset,
            status="skipped",
            reason=f"no training profile at {s3_uri(artifacts_bucket, profile_key)}",
            model_version=live.version,
        )
    profile = json.loads(store.get_bytes(artifacts_bucket, profile_key))
    instances = _captured(store, artifacts_bucket, dataset, str(live.version), now, window_hours)
    instances = instances[:max_rows]
    if not instances:  # no report and no metric: missing data, which no alarm counts
        return DriftJobOutcome(
            dataset=dataset,
            status="skipped",
            reason=f"no captured requests of model version {live.version} in the last "
            f"{window_hours} h",
            model_version=live.version,
        )
    columns = _columns(card, instances)
    result = drift(
        profile,
        card.features,
        columns,
        dataset=dataset,
        dataset_version=card.dataset_version,
    )
    prefix = f"{dataset}/drift/{now.astimezone(UTC):%Y-%m-%dT%H%MZ}/"
    store.put_bytes(artifacts_bucket, f"{prefix}report.json", report_json(result))
    store.put_bytes(artifacts_bucket, f"{prefix}report.html", report_html(result), "text/html")
    report_uri = s3_uri(artifacts_bucket, f"{prefix}report.json")
    latest = {
        "report": report_uri,
        "html": s3_uri(artifacts_bucket, f"{prefix}report.html"),
        "model_version": live.version,
        "live_rows": len(instances),
        "level": result.level,
        "max_psi": result.max_psi,
        "at": now.astimezone(UTC).isoformat(),
    }
    store.put_bytes(artifacts_bucket, f"{dataset}/drift/latest.json", json.dumps(latest).encode())
    return DriftJobOutcome(
        dataset=dataset,
        status="measured",
        reason=f"{len(instances)} live instances of model version {live.version} compared "
        f"with dataset version {card.dataset_version}: level {result.level}",
        model_version=live.version,
        live_rows=len(instances),
        report_uri=report_uri,
        result=result,
    )


def run_drift_each(
    store: ObjectStore,
    registry: ModelRegistry,
    datasets: Iterable[str],
    *,
    artifacts_bucket: str,
    now: datetime,
    window_hours: int = WINDOW_HOURS,
    max_rows: int = MAX_ROWS,
) -> Iterator[tuple[DriftJobOutcome, Exception | None]]:
    """``run_drift`` for each dataset, one failure contained to its dataset: a broken dataset
    (its card or captures deleted, a corrupt object) gives a ``failed`` outcome naming the
    dataset and, when an object was missing, its key, with the exception for the caller's log;
    the datasets after it are still measured."""
    for dataset in datasets:
        try:
            outcome = run_drift(
                store,
                registry,
                artifacts_bucket=artifacts_bucket,
                dataset=dataset,
                now=now,
                window_hours=window_hours,
                max_rows=max_rows,
            )
        except Exception as exc:  # isolation is the point: the caller logs it
            missing = exc.uri if isinstance(exc, ObjectNotFoundError) else None
            yield (
                DriftJobOutcome(
                    dataset=dataset,
                    status="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                    missing_key=missing,
                ),
                exc,
            )
            continue
        yield outcome, None


def _captured(
    store: ObjectStore,
    bucket: str,
    dataset: str,
    model_version: str,
    now: datetime,
    window_hours: int,
) -> list[dict[str, Any]]:
    """Instances the live version answered in the window, newest hour first."""
    start = now - timedelta(hours=window_hours)
    found: list[dict[str, Any]] = []
    for hours_back in range(window_hours + 1):
        moment = now - timedelta(hours=hours_back)
        for info in sorted(
            store.list(bucket, layout.capture_hour_prefix(dataset, moment)),
            key=lambda i: i.key,
            reverse=True,
        ):
            if not info.key.rsplit("/", 1)[-1].startswith(f"{model_version}-"):
                continue
            for line in gzip.decompress(store.get_bytes(bucket, info.key)).splitlines():
                record = json.loads(line)
                at = datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
                if at >= start and str(record.get("model_version")) == model_version:
                    found.append(record["instance"])
    return found


def _columns(card: ModelCard, instances: list[dict[str, Any]]) -> dict[str, Any]:
    """One array per feature; a feature no instance carries (excluded from capture as PII) is
    left out, so drift reports it as a missing column rather than as all-missing values."""
    columns: dict[str, Any] = {}
    for spec in card.features:
        if not any(spec.name in instance for instance in instances):
            continue
        values = [instance.get(spec.name) for instance in instances]
        if spec.kind is FeatureKind.NUMERIC:
            columns[spec.name] = np.array(
                [np.nan if v is None else float(v) for v in values], dtype=np.float64
            )
        else:
            columns[spec.name] = np.array(values, dtype=object)
    return columns
