"""Feedback on in-memory fakes: the body parser, the checks against the live model's card, and
the one object each accepted request becomes."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from functions.inference.cache import ModelCache
from functions.inference.errors import (
    FeedbackUnavailableError,
    InvalidFeedbackError,
    InvalidRequestError,
    MalformedRequestError,
    ModelNotFoundError,
    TooManyFeedbackItemsError,
    UnsupportedMediaTypeError,
)
from functions.inference.feedback import (
    MAX_FEEDBACK_ITEMS,
    FeedbackRequest,
    feedback_key,
    parse_feedback_request,
    record_feedback,
)
from functions.shared.layout import TELEMETRY_TAGS, feedback_hour_prefix
from functions.shared.storage import ObjectStore
from tests.fakes import FailingObjectStore, InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, publish_live

NOW = datetime(2026, 11, 22, 10, 15, 30, 250000, tzinfo=UTC)
DATASET = "churn"
MAX_INDEX = 1000


class World:
    """A live model of one kind behind the model cache, and the store feedback goes to."""

    def __init__(self, model: TrainedModel) -> None:
        self.store = InMemoryObjectStore()
        self.registry = InMemoryRegistry()
        publish_live(self.store, self.registry, model, dataset=DATASET)
        self.cache = ModelCache(self.registry, self.store, ttl_seconds=5.0)

    def record(
        self,
        items: list[dict[str, Any]],
        *,
        bucket: str | None = ARTIFACTS,
        store: ObjectStore | None = None,
        dataset: str = DATASET,
    ) -> int:
        request = FeedbackRequest.model_validate({"feedback": items})
        response = record_feedback(
            self.cache,
            store or self.store,
            bucket,
            dataset,
            request,
            max_index=MAX_INDEX,
            now=NOW,
        )
        return response.accepted

    def stored(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Every feedback object: its key and its lines."""
        return [
            (
                key,
                [
                    json.loads(line)
                    for line in gzip.decompress(self.store.get_bytes(ARTIFACTS, key)).splitlines()
                ],
            )
            for key in self.store.keys(ARTIFACTS, f"{DATASET}/feedback/")
        ]


def _body(items: Any) -> str:
    return json.dumps({"feedback": items})


# --- parsing ------------------------------------------------------------------------------------


def test_a_well_formed_body_parses_with_index_defaulting_to_zero() -> None:
    request = parse_feedback_request(
        _body(
            [
                {"request_id": "r-1", "actual": "yes"},
                {"request_id": "r-1", "index": 4, "actual": 2.5},
            ]
        ),
        "application/json; charset=utf-8",
    )
    assert [(i.request_id, i.index, i.actual) for i in request.feedback] == [
        ("r-1", 0, "yes"),
        ("r-1", 4, 2.5),
    ]


