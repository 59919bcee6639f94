"""What the prediction API does, given a model cache: predict, report status, describe a model.

No HTTP here: functions take plain arguments and pydantic models, return response models and
raise the typed errors of ``functions.inference.errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.inference.cache import ModelCache, ServedModel
from functions.inference.errors import (
    InferenceError,
    ModelUnavailableError,
    PayloadTooLargeError,
    TooManyInstancesError,
    VersionRejectedError,
)
from functions.inference.models import (
    ExplainRequest,
    Explanations,
    FeatureInfo,
    MetadataResponse,
    MetricInfo,
    ModelListResponse,
    ModelState,
    ModelStatusResponse,
    ModelSummary,
    Prediction,
    PredictRequest,
    StatusDetail,
    VersionStatus,
    instances_that_fit,
)
from functions.shared.features import (
    instance_json_types,
    instance_schema,
    instances_to_columns,
    onnx_feeds,
)
from functions.shared.model_card import ModelCard
from functions.shared.registry import ModelStatus, ModelVersion
from functions.shared.scoring import Scores

if TYPE_CHECKING:  # explanations load on a first explain only (cache.explaining)
    from functions.shared.explanation import Contributions


def predict(
    cache: ModelCache,
    dataset: str,
    version: int | None,
    request: PredictRequest,
    *,
    max_instances: int,
    request_id: str,
) -> Prediction:
    """Score ``request.instances`` with the live model (``version=None``) or a pinned version.

    ``model_version`` in the response is the version that answered, which is not the live one
    while the live one is refused and the last good model stands in. ``request_id`` is echoed
    so that the client can send feedback about these predictions.

    Raises
    ------
    TooManyInstancesError, InvalidInstancesError, ModelNotFoundError, VersionNotFoundError,
    VersionRejectedError, ModelUnavailableError
    """
    _check_count(cache, dataset, version, request, max_instances)
    served = _served(cache, dataset, version)
    columns = instances_to_columns(served.card.features, request.instances)
    scores = served.scoring.score(columns)
    return Prediction(
        model_version=str(served.version),
        predictions=_predictions(served, scores),
        request_id=request_id,
    )


def explain(
    cache: ModelCache,
    dataset: str,
    version: int | None,
    request: ExplainRequest,
    *,
    max_instances: int,
    request_id: str,
) -> Explanations:
    """Predict ``request.instances`` as ``predict`` does, and explain each prediction: a base
    value and one exact contribution per feature that add up to the model's output (see
    functions/shared/explanation.py and docs/api.md); with ``classes="all"``, a classifier's
    every class too.

    Raises
    ------
    TooManyInstancesError, InvalidInstancesError, ModelNotFoundError, VersionNotFoundError,
    VersionRejectedError, ModelUnavailableError, ModelNotExplainableError
    """
    _check_count(cache, dataset, version, request, max_instances)
    served = _served(cache, dataset, version)
    explaining = cache.explaining(served)
    card = served.card
    classes = len(card.classes or [])
    if request.classes == "all" and classes:
        _check_every_class(len(request.instances), classes, len(card.features))
    columns = instances_to_columns(card.features, request.instances)
    feeds = onnx_feeds(card.features, columns, card.input_names)
    every: list[Contributions] = []
    if request.classes == "all":
        scores, contributions, every = explaining.run_classes(feeds)
    else:
        scores, contributions = explaining.run(feeds)
    by_feature = explaining.by_feature(contributions).tolist()
    by_class = [explaining.by_feature(c).tolist() for c in every]
    names = [f.name for f in card.features]
    output = explaining.table.output
    explanations = []
    for row, prediction in enumerate(_predictions(served, scores)):
        target = int(contributions.targets[row]) + (1 if classes == 2 else 0)
        probability = None
        if scores.probabilities is not None:
            probability = float(scores.probabilities[row, target])
        explanation: dict[str, Any] = {
            "prediction": prediction,
            "output": output,
            "explained_class": served.labels[target] if classes else None,
            "probability": probability,
            "base_value": float(contributions.base[row]),
            "output_value": float(contributions.margin[row]),
            "contributions": dict(zip(names, by_feature[row], strict=True)),
        }
        if every and scores.probabilities is not None:
            explanation["classes"] = [
                {
                    "explained_class": served.labels[k],
                    "probability": float(scores.probabilities[row, k]),
                    "base_value": float(each.base[row]),
                    "output_value": float(each.margin[row]),
                    "contributions": dict(zip(names, by_class[k][row], strict=True)),
                }
                for k, each in enumerate(every)
            ]
        explanations.append(explanation)
    return Explanations(
        model_version=str(served.version), explanations=explanations, request_id=request_id
    )


# Contributions one explain answer may carry with "classes": "all" (about 3 MB of JSON: half
# of a Lambda's 6 MB response), so that every class of many instances is refused up front.
MAX_CLASS_CONTRIBUTIONS = 100_000


def _check_every_class(instances: int, classes: int, features: int) -> None:
    fit = max(1, MAX_CLASS_CONTRIBUTIONS // (classes * features))
    if instances > fit:
        raise TooManyInstancesError(
            f'instances: {instances} instances with "classes": "all" would answer '
            f"{instances * classes * features} contributions ({classes} classes x {features} "
            f"features each), the limit is {MAX_CLASS_CONTRIBUTIONS}; send at most {fit} "
            "instances per request",
            max_instances=fit,
        )


def _check_count(
    cache: ModelCache,
    dataset: str,
    version: int | None,
    request: PredictRequest,
    max_instances: int,
) -> None:
    count = len(request.instances)
    if count > max_instances:
        fit = _fit(cache, dataset, version, max_instances)
        raise TooManyInstancesError(
            f"instances: {count} instances in one request, the limit is {max_instances}; "
            f"split the request{_fit_advice(fit)}",
            max_instances=None if fit is None else fit[1],
        )


def too_large(
    cache: ModelCache,
    dataset: str,
    version: int | None,
    error: PayloadTooLargeError,
    *,
    max_instances: int,
) -> PayloadTooLargeError:
    """The body-size refusal, told how many instances of this model fit in one request; the
    plain refusal when no model answers for ``dataset`` (unknown, retired, unavailable)."""
    fit = _fit(cache, dataset, version, max_instances)
    if fit is None:
        return error
    return PayloadTooLargeError(f"{error}{_fit_advice(fit)}", max_instances=fit[1])


def list_models(cache: ModelCache) -> ModelListResponse:
    """Every dataset in service with a live version: its version, task, metric and when it
    went live. Nothing that locates artifacts (URIs, hashes, run names) is listed."""
    models = []
    for dataset in cache.active_datasets():
        try:
            pointer = cache.pointer(dataset)
        except InferenceError:  # retired since the list was read
            continue
        if pointer is None:
            continue
        record = cache.record(dataset, pointer.version)
        card = cache.card(dataset, pointer.version, pointer.sha256, pointer.card_uri)
        models.append(
            ModelSummary(
                dataset=dataset,
                model_version=str(pointer.version),
                task=card.task,
                metric=MetricInfo(name=record.metric, value=record.metric_value),
                promoted_at=pointer.updated_at,
            )
        )
    return ModelListResponse(models=models)


def model_status(cache: ModelCache, dataset: str) -> ModelStatusResponse:
    """The live version's state, plus the version answering in its place if it is refused.

    Loads the live model if needed, so ``AVAILABLE`` means this environment has verified and
    opened it: the route doubles as a readiness check.
    """
    live = cache.live(dataset)
    pointer, served = live.pointer, live.served
    if live.failure is None and served is not None:
        return ModelStatusResponse(model_version_status=[_status(pointer.version, "AVAILABLE")])
    statuses = [_status(pointer.version, "END", "UNAVAILABLE", live.failure or "")]
    if served is not None:
        statuses.append(
            _status(
                served.version,
                "AVAILABLE",
                message=f"serving in place of live version {pointer.version}, "
                "which cannot be loaded",
            )
        )
    return ModelStatusResponse(model_version_status=statuses)


def version_status(cache: ModelCache, dataset: str, version: int) -> ModelStatusResponse:
    """One version's state, from its registry status (see docs/api.md for the mapping)."""
    record = cache.record(dataset, version)
    failure = cache.load_failure(dataset, version, record.sha256)
    if failure is not None and record.status is not ModelStatus.REJECTED:
        return ModelStatusResponse(
            model_version_status=[_status(version, "END", "UNAVAILABLE", failure)]
        )
    reason = f": {record.status_reason}" if record.status_reason else ""
    # A version the gate refused stays refused once an operator forced it live (and after).
    refused = ""
    if record.gate == "refused":
        why = f" ({'; '.join(record.gate_reasons)})" if record.gate_reasons else ""
        refused = f"the gate refused it{why}; an operator forced it live"
    match record.status:
        case ModelStatus.LIVE:
            status = _status(version, "AVAILABLE", message=refused)
        case ModelStatus.CANDIDATE:
            status = _status(
                version, "START", message="candidate awaiting the gate; served only when pinned"
            )
        case ModelStatus.RETIRED:
            refused = f"; {refused}" if refused else ""
            status = _status(
                version, "END", message=f"retired{reason}{refused}; served only when pinned"
            )
        case ModelStatus.REJECTED:
            status = _status(
                version, "END", "FAILED_PRECONDITION", f"rejected by the gate{reason}; never served"
            )
    return ModelStatusResponse(model_version_status=[status])


