"""Data as users bring it, from upload to answer: column roles inferred as a data scientist would
(dates taken apart, booleans, identifiers / free text / constants left out with their reason),
labels answered as the data spells them, and a feature that became text refusing numbers.

Each test uploads a CSV (or Parquet) file through the real preprocessing, trains the real
candidates on the dataset version it wrote, and asks the real prediction API.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from functions.shared import layout
from functions.shared.contract import FeatureKind
from functions.shared.features import (
    DATE_PARTS,
    FeatureSpec,
    InvalidInstancesError,
    instances_to_columns,
    label_values,
    onnx_feeds,
    parse_boolean,
    parse_datetime,
)
from functions.shared.scoring import ScoringModel
from tests.builders import ARTIFACTS, World, csv_bytes
from tests.models import TrainedModel, train_stored_version
from tests.unit.test_inference import Api, assert_error

DATASET = "churn"  # the dataset the inference test harness serves


def members(rows: int = 900, seed: int = 7) -> pd.DataFrame:
    """Members of a club: a sign-up date, a membership flag, text bands, prose notes, a ticket
    id, a constant column, and a target spelt ``Yes``/``No`` (with a few ``yes `` spellings)."""
    rng = np.random.default_rng(seed)
    signup = pd.Timestamp("2019-01-01") + pd.to_timedelta(rng.integers(0, 5 * 365, rows), "D")
    member = rng.random(rows) < 0.4
    band = rng.choice(["low", "mid", "high"], rows)
    visits = rng.poisson(6, rows).astype(float)
    words = np.array(["blue", "quiet", "river", "stone", "late", "call", "asked", "about", "fees"])
    notes = [" ".join(rng.choice(words, 6)) + f" #{i}" for i in range(rows)]
    risk = (
        (signup.year.to_numpy() - 2021) * 0.8
        - member * 1.5
        + (band == "low") * 1.0
        - 0.1 * visits
        + rng.normal(0, 0.6, rows)
    )
    churned = np.where(risk > np.median(risk), "Yes", "No").astype(object)
    churned[:7] = "yes "  # a few rows spelt otherwise: the most frequent spelling wins
    return pd.DataFrame(
        {
            "ticket": [f"T-{100000 + i}" for i in range(rows)],
            "signup_date": signup.strftime("%Y-%m-%d"),
            "is_member": np.where(member, "True", "False"),
            "income_band": band,
            "visits": visits,
            "notes": notes,
            "country": "NZ",
            "Churned": churned,
        }
    )


CONTRACT: dict[str, Any] = {
    "target": "Churned",
    "task": "classification",
    "metric": "roc_auc",
    "threshold": 0.5,
}


def upload_and_train(world: World, data: bytes, tmp: Path, key: str = "churn/data/a.csv") -> Any:
    outcome = world.upload(key, data)
    assert outcome.status == "started", outcome.reason
    assert outcome.dataset_version
    prefix = layout.version_prefix(DATASET, outcome.dataset_version)
    return outcome, train_stored_version(world.store, ARTIFACTS, prefix, tmp)


@pytest.fixture(scope="module")
def members_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], TrainedModel]:
    world = World()
    world.contract(**CONTRACT)
    outcome, model = upload_and_train(world, csv_bytes(members()), tmp_path_factory.mktemp("m"))
    schema = json.loads(
        world.store.get_bytes(
            ARTIFACTS, f"{layout.version_prefix(DATASET, outcome.dataset_version)}dataset.json"
        )
    )
    return schema, model


def test_columns_get_the_roles_a_data_scientist_would_give_them(
    members_model: tuple[dict[str, Any], TrainedModel],
) -> None:
    schema, _ = members_model
    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    assert kinds == {
        "signup_date": "datetime",
        "is_member": "boolean",
        "income_band": "categorical",
        "visits": "numeric",
    }
    roles = {c["column"]: c for c in schema["columns"]}
    assert [c["column"] for c in schema["columns"]] == list(members().columns)
    assert roles["ticket"]["use"] == "excluded"
    assert roles["ticket"]["reason"].startswith("an identifier: 900 distinct values")
    assert roles["notes"]["use"] == "excluded"
    assert roles["notes"]["reason"].startswith("free text: 900 distinct values")
    assert roles["country"]["use"] == "excluded"
    assert roles["country"]["reason"].startswith("constant: every value")
    assert roles["Churned"]["use"] == "target"
    assert roles["signup_date"]["reason"].startswith("ISO dates")


def test_a_contract_declaring_features_overrides_inference() -> None:
    world = World()
    world.contract(
        **CONTRACT,
        features={"ticket": "categorical", "visits": "numeric", "signup_date": "categorical"},
    )
    outcome = world.upload(
        "churn/data/a.csv", csv_bytes(members()[["ticket", "visits", "signup_date", "Churned"]])
    )
    assert outcome.status == "started", outcome.reason
    schema = json.loads(
        world.store.get_bytes(
            ARTIFACTS,
            f"{layout.version_prefix(DATASET, outcome.dataset_version or '')}dataset.json",
        )
    )
    assert {f["name"]: f["kind"] for f in schema["features"]} == {
        "ticket": "categorical",
        "visits": "numeric",
        "signup_date": "categorical",
    }
    assert {c["reason"] for c in schema["columns"] if c["use"] == "feature"} == {
        "declared in the contract"
    }


def test_labels_come_back_as_the_data_spells_them(
    members_model: tuple[dict[str, Any], TrainedModel],
) -> None:
    schema, model = members_model
    # "yes " (7 rows) lost to "Yes": the most frequent spelling of the class
    assert schema["classes"] == ["No", "Yes"] == model.card.classes
    api = Api()
    api.publish(model, run="run-1")
    reply = api.predict(
        [
            {"signup_date": "2023-06-30", "is_member": False, "income_band": "low", "visits": 1.0},
            {
                "signup_date": "2019-02-01",
                "is_member": "true",
                "income_band": "high",
                "visits": 9.0,
            },
        ]
    )
    assert reply.status == 200, reply.body
    labels = [p["label"] for p in reply.body["predictions"]]
    assert labels == ["Yes", "No"]
    assert all(set(p["probabilities"]) == {"No", "Yes"} for p in reply.body["predictions"])
    # feedback matches the class however it is spelt, and stores the data's spelling
    feedback = api.call(
        "POST",
        f"/v1/models/{DATASET}:feedback",
        json.dumps(
            {"feedback": [{"request_id": reply.body["request_id"], "index": 0, "actual": "YES"}]}
        ),
    )
    assert feedback.status == 202, feedback.body
    (key,) = api.store.keys("artifacts-bucket", f"{DATASET}/feedback/")
    line = json.loads(gzip.decompress(api.store.get_bytes("artifacts-bucket", key)))
    assert line["actual"] == "Yes"


def test_predictions_over_http_shapes_equal_the_scoring_model_on_the_test_split(
    members_model: tuple[dict[str, Any], TrainedModel],
) -> None:
    _, model = members_model
    api = Api()
    api.publish(model, run="run-1")
    test = model.split("test")
    names = [f.name for f in model.card.features]
    instances = [
        {k: (None if v == "__missing__" else v) for k, v in row.items()}
        for row in test[names].head(50).to_dict("records")
    ]
    reply = api.predict(instances)
    assert reply.status == 200, reply.body
    expected = model.card.classes or []
    proba = [[p["probabilities"][c] for c in expected] for p in reply.body["predictions"]]
    scoring = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256)
    direct = scoring.score({n: test[n].head(50).tolist() for n in names})
    assert np.allclose(np.asarray(proba), direct.probabilities, atol=1e-6)


@pytest.mark.parametrize(
    ("instance", "field", "mentions"),
    [
        ({"income_band": 100}, "income_band", "categorical with text values"),
        ({"signup_date": "yesterday"}, "signup_date", "ISO 8601 date"),
        ({"signup_date": 20230101}, "signup_date", "ISO 8601 date"),
        ({"is_member": "maybe"}, "is_member", "boolean feature"),
        ({"is_member": 1}, "is_member", "boolean feature"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_422_naming_the_feature_type(
    members_model: tuple[dict[str, Any], TrainedModel],
    instance: dict[str, Any],
    field: str,
    mentions: str,
) -> None:
    _, model = members_model
    api = Api()
    api.publish(model, run="run-1")
    good = {"signup_date": "2023-06-30", "is_member": False, "income_band": "low", "visits": 1.0}
    reply = api.predict([{**good, **instance}])
    assert_error(reply, 422, "invalid_instances", mentions=mentions)
    assert f"instances[0].{field}" in json.dumps(reply.body)


def test_integer_coded_classes_come_back_as_the_same_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = 600
    x = rng.normal(size=rows)
    grade = np.select([x < -0.4, x < 0.5], [1, 3], default=7)
    frame = pd.DataFrame({"x": x + rng.normal(0, 0.2, rows), "grade": grade})
    world = World()
    world.contract(target="grade", task="classification", metric="accuracy", threshold=0.1)
    _, model = upload_and_train(world, csv_bytes(frame), tmp_path)
    assert model.card.classes == ["1", "3", "7"]
    api = Api()
    api.publish(model, run="run-1")
    reply = api.predict([{"x": -2.0}, {"x": 0.0}, {"x": 2.0}])
    assert reply.status == 200, reply.body
    assert [p["label"] for p in reply.body["predictions"]] == [1, 3, 7]
    assert set(reply.body["predictions"][0]["probabilities"]) == {"1", "3", "7"}


def test_a_parquet_timestamp_column_and_its_iso_text_feed_the_model_alike(tmp_path: Path) -> None:
    # Given members with real timestamps, uploaded as Parquet
    frame = members()
    frame["signup_date"] = pd.to_datetime(frame["signup_date"]) + pd.Timedelta(hours=9, minutes=30)
    frame["is_member"] = frame["is_member"] == "True"
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    world = World()
    world.contract(**CONTRACT)
    outcome = world.upload("churn/data/a.parquet", buffer.getvalue())
    assert outcome.status == "started", outcome.reason
    split = world.split(outcome, "train")
    # The split holds the dates as a request sends them, and the booleans as words
    assert split["signup_date"].iloc[0].endswith("T09:30:00")
    assert set(split["is_member"]) == {"true", "false"}
    # and the graph inputs derived from the stored text equal those from the original values
    spec = FeatureSpec(name="signup_date", kind=FeatureKind.DATETIME)
    stored = onnx_feeds([spec], {"signup_date": split["signup_date"].tolist()})
    as_sent = onnx_feeds(
        [spec], {"signup_date": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in frame["signup_date"]]}
    )
    order = {t.strftime("%Y-%m-%dT%H:%M:%S"): i for i, t in enumerate(frame["signup_date"])}
    rows = [order[t] for t in split["signup_date"]]
    for part in DATE_PARTS:
        assert np.array_equal(stored[f"signup_date__{part}"], as_sent[f"signup_date__{part}"][rows])


# --- the parsers on the inference path ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("2024-03-01", (2024, 3, 1, 4, 0.0, 19783.0)),
        ("2024/3/1", (2024, 3, 1, 4, 0.0, 19783.0)),
        ("2024-03-01T06:30:00", (2024, 3, 1, 4, 6.5, 19783.0 + 6.5 / 24)),
        ("2024-03-01 06:30", (2024, 3, 1, 4, 6.5, 19783.0 + 6.5 / 24)),
        ("2024-03-01T06:30:00Z", (2024, 3, 1, 4, 6.5, 19783.0 + 6.5 / 24)),
        ("2024-03-01T06:30:00.250+02:00", (2024, 3, 1, 4, 6.5, 19783.0 + 4.5 / 24 + 0.25 / 86400)),
        (" 1970-01-01 ", (1970, 1, 1, 3, 0.0, 0.0)),
    ],
)
def test_iso_dates_parse_to_their_parts(text: str, parts: tuple[float, ...]) -> None:
    parsed = parse_datetime(text)
    assert parsed is not None
    assert parsed == pytest.approx(parts)


@pytest.mark.parametrize(
    "text", ["2021-02-30", "01/02/2020", "yesterday", "2021-13-01", "", "2021"]
)
def test_what_is_not_an_iso_date_is_not_a_date(text: str) -> None:
    assert parse_datetime(text) is None


def test_booleans_parse_from_json_and_from_text() -> None:
    assert [parse_boolean(v) for v in (True, False, "TRUE", " false ", np.bool_(True))] == [
        True,
        False,
        True,
        False,
        True,
    ]
    assert [parse_boolean(v) for v in ("yes", 1, 0.0, None, "t")] == [None] * 5


def test_label_values_are_numbers_or_booleans_only_when_every_class_is() -> None:
    assert label_values(["1", "3", "7"]) == [1, 3, 7]
    assert label_values(["-1", "1"]) == [-1, 1]
    assert label_values(["False", "True"]) == [False, True]
    assert label_values(["1", "x"]) == ["1", "x"]
    assert label_values(["1.5", "2"]) == ["1.5", "2"]
    assert label_values(["Adelie", "Gentoo"]) == ["Adelie", "Gentoo"]


def test_a_text_only_category_refuses_numbers_and_an_open_one_takes_them() -> None:
    banded = FeatureSpec(name="income", kind=FeatureKind.CATEGORICAL, text_only=True)
    open_ = FeatureSpec(name="zip", kind=FeatureKind.CATEGORICAL)
    assert instances_to_columns([open_], [{"zip": 1234}]) == {"zip": [1234]}
    with pytest.raises(InvalidInstancesError, match=r"instances\[0\].income: feature 'income' is"):
        instances_to_columns([banded], [{"income": 100}])
    assert instances_to_columns([banded], [{"income": "10k-20k"}, {"income": None}]) == {
        "income": ["10k-20k", None]
    }


def test_rows_differing_only_in_a_column_left_out_are_not_duplicates() -> None:
    # Given repeated observations (few distinct feature values) told apart by a row number, as
    # R's data frames are exported with their row names
    rng = np.random.default_rng(5)
    rows = 400
    frame = pd.DataFrame(
        {
            "rownames": np.arange(1, rows + 1),
            "job": rng.choice(["admin", "custodial", "manager"], rows),
            "minority": rng.choice(["yes", "no"], rows),
            "Churned": rng.choice(["Yes", "No"], rows),
        }
    )
    world = World()
    world.contract(**CONTRACT)
    # When it is uploaded
    outcome = world.upload("churn/data/a.csv", csv_bytes(frame))
    # Then the row number is left out, and every row is kept (12 distinct rows otherwise)
    assert outcome.status == "started", outcome.reason
    assert outcome.rows is not None
    assert outcome.rows.duplicates_dropped == 0 and outcome.rows.accepted == rows
    assert "rownames" not in world.split(outcome, "train").columns
    # And a second copy of the whole file adds no row: exact duplicates are still dropped
    again = world.upload("churn/data/b.csv", csv_bytes(frame))
    assert again.rows is not None and again.rows.accepted == rows
    assert again.rows.duplicates_dropped == rows


def test_a_row_number_is_left_out_and_a_run_of_years_is_a_feature() -> None:
    rng = np.random.default_rng(9)
    rows = 120
    frame = pd.DataFrame(
        {
            "rownames": rng.permutation(np.arange(1, rows + 1)),
            "year": np.arange(1900, 1900 + rows),
            "x": rng.normal(size=rows),
            "y": rng.normal(size=rows),
        }
    )
    world = World()
    world.contract(target="y", task="regression", metric="r2", threshold=-10)
    outcome = world.upload("churn/data/a.csv", csv_bytes(frame))
    assert outcome.status == "started", outcome.reason
    prefix = layout.version_prefix(DATASET, outcome.dataset_version or "")
    schema = json.loads(world.store.get_bytes(ARTIFACTS, f"{prefix}dataset.json"))
    roles = {c["column"]: c for c in schema["columns"]}
    assert roles["rownames"]["use"] == "excluded"
    assert roles["rownames"]["reason"].startswith(
        "a row number (distinct integers counting from 1)"
    )
    assert roles["year"]["use"] == "feature" and roles["year"]["kind"] == "numeric"