@pytest.mark.parametrize(
    ("body", "field", "mentions"),
    [
        ({"feedback": []}, "feedback", "at least one item"),
        ({"feedback": {"request_id": "r"}}, "feedback", "list of feedback items"),
        ({"feedback": [3]}, "feedback[0]", "must be an object"),
        ({"items": []}, "feedback", "required"),
        ({"feedback": [{"request_id": "r", "actual": 1}], "extra": 1}, "extra", "only 'feedback'"),
        (
            {"feedback": [{"request_id": "r", "actual": 1, "label": 1}]},
            "feedback[0].label",
            "unknown field",
        ),
        ({"feedback": [{"index": 0, "actual": 1}]}, "feedback[0].request_id", "required"),
        ({"feedback": [{"request_id": "", "actual": 1}]}, "feedback[0].request_id", "1 to 128"),
        (
            {"feedback": [{"request_id": "r" * 129, "actual": 1}]},
            "feedback[0].request_id",
            "1 to 128",
        ),
        ({"feedback": [{"request_id": 7, "actual": 1}]}, "feedback[0].request_id", "string"),
        (
            {"feedback": [{"request_id": "r", "index": -1, "actual": 1}]},
            "feedback[0].index",
            "non-negative",
        ),
        (
            {"feedback": [{"request_id": "r", "index": "1", "actual": 1}]},
            "feedback[0].index",
            "integer",
        ),
        (
            {"feedback": [{"request_id": "r", "index": True, "actual": 1}]},
            "feedback[0].index",
            "integer",
        ),
        (
            {"feedback": [{"request_id": "r", "index": 1.0, "actual": 1}]},
            "feedback[0].index",
            "integer",
        ),
        ({"feedback": [{"request_id": "r"}]}, "feedback[0].actual", "required"),
    ],
)
def test_a_body_that_is_not_a_feedback_request_is_refused_naming_the_field(
    body: dict[str, Any], field: str, mentions: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        parse_feedback_request(json.dumps(body), None)
    assert any(d.field == field and mentions in d.message for d in refused.value.details), (
        refused.value.details
    )
    assert str(refused.value).startswith(f"{refused.value.details[0].field}: ")


def test_media_type_empty_and_broken_bodies_are_refused_before_any_check() -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        parse_feedback_request(_body([{"request_id": "r", "actual": 1}]), "text/csv")
    with pytest.raises(MalformedRequestError, match="feedback"):
        parse_feedback_request("", "application/json")
    with pytest.raises(MalformedRequestError, match="NaN"):
        parse_feedback_request('{"feedback": [{"request_id": "r", "actual": NaN}]}', None)
    with pytest.raises(MalformedRequestError, match=r'\{"feedback"'):
        parse_feedback_request("[1]", None)


def test_more_items_than_allowed_is_refused_before_they_are_validated() -> None:
    items = [{"request_id": "r", "index": i, "actual": 1} for i in range(MAX_FEEDBACK_ITEMS)]
    assert len(parse_feedback_request(_body(items), None).feedback) == MAX_FEEDBACK_ITEMS
    with pytest.raises(TooManyFeedbackItemsError, match=f"the limit is {MAX_FEEDBACK_ITEMS}"):
        parse_feedback_request(_body([*items, {"no": "checked"}]), None)


# --- checks against the live model ------------------------------------------------------------


def test_classifier_labels_are_stored_as_predict_writes_them(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a live binary classifier (classes "no", "yes")
    world = World(trained_models["binary"])

    # When labels are reported in a client's spellings
    accepted = world.record(
        [
            {"request_id": "r-1", "index": 0, "actual": "Yes"},
            {"request_id": "r-1", "index": 1, "actual": "  no "},
            {"request_id": "r-2", "actual": "yes"},
        ]
    )

    # Then one object holds one line per item, the label normalised as training normalised it
    assert accepted == 3
    [(key, lines)] = world.stored()
    assert key.startswith(feedback_hour_prefix(DATASET, NOW))
    assert key.endswith(".jsonl.gz") and "/20261122T101530Z-" in key
    assert lines == [
        {
            "request_id": "r-1",
            "index": 0,
            "actual": "yes",
            "received_at": "2026-11-22T10:15:30.250Z",
        },
        {
            "request_id": "r-1",
            "index": 1,
            "actual": "no",
            "received_at": "2026-11-22T10:15:30.250Z",
        },
        {
            "request_id": "r-2",
            "index": 0,
            "actual": "yes",
            "received_at": "2026-11-22T10:15:30.250Z",
        },
    ]


def test_feedback_objects_are_tagged_to_expire(trained_models: dict[str, TrainedModel]) -> None:
    # Given a live model
    world = World(trained_models["binary"])

    # When feedback is recorded
    world.record([{"request_id": "r-1", "actual": "yes"}])

    # Then its object carries the tag the artifacts bucket's lifecycle rule expires
    [(key, _)] = world.stored()
    assert world.store.tags[(ARTIFACTS, key)] == TELEMETRY_TAGS


def test_each_bad_item_is_named_and_nothing_is_stored(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a live multiclass model (classes bronze, gold, silver)
    world = World(trained_models["multiclass"])

    # When a request mixes good items with a label it does not know, a number, a null, an
    # object and an index no predict request can have
    with pytest.raises(InvalidFeedbackError) as refused:
        world.record(
            [
                {"request_id": "r", "index": 0, "actual": "gold"},
                {"request_id": "r", "index": 1, "actual": "platinum"},
                {"request_id": "r", "index": 2, "actual": 3},
                {"request_id": "r", "index": 3, "actual": None},
                {"request_id": "r", "index": 4, "actual": {"label": "gold"}},
                {"request_id": "r", "index": MAX_INDEX, "actual": "Silver"},
            ]
        )

    # Then every fault is listed in item order, the first in the message, and nothing is stored
    details = {d.field: d.message for d in refused.value.details}
    assert list(details) == [
        "feedback[1].actual",
        "feedback[2].actual",
        "feedback[3].actual",
        "feedback[4].actual",
        "feedback[5].index",
    ]
    assert '"platinum" is not a class of model version 1' in details["feedback[1].actual"]
    assert '"bronze", "gold", "silver"' in details["feedback[1].actual"]
    assert "got null" in details["feedback[3].actual"]
    assert "got an object" in details["feedback[4].actual"]
    assert f"at most {MAX_INDEX}" in details["feedback[5].index"]
    assert str(refused.value).startswith("feedback[1].actual: ")
    assert str(refused.value).endswith("(and 4 more)")
    assert world.stored() == []


def test_a_regressor_takes_finite_numbers_only(trained_models: dict[str, TrainedModel]) -> None:
    world = World(trained_models["regression"])

    with pytest.raises(InvalidFeedbackError) as refused:
        world.record(
            [
                {"request_id": "r", "actual": "231450"},
                {"request_id": "r", "index": 1, "actual": True},
                {"request_id": "r", "index": 2, "actual": 10**400},
            ]
        )
    messages = [d.message for d in refused.value.details]
    assert 'got a string ("231450")' in messages[0]
    assert "got a boolean" in messages[1]
    assert "outside the range" in messages[2]

    assert (
        world.record([{"request_id": "r", "actual": 231450}, {"request_id": "s", "actual": 1.5}])
        == 2
    )
    [(_, lines)] = world.stored()
    assert [line["actual"] for line in lines] == [231450.0, 1.5]


def test_an_unknown_dataset_is_not_found_and_nothing_is_stored(
    trained_models: dict[str, TrainedModel],
) -> None:
    world = World(trained_models["binary"])
    with pytest.raises(ModelNotFoundError):
        world.record([{"request_id": "r", "actual": "yes"}], dataset="nothing")
    assert world.store.keys(ARTIFACTS, "nothing/") == []


def test_no_bucket_or_a_failed_write_is_unavailable_not_a_server_error(
    trained_models: dict[str, TrainedModel],
) -> None:
    world = World(trained_models["binary"])
    items = [{"request_id": "r", "actual": "yes"}]
    with pytest.raises(FeedbackUnavailableError, match="FEEDBACK_BUCKET"):
        world.record(items, bucket=None)
    with pytest.raises(FeedbackUnavailableError, match="retry later"):
        world.record(items, store=FailingObjectStore())


def test_keys_are_partitioned_by_the_utc_hour_they_were_received() -> None:
    moment = datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC)
    assert feedback_key("churn", moment, "abc") == (
        "churn/feedback/dt=2026-11-22/hr=23/20261122T235959Z-abc.jsonl.gz"
    )