def metadata(cache: ModelCache, dataset: str, *, max_instances: int) -> MetadataResponse:
    """What a client needs to call the model that answers for the dataset now."""
    served = live_served(cache, dataset)
    card = served.card
    record = cache.record(dataset, served.version)
    return MetadataResponse(
        dataset=dataset,
        model_version=str(served.version),
        dataset_version=card.dataset_version,
        task=card.task,
        target=card.target,
        classes=card.classes,
        features=[
            FeatureInfo(name=f.name, kind=f.kind, json_types=list(instance_json_types(f)))
            for f in card.features
        ],
        metric=MetricInfo(name=record.metric, value=record.metric_value),
        created_at=card.created_at,
        sha256=served.sha256,
        max_instances=min(max_instances, instances_that_fit(card.features)),
        input_schema=input_schema(card),
    )


def input_schema(card: ModelCard) -> dict[str, Any]:
    """JSON Schema of one instance, as ``instances_to_columns`` enforces it."""
    return {
        "type": "object",
        "properties": {f.name: instance_schema(f) for f in card.features},
        "required": [f.name for f in card.features],
        "additionalProperties": False,
    }


def live_served(cache: ModelCache, dataset: str) -> ServedModel:
    """The model answering for the dataset now: the live version, or the last good one while
    the live one is refused.

    Raises
    ------
    ModelNotFoundError, ModelUnavailableError
    """
    live = cache.live(dataset)
    if live.served is None:
        raise ModelUnavailableError(
            f"the live model of '{dataset}' cannot be served and no earlier model can stand in: "
            f"{live.failure}"
        )
    return live.served


