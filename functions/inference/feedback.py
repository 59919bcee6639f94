"""Feedback: the true label or value of instances the API predicted, for live quality.

A client that learns the truth later (the customer churned, the house sold for so much) posts it
with the ``request_id`` its predict answer carried and the instance's ``index`` in that request.
Each accepted request is written at once, as one gzip'd JSON Lines object, one line per item::

    <dataset>/feedback/dt=YYYY-MM-DD/hr=HH/<YYYYMMDDTHHMMSSZ>-<uuid4 hex>.jsonl.gz
    {"request_id": "c6af9ac6-...", "index": 0, "actual": "yes", "received_at": "2026-...Z"}

The drift job joins these lines with the capture sample on ``(request_id, index)``
(functions/drift/quality.py). ``actual`` is checked against the model answering for the dataset
now and written as predict writes it: a classifier's label is one of the model's classes,
normalised as training normalised the target (``"Yes"`` → ``"yes"``, ``true`` → ``"true"``,
``1.0`` → ``"1"``); a regressor's value is a finite number. A request is accepted or refused
whole, so a client never has to work out which items were kept.

Only the standard library, numpy (through ``features``), pydantic and Powertools are imported, as
the inference layer requires (tests/unit/test_inference_imports.py).
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from functions.inference.cache import ModelCache
from functions.inference.errors import (
    MAX_DETAILS,
    ErrorDetail,
    FeedbackUnavailableError,
    InvalidFeedbackError,
    MalformedRequestError,
    TooManyFeedbackItemsError,
    invalid_request,
    summary,
)
from functions.inference.logic import live_served
from functions.inference.models import (
    is_json_media_type,
    parse_json_object,
    unsupported_media_type,
)
from functions.shared.features import json_type, normalise_category
from functions.shared.layout import TELEMETRY_TAGS, feedback_hour_prefix
from functions.shared.model_card import ModelCard
from functions.shared.observability import logger
from functions.shared.storage import ObjectStore

MAX_FEEDBACK_ITEMS = 1000
MAX_REQUEST_ID = 128
CONTENT_TYPE = "application/gzip"
SUFFIX = ".jsonl.gz"
_EXAMPLE = '{"feedback": [{"request_id": "...", "index": 0, "actual": ...}]}'
_MAX_CLASSES_SHOWN = 10


class FeedbackItem(BaseModel):
    """The truth about one predicted instance: the predict answer's request_id, the instance's
    index in that request (0 by default), and its true class or value."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    request_id: str = Field(
        min_length=1,
        max_length=MAX_REQUEST_ID,
        description="The predict answer's request_id (its x-amzn-RequestId header).",
    )
    index: int = Field(
        default=0, ge=0, description="The instance's position in that predict request."
    )
    actual: Annotated[
        Any,
        WithJsonSchema({"anyOf": [{"type": t} for t in ("string", "number", "boolean")]}),
    ] = Field(description="The true class (one of the model's classes) or the true value.")


