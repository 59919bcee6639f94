"""Preprocess logic on in-memory fakes: routing, idempotency, splits, cleaning, every rule."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from functions.preprocess import reader
from functions.preprocess.logic import Policy, PreprocessOutcome
from functions.shared.orchestration import RunInput
from functions.shared.progress import Progress, route_progress
from tests.builders import ARTIFACTS, RAW, World, churn_frame, csv_bytes
from tests.builders import assert_rejected as _rejected


@pytest.fixture
def world() -> World:
    w = World()
    w.contract()
    return w


# --- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "churn/contract.json",
        "churn/notes/readme.csv",
        "churn/data/",
        "churn/data/readme.txt",
        "churn/rejected/x.csv",
        "../data/x.csv",
        "churn%2F..%2Fdata/x.csv",
        "data/x.csv",
    ],
)
def test_objects_outside_a_datasets_data_folder_are_ignored(world: World, key: str) -> None:
    # Given an object that is not a dataset's data file
    # When its upload event arrives
    outcome = world.upload(key, b"a,b\n1,2\n")
    # Then nothing is read, written or started
    assert outcome.status == "ignored"
    assert world.pipeline.runs == {}
    assert world.store.keys(ARTIFACTS) == []


# --- the happy path -------------------------------------------------------------------------


def test_upload_writes_a_complete_dataset_version_and_starts_one_run(world: World) -> None:
    frame = churn_frame(400)
    outcome = world.upload("churn/data/jan.csv", csv_bytes(frame))

    assert outcome.status == "started", outcome.reason
    version = outcome.dataset_version
    prefix = f"churn/versions/{version}/"
    assert set(world.store.keys(ARTIFACTS, prefix)) == {
        f"{prefix}{name}"
        for name in (
            "channels/train.manifest",
            "channels/validation.manifest",
            "channels/test.manifest",
            "dataset.json",
            "profile.json",
            "manifest.json",
        )
    }
    manifest = json.loads(world.store.get_bytes(ARTIFACTS, f"{prefix}manifest.json"))
    # the file became one part: its splits, its row index and its record (written last)
    (part,) = manifest["parts"]
    pid = part["part_id"]
    assert manifest["format"] == 2 and part["key"] == "churn/data/jan.csv"
    assert set(world.store.keys(ARTIFACTS, f"churn/parts/{pid}/")) == {
        f"churn/parts/{pid}/{name}"
        for name in (
            f"train-{pid}.parquet",
            f"validation-{pid}.parquet",
            f"test-{pid}.parquet",
            "rows.u64.npy",
            "part.json",
        )
    }
    train_channel = json.loads(world.store.get_bytes(ARTIFACTS, manifest["channels"]["train"]))
    assert train_channel == [
        {"prefix": f"s3://{ARTIFACTS}/churn/"},
        f"parts/{pid}/train-{pid}.parquet",
        f"versions/{version}/dataset.json",
    ]
    assert manifest["rows"]["read"] == 400
    assert manifest["rows"]["accepted"] == sum(manifest["rows"]["per_split"].values()) == 400
    assert manifest["sources"][0]["sha256"] and manifest["sources"][0]["rows_read"] == 400
    schema = json.loads(world.store.get_bytes(ARTIFACTS, f"{prefix}dataset.json"))
    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    # inferred: numbers are numeric, text is categorical, the target is not a feature, and
    # customer_id (a distinct value per row) is left out as an identifier, with its reason
    assert kinds == {
        "tenure": "numeric",
        "monthly_charges": "numeric",
        "plan": "categorical",
        "region": "categorical",
    }
    roles = {c["column"]: (c["use"], c["reason"]) for c in schema["columns"]}
    assert roles["customer_id"][0] == "excluded"
    assert roles["customer_id"][1].startswith("an identifier: 400 distinct values in 400 rows")
    assert roles["churned"][0] == "target"
    assert schema["classes"] == ["no", "yes"]
    run = world.pipeline.runs[outcome.run_name or ""]
    assert isinstance(run, RunInput)
    assert run.train_uri == f"s3://{ARTIFACTS}/{prefix}channels/train.manifest"
    assert run.data_type == "ManifestFile"
    assert run.metric == "f1_macro" and run.instance_type == "ml.g5.xlarge"
    # the contract's search budget (tests' churn contract: 2 s) reaches the job's hyperparameters
    assert run.hyperparameters["budget_seconds"] == "2"
    # and training.refit's default, as SageMaker passes it
    assert run.hyperparameters["refit"] == "true"
    shares = {n: manifest["rows"]["per_split"][n] / 400 for n in ("train", "validation", "test")}
    assert 0.6 < shares["train"] < 0.8 and 0.08 < shares["test"] < 0.22


def test_profile_holds_histograms_and_category_shares_of_the_training_split(world: World) -> None:
    outcome = world.upload("churn/data/jan.csv", csv_bytes(churn_frame(400)))
    profile = json.loads(
        world.store.get_bytes(ARTIFACTS, f"churn/versions/{outcome.dataset_version}/profile.json")
    )
    tenure = profile["features"]["tenure"]
    assert tenure["kind"] == "numeric" and 1 <= tenure["min"] <= tenure["max"] <= 72
    assert abs(sum(tenure["histogram"]["shares"]) - 1) < 1e-9
    assert len(tenure["histogram"]["shares"]) == len(tenure["histogram"]["edges"]) + 1
    plan = profile["features"]["plan"]
    assert set(plan["shares"]) == {"basic", "standard", "premium"}
    assert profile["features"]["monthly_charges"]["missing"] > 0
    assert profile["rows"] == tenure["count"]


def test_parquet_uploads_are_read_like_csv(world: World) -> None:
    buffer = io.BytesIO()
    churn_frame(300).to_parquet(buffer, index=False)
    outcome = world.upload("churn/data/jan.parquet", buffer.getvalue())
    assert outcome.status == "started", outcome.reason
    assert outcome.rows is not None and outcome.rows.accepted == 300


# --- idempotency and stability ------------------------------------------------------------


def test_the_same_event_twice_gives_one_dataset_version_and_one_run(world: World) -> None:
    info = world.store.put(RAW, "churn/data/jan.csv", csv_bytes(churn_frame(300)))
    first = world.process(info)
    versions_after_first = world.store.keys(ARTIFACTS, "churn/versions/")
    second = world.process(info)

    assert first.status == "started"
    assert second.status == "duplicate"
    assert len(world.pipeline.runs) == 1
    assert world.store.keys(ARTIFACTS, "churn/versions/") == versions_after_first


def test_a_rebuilt_event_reuses_the_finished_dataset_version(world: World) -> None:
    # Given a finished version, and a second, distinct event over exactly the same objects
    world.upload("churn/data/jan.csv", csv_bytes(churn_frame(300)))
    writes_before = len(world.store.writes)
    contract_info = world.store.head(RAW, "churn/contract.json")
    data_info = world.store.head(RAW, "churn/data/jan.csv")
    assert contract_info and data_info
    again = world.process(data_info.__class__(**{**data_info.__dict__}))  # same identity
    # Then nothing is rebuilt
    assert again.status == "duplicate"
    assert len(world.store.writes) == writes_before


def test_a_superseded_object_version_is_a_no_op(world: World) -> None:
    old = world.store.put(RAW, "churn/data/jan.csv", csv_bytes(churn_frame(300, seed=1)))
    world.store.put(RAW, "churn/data/jan.csv", csv_bytes(churn_frame(300, seed=2)))
    outcome = world.process(old)
    assert outcome.status == "stale"
    assert world.pipeline.runs == {}


@pytest.mark.parametrize("id_column", [None, "customer_id"])
def test_rows_keep_their_split_across_dataset_versions(id_column: str | None) -> None:
    # Given version 1 built from January's file
    world = World()
    world.contract(**({"id_column": id_column} if id_column else {}))
    v1 = world.upload("churn/data/jan.csv", csv_bytes(churn_frame(500, seed=1)))
    # When February's file arrives and version 2 is built over both
    v2 = world.upload("churn/data/feb.csv", csv_bytes(churn_frame(500, seed=2, start_id=500)))
    assert v1.status == v2.status == "started"
    assert v1.dataset_version != v2.dataset_version

    def by_split(outcome: PreprocessOutcome) -> dict[object, str]:
        # A row is its id, or (no id column: customer_id is then left out as an identifier)
        # all its values together.
        return {
            row: split
            for split in ("train", "validation", "test")
            for row in (
                world.split(outcome, split)["customer_id"]
                if id_column
                else map(str, world.split(outcome, split).itertuples(index=False, name=None))
            )
        }

    first, second = by_split(v1), by_split(v2)
    # Then every January row sits in the same split in both versions
    assert len(first) > 400
    assert all(second[row] == split for row, split in first.items())
    assert len(second) > len(first)


# --- cleaning ------------------------------------------------------------------------------


def test_cleaning_drops_duplicates_normalises_categories_and_keeps_numeric_gaps(
    world: World,
) -> None:
    frame = churn_frame(300)
    frame.loc[0:9, "plan"] = [
        "  basic",
        "BASIC ",
        "Basic",
        "premium",
        " Premium  ",
        "standard",
        "Standard",
        "basic",
        "basic",
        "basic",
    ]
    frame.loc[5, "region"] = "  North   West "
    dupes = pd.concat([frame, frame.iloc[:25]], ignore_index=True)
    outcome = world.upload("churn/data/jan.csv", csv_bytes(dupes))

    assert outcome.rows is not None
    assert outcome.rows.duplicates_dropped == 25
    assert outcome.rows.accepted == 300
    rows = pd.concat([world.split(outcome, s) for s in ("train", "validation", "test")])
    assert set(rows["plan"]) == {"basic", "standard", "premium"}
    assert "north west" in set(rows["region"])
    assert "__missing__" in set(rows["region"])
    assert rows["monthly_charges"].isna().sum() == frame["monthly_charges"].isna().sum()


def test_duplicates_are_found_across_files_and_batches(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given blocks small enough that one file streams in many batches
    monkeypatch.setattr(reader, "BLOCK_BYTES", 4096)
    frame = churn_frame(600)
    world.store.put(RAW, "churn/data/a.csv", csv_bytes(frame))
    outcome = world.upload("churn/data/b.csv", csv_bytes(frame.iloc[::-1]))
    assert outcome.rows is not None
    assert outcome.rows.read == 1200
    assert outcome.rows.duplicates_dropped == 600
    assert outcome.rows.accepted == 600


def test_reading_reports_rows_and_bytes_so_far_as_progress(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two files, each streamed in several blocks, and a sink for progress records
    world.policy = Policy(read_block_bytes=4096)
    records: list[Progress] = []
    route_progress(records.append)
    frame = churn_frame(600)
    first, second = csv_bytes(frame), csv_bytes(churn_frame(300, seed=5))
    world.store.put(RAW, "churn/data/a.csv", first)
    try:
        # When an upload is preprocessed
        outcome = world.upload("churn/data/b.csv", second)
    finally:
        route_progress(None)
    # Then each block read is a record: rows and bytes so far of the whole, growing to the end
    assert outcome.status == "started", outcome.reason
    assert len(records) > 4 and {r.step for r in records} == {"preprocess"}
    assert {(r.dataset, r.unit, r.total) for r in records} == {
        ("churn", "bytes", len(first) + len(second))
    }
    done = [r.done for r in records]
    assert done == sorted(done) and records[-1].finished and not records[0].finished
    assert records[-1].detail.startswith("900 rows, ")
    assert " rows, 4.0 KiB of " in records[0].detail


def test_a_few_bad_rows_are_dropped_and_reported_in_the_manifest(world: World) -> None:
    frame = churn_frame(400).astype({"tenure": object})
    frame.loc[[3, 17], "tenure"] = "twelve"
    frame.loc[[8], "churned"] = None
    outcome = world.upload("churn/data/jan.csv", csv_bytes(frame))

    assert outcome.status == "started"
    assert outcome.rows is not None
    assert outcome.rows.rejected == {"type_mismatch": 2, "target_null": 1}
    assert outcome.rows.accepted == 397
    manifest = json.loads(
        world.store.get_bytes(ARTIFACTS, f"churn/versions/{outcome.dataset_version}/manifest.json")
    )
    issue = next(i for i in manifest["row_issues"] if i["rule"] == "type_mismatch")
    assert issue["column"] == "tenure"
    assert [e["row"] for e in issue["examples"]] == [4, 18]  # 1-based data rows


# --- rejections ------------------------------------------------------------------------------


def _rules(report: dict[str, object]) -> set[str]:
    return {v["rule"] for v in report["violations"]}  # type: ignore[attr-defined, index]


def _violation(report: dict[str, object], rule: str) -> dict[str, object]:
    return next(v for v in report["violations"] if v["rule"] == rule)  # type: ignore[attr-defined, index, no-any-return]


def test_missing_contract_is_rejected() -> None:
    world = World()
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(churn_frame(200)))
    assert _rules(report) == {"contract_missing"}
    assert "churn/contract.json" in str(_violation(report, "contract_missing")["message"])


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"treshold": 0.5}, "treshold: unknown key"),
        ({"metric": "f2"}, "unknown metric 'f2'"),
        ({"metric": "rmse"}, "metric 'rmse' is a regression metric"),
    ],
)
def test_invalid_contract_is_rejected_with_the_field_named(
    override: dict[str, object], needle: str
) -> None:
    world = World()
    world.contract(**override)
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(churn_frame(200)))
    assert _rules(report) == {"contract_invalid"}
    assert needle in str(_violation(report, "contract_invalid")["message"])


def test_missing_target_column_is_rejected(world: World) -> None:
    report = _rejected(
        world, "churn/data/jan.csv", csv_bytes(churn_frame(200).drop(columns="churned"))
    )
    violation = _violation(report, "target_missing")
    assert violation["column"] == "churned" and violation["file"] == "churn/data/jan.csv"


def test_missing_declared_feature_is_rejected() -> None:
    world = World()
    world.contract(
        features={"tenure": "numeric", "plan": "categorical", "promo": "categorical"},
        id_column="customer_id",
        sensitive=["region"],
    )
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(churn_frame(200)))
    assert _violation(report, "missing_column")["column"] == "promo"
    assert _violation(report, "unexpected_column")["column"] == "monthly_charges"


def test_duplicated_column_names_are_rejected(world: World) -> None:
    data = b"tenure,plan,plan,churned\n" + b"1,a,b,yes\n" * 200
    report = _rejected(world, "churn/data/jan.csv", data)
    assert _violation(report, "duplicate_column")["column"] == "plan"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"tenure,plan,churned\n1,a,yes\n2,b\n" + b"3,c,no\n" * 200, "Expected 3 columns"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "UTF-8"),
        (b"", "empty file"),
    ],
)
def test_unreadable_files_are_rejected_with_the_reason(
    world: World, data: bytes, needle: str
) -> None:
    report = _rejected(world, "churn/data/jan.csv", data)
    assert needle in str(_violation(report, "unreadable_file")["message"])


def test_header_only_file_is_rejected(world: World) -> None:
    report = _rejected(world, "churn/data/jan.csv", b"tenure,plan,churned\n")
    assert _rules(report) == {"empty_file"}


def test_too_many_bad_rows_reject_the_upload() -> None:
    world = World()
    world.contract(features={"tenure": "numeric", "plan": "categorical"})
    frame = churn_frame(200).astype({"tenure": object})
    frame.loc[:19, "tenure"] = "n/a-ish"
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame[["tenure", "plan", "churned"]]))
    assert _rules(report) == {"too_many_rejected_rows", "type_mismatch"}
    violation = _violation(report, "type_mismatch")
    assert violation["column"] == "tenure" and violation["count"] == 20
    assert [e["row"] for e in violation["examples"]][:3] == [1, 2, 3]  # type: ignore[attr-defined]


def test_infinite_values_are_their_own_rule(world: World) -> None:
    frame = churn_frame(200)
    frame.loc[:29, "monthly_charges"] = np.inf
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame))
    assert _violation(report, "non_finite")["count"] == 30


def test_missing_targets_beyond_the_limit_reject_the_upload(world: World) -> None:
    frame = churn_frame(200)
    frame.loc[:49, "churned"] = ""
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame))
    assert _violation(report, "target_null")["count"] == 50


def test_too_few_rows_are_rejected(world: World) -> None:
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(churn_frame(60)))
    assert _violation(report, "too_few_rows")["count"] == 60


def test_a_single_class_target_is_rejected(world: World) -> None:
    frame = churn_frame(200).assign(churned="yes")
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame))
    assert "classification needs at least 2" in str(
        _violation(report, "too_few_classes")["message"]
    )


def test_a_class_with_too_few_members_is_rejected(world: World) -> None:
    frame = churn_frame(300)
    frame.loc[:3, "churned"] = "maybe"
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame))
    assert "'maybe': 4" in str(_violation(report, "class_too_small")["message"])


def test_a_feature_with_no_values_at_all_is_rejected() -> None:
    world = World()
    world.contract(features={"tenure": "numeric", "promo_code": "numeric"})
    frame = churn_frame(200)[["tenure", "churned"]].assign(promo_code="")
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame))
    assert _violation(report, "all_missing")["column"] == "promo_code"


def test_missing_ids_are_rows_broken() -> None:
    world = World()
    world.contract(id_column="customer_id")
    frame = churn_frame(200)
    frame.loc[:19, "customer_id"] = None
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame))
    assert _violation(report, "id_null")["count"] == 20


def test_regression_targets_must_be_numbers() -> None:
    world = World()
    world.contract(target="monthly_charges", task="regression", metric="rmse", threshold=10.0)
    frame = churn_frame(200).drop(columns="churned").astype({"monthly_charges": object})
    frame.loc[:19, "monthly_charges"] = "lots"
    report = _rejected(world, "churn/data/jan.csv", csv_bytes(frame))
    assert _violation(report, "type_mismatch")["column"] == "monthly_charges"


def test_a_mostly_text_column_is_inferred_categorical(world: World) -> None:
    frame = churn_frame(200).astype({"tenure": object})
    frame.loc[:19, "tenure"] = "unknown"
    outcome = world.upload("churn/data/jan.csv", csv_bytes(frame))
    assert outcome.status == "started"
    schema = json.loads(
        world.store.get_bytes(ARTIFACTS, f"churn/versions/{outcome.dataset_version}/dataset.json")
    )
    assert {f["name"]: f["kind"] for f in schema["features"]}["tenure"] == "categorical"