def _served(cache: ModelCache, dataset: str, version: int | None) -> ServedModel:
    return live_served(cache, dataset) if version is None else _pinned(cache, dataset, version)


def _fit(
    cache: ModelCache, dataset: str, version: int | None, max_instances: int
) -> tuple[ServedModel, int] | None:
    """The model that would answer and how many of its instances fit in one request; None
    when no model answers (the refusal then says nothing about fitting)."""
    try:
        served = _served(cache, dataset, version)
    except InferenceError:
        return None
    return served, min(max_instances, instances_that_fit(served.card.features))


def _fit_advice(fit: tuple[ServedModel, int] | None) -> str:
    if fit is None:
        return ""
    served, count = fit
    return (
        f"; model version {served.version} of '{served.dataset}' takes "
        f"{len(served.card.features)} features, so at most {count} instances fit in one "
        "request (max_instances)"
    )


def _pinned(cache: ModelCache, dataset: str, version: int) -> ServedModel:
    record: ModelVersion = cache.record(dataset, version)
    if record.status is ModelStatus.REJECTED:
        reason = f" ({record.status_reason})" if record.status_reason else ""
        raise VersionRejectedError(
            f"version {version} of '{dataset}' was rejected by the gate{reason} and is never served"
        )
    return cache.pinned(dataset, version)


def _predictions(served: ServedModel, scores: Scores) -> list[dict[str, Any]] | list[float]:
    if scores.values is not None:
        values: list[float] = scores.values.tolist()
        return values
    assert scores.codes is not None and scores.probabilities is not None
    classes = served.card.classes or []
    labels = served.labels
    return [
        {"label": labels[code], "probabilities": dict(zip(classes, row, strict=True))}
        for code, row in zip(scores.codes, scores.probabilities.tolist(), strict=True)
    ]


def _status(version: int, state: ModelState, code: str = "OK", message: str = "") -> VersionStatus:
    return VersionStatus(
        version=str(version),
        state=state,
        status=StatusDetail(error_code=code, error_message=message),
    )