class FeedbackRequest(BaseModel):
    """One to 1000 items, stored whole or not at all. Unknown keys are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feedback: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)


class FeedbackResponse(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accepted: int = Field(description="Items stored: all of the request's.")


def parse_feedback_request(body: str | None, content_type: str | None) -> FeedbackRequest:
    """A feedback request from the raw body, with the predict routes' refusals (415, 400, 413)
    and pydantic's errors mapped into the API's error format (422 ``invalid_request``).

    Raises
    ------
    UnsupportedMediaTypeError, PayloadTooLargeError, MalformedRequestError,
    TooManyFeedbackItemsError, InvalidRequestError
    """
    if not is_json_media_type(content_type):
        raise unsupported_media_type(content_type)
    if not body:
        raise MalformedRequestError(
            f"the request body is empty; send a JSON object such as {_EXAMPLE}"
        )
    data = parse_json_object(body, example=_EXAMPLE)
    items = data.get("feedback")
    if isinstance(items, list) and len(items) > MAX_FEEDBACK_ITEMS:
        raise TooManyFeedbackItemsError(
            f"feedback: {len(items)} items in one request, the limit is {MAX_FEEDBACK_ITEMS}; "
            "split the request"
        )
    try:
        return FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc.errors(), _describe) from None


def record_feedback(
    cache: ModelCache,
    store: ObjectStore,
    bucket: str | None,
    dataset: str,
    request: FeedbackRequest,
    *,
    max_index: int,
    now: datetime,
) -> FeedbackResponse:
    """Check every item against the model answering for ``dataset`` and store the request as
    one object in ``bucket``; nothing is stored unless every item is valid.

    ``max_index`` is the number of instances a predict request may hold: an index at or past it
    cannot name a predicted instance.

    Raises
    ------
    FeedbackUnavailableError
        No bucket is configured, or the write failed (nothing was stored; retry).
    ModelNotFoundError, ModelUnavailableError
        As for predict: the dataset has no model to check the items against.
    InvalidFeedbackError
        Naming every item at fault (up to ``MAX_DETAILS``).
    """
    if bucket is None:
        raise FeedbackUnavailableError(
            "feedback is not enabled in this deployment (FEEDBACK_BUCKET is not set)"
        )
    served = live_served(cache, dataset)
    actuals = check_feedback(served.card, served.version, request, max_index=max_index)
    key = feedback_key(dataset, now, uuid.uuid4().hex)
    try:
        data = encode_feedback(request, actuals, now)
        store.put_bytes(bucket, key, data, CONTENT_TYPE, tags=TELEMETRY_TAGS)
    except Exception as exc:
        logger.warning("feedback: storing %s failed", key, exc_info=exc)
        raise FeedbackUnavailableError(
            "the feedback could not be stored and none of it was recorded; retry later"
        ) from exc
    return FeedbackResponse(accepted=len(actuals))


def check_feedback(
    card: ModelCard, version: int, request: FeedbackRequest, *, max_index: int
) -> list[str | float]:
    """Each item's ``actual`` as the drift job compares it with a prediction: the class label
    (a string) for a classifier, a float for a regressor.

    Raises
    ------
    InvalidFeedbackError
        With one detail per fault, in item order.
    """
    actuals: list[str | float] = []
    problems: list[ErrorDetail] = []
    for position, item in enumerate(request.feedback):
        if item.index >= max_index:
            problems.append(
                ErrorDetail(
                    field=f"feedback[{position}].index",
                    message=f"{item.index} cannot name a predicted instance: a predict request "
                    f"holds at most {max_index} (indexes 0 to {max_index - 1})",
                )
            )
        actual, problem = _actual(card, version, item.actual)
        if problem is not None:
            problems.append(ErrorDetail(field=f"feedback[{position}].actual", message=problem))
        actuals.append(actual)
    if problems:
        shown = problems[:MAX_DETAILS]
        raise InvalidFeedbackError(summary(shown, len(problems)), shown)
    return actuals


def feedback_key(dataset: str, moment: datetime, unique: str) -> str:
    """The key of one request's feedback: its hour's partition, then ``<time, ISO 8601 basic,
    UTC>-<unique>.jsonl.gz``."""
    utc = moment.astimezone(UTC)
    return f"{feedback_hour_prefix(dataset, utc)}{utc:%Y%m%dT%H%M%SZ}-{unique}{SUFFIX}"


def encode_feedback(request: FeedbackRequest, actuals: list[str | float], now: datetime) -> bytes:
    """The object's body: one JSON line per item, in the request's order, gzip'd."""
    received_at = now.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    lines = [
        json.dumps(
            {
                "request_id": item.request_id,
                "index": item.index,
                "actual": actual,
                "received_at": received_at,
            },
            separators=(",", ":"),
        )
        for item, actual in zip(request.feedback, actuals, strict=True)
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def _actual(card: ModelCard, version: int, value: Any) -> tuple[str | float, str | None]:
    """``value`` as stored, or a message saying what to send instead."""
    if card.task == "classification":
        classes = card.classes or []
        if type(value) not in (str, int, float, bool):
            return (
                "",
                f"a class label (string, number or boolean) is required, got {json_type(value)}",
            )
        keys = card.class_keys
        label = normalise_category(value)
        if label not in keys:
            shown = ", ".join(json.dumps(c) for c in classes[:_MAX_CLASSES_SHOWN])
            more = ", …" if len(classes) > _MAX_CLASSES_SHOWN else ""
            return "", (
                f"{json.dumps(value)} is not a class of model version {version}; "
                f"send one of {shown}{more}"
            )
        return classes[keys.index(label)], None  # stored as the data spells the class
    if type(value) not in (int, float):
        return 0.0, f"the true value must be a number, got {json_type(value)}"
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        return 0.0, "the true value is outside the range of a 64-bit float"
    return number, None


def _describe(error: Any) -> str:
    """pydantic's error on a feedback body, in the API's words."""
    kind, loc = error["type"], error["loc"]
    last = loc[-1] if loc else None
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return "unknown field; a feedback request holds only 'feedback'"
        return "unknown field; a feedback item holds 'request_id', 'index' and 'actual'"
    if kind == "too_short" and loc == ("feedback",):
        return "must hold at least one item"
    if kind == "list_type":
        return "must be a list of feedback items"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return 'must be an object such as {"request_id": "...", "index": 0, "actual": ...}'
    if last == "request_id":
        return (
            f"must be a string of 1 to {MAX_REQUEST_ID} characters: the request_id of the "
            "predict answer"
        )
    if last == "index":
        return "must be a non-negative integer: the instance's position in the predict request"
    return str(error.get("msg", kind))
