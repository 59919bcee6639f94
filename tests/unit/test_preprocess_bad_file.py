"""Issue 20, part 1: one bad data file no longer blocks its dataset.

A file refused for a fault of its own is left out of the version built from the others, with a
report that says what is wrong, where, and how to replace or delete it; the upload that is itself
the bad file is rejected and changes nothing; a corrected file under the same key is read again.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pandas as pd
import pytest

from functions.preprocess import reader
from functions.preprocess.models import PreprocessOutcome
from functions.shared import layout
from functions.shared.manifest import Manifest, RowCounts
from tests.builders import ARTIFACTS, RAW, World, churn_frame, csv_bytes

JAN, FEB, MAR = "churn/data/jan.csv", "churn/data/feb.csv", "churn/data/mar.csv"
LATE = "churn/data/z-late.csv"


def good(seed: int, rows: int = 300) -> bytes:
    return csv_bytes(churn_frame(rows, seed=seed, start_id=seed * 10_000))


def all_targets_missing() -> bytes:
    return csv_bytes(churn_frame(300, seed=9).assign(churned=""))


def ragged() -> bytes:
    """A good file but for one row short of a field: its only fault."""
    lines = good(9).split(b"\n")
    lines[2] = b",".join(lines[2].split(b",")[:-1])
    return b"\n".join(lines)


# Each kind of bad file the issue names, with the rule it is refused under and a fragment of what
# the report says about it.
BAD_FILES = [
    (
        "semicolon-separated",
        lambda: good(9).replace(b",", b";"),
        "unreadable_file",
        "';'-separated",
    ),
    ("garbage", lambda: bytes(range(256)) * 8, "unreadable_file", "binary content"),
    ("gzip-renamed-csv", lambda: gzip.compress(good(9)), "unreadable_file", "gzip-compressed"),
    ("header-only", lambda: good(9).split(b"\n")[0] + b"\n", "empty_file", "no data rows"),
    ("ragged", ragged, "unreadable_file", "Expected 6 columns, got 5"),
    (
        "wrong-header",
        lambda: csv_bytes(churn_frame(300, seed=9).drop(columns="churned")),
        "target_missing",
        "required column 'churned' is missing",
    ),
    ("all-rows-bad", all_targets_missing, "too_many_rejected_rows", "300 of 300 rows"),
]


@pytest.fixture
def world() -> World:
    w = World()
    w.contract()
    return w


def report_at(world: World, key: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(world.store.get_bytes(ARTIFACTS, key))
    return found


def manifest_of(world: World, outcome: PreprocessOutcome) -> Manifest:
    assert outcome.dataset_version
    key = f"churn/versions/{outcome.dataset_version}/manifest.json"
    return Manifest.model_validate_json(world.store.get_bytes(ARTIFACTS, key))


@pytest.mark.parametrize(
    ("kind", "data", "rule", "fragment"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_a_bad_file_then_a_good_one_the_good_one_runs_and_the_report_names_the_bad_one(
    world: World, kind: str, data: Any, rule: str, fragment: str
) -> None:
    # Given a dataset with one good file and a run over it
    assert world.upload(JAN, good(1)).status == "started"
    versions = world.store.keys(ARTIFACTS, "churn/versions/")
    bad = data()

    # When a bad file arrives: it is rejected, and nothing changes for the dataset
    refused = world.upload(FEB, bad)
    assert refused.status == "rejected", refused
    assert refused.report_key == layout.rejected_key("churn", str(refused.run_name))
    assert world.store.keys(ARTIFACTS, "churn/versions/") == versions
    assert len(world.pipeline.runs) == 1
    own = report_at(world, refused.report_key)
    assert own["violations"][0]["rule"] == rule
    assert fragment in json.dumps(own["violations"])
    assert "aws s3 rm s3://raw-bucket/churn/data/feb.csv" in own["note"]
    assert "same key" in own["note"] and "live model is unchanged" in own["note"]
    assert "later uploads are processed without it" in refused.reason

    # And when a good file arrives after it: its run starts over the good files only
    outcome = world.upload(MAR, good(3))
    assert outcome.status == "started", outcome.reason
    assert len(world.pipeline.runs) == 2
    assert outcome.rows is not None and outcome.rows.read == 600
    manifest = manifest_of(world, outcome)
    assert [s.key for s in manifest.sources] == [JAN, MAR]
    # the outcome and the manifest name the file left out, its rule, and what to do
    assert manifest.excluded == outcome.excluded
    [left_out] = outcome.excluded
    assert (left_out.key, left_out.rule) == (FEB, rule)
    assert left_out.etag == world.store.head(RAW, FEB).etag  # type: ignore[union-attr]
    assert left_out.version_id == "v1"
    assert "aws s3 rm s3://raw-bucket/churn/data/feb.csv" in left_out.message
    assert FEB in outcome.reason
    # and the file's own report says what is wrong and where, and how to replace or delete it
    excluded = report_at(world, left_out.report_key)
    assert excluded["decision"] == "excluded"
    assert excluded["trigger"]["key"] == FEB
    assert excluded["violations"][0]["rule"] == rule
    assert excluded["violations"][0]["file"] == FEB
    assert fragment in json.dumps(excluded["violations"])
    assert "upload a corrected file under the same key" in excluded["note"]
    assert "aws s3 rm s3://raw-bucket/churn/data/feb.csv" in excluded["note"]
    # The raw file is as uploaded: sluice never changes or deletes it
    assert world.store.get_bytes(RAW, FEB) == bad
    assert len(world.store.objects[(RAW, FEB)]) == 1


def test_the_bad_file_replaced_under_the_same_key_is_read_again(world: World) -> None:
    world.upload(JAN, good(1))
    assert world.upload(FEB, good(2).replace(b",", b";")).status == "rejected"
    # When a corrected file replaces it under the same key
    outcome = world.upload(FEB, good(2))
    # Then the next version reads it, and leaves nothing out
    assert outcome.status == "started", outcome.reason
    assert outcome.excluded == []
    manifest = manifest_of(world, outcome)
    assert [(s.key, s.version_id) for s in manifest.sources] == [(FEB, "v2"), (JAN, "v1")]
    assert outcome.rows is not None and outcome.rows.read == 600


def test_a_bad_file_deep_in_its_rows_is_left_out_and_decides_nothing_about_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given blocks far smaller than the files, and a first file (in key order) whose rows are
    # read block by block, features inferred from them, until a ragged row near its end
    monkeypatch.setattr(reader, "BLOCK_BYTES", 4096)
    bad = good(7, rows=400) + b"C9,1,2\n" + good(7, rows=20).split(b"\n", 1)[1]
    world = World()
    world.contract()
    world.store.put(RAW, "churn/data/a-first.csv", bad)
    world.store.put(RAW, JAN, good(1))
    # When a good file arrives
    outcome = world.upload(MAR, good(3))
    # Then the bad file is left out with the line of its fault
    assert outcome.status == "started", outcome.reason
    [left_out] = outcome.excluded
    assert left_out.key == "churn/data/a-first.csv" and left_out.rule == "unreadable_file"
    assert "line 402" in left_out.message
    # and the version is exactly the one the good files make alone
    alone = World()
    alone.contract()
    alone.store.put(RAW, JAN, good(1))
    reference = alone.upload(MAR, good(3))
    assert outcome.rows == reference.rows
    for split in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(world.split(outcome, split), alone.split(reference, split))
    schema = f"churn/versions/{outcome.dataset_version}/dataset.json"
    reference_schema = f"churn/versions/{reference.dataset_version}/dataset.json"
    assert (
        json.loads(world.store.get_bytes(ARTIFACTS, schema))["features"]
        == json.loads(alone.store.get_bytes(ARTIFACTS, reference_schema))["features"]
    )


def test_a_file_with_too_many_bad_rows_is_left_out_and_its_rows_are_not_counted(
    world: World,
) -> None:
    frame = churn_frame(300, seed=5).astype({"tenure": object})
    frame.loc[:49, "tenure"] = "lots"  # 50 of 300 rows: 17 %, over the 5 % limit
    # (read after the file whose rows make tenure numeric)
    world.store.put(RAW, LATE, csv_bytes(frame))
    outcome = world.upload(MAR, good(3))
    assert outcome.status == "started", outcome.reason
    assert [(f.key, f.rule) for f in outcome.excluded] == [(LATE, "too_many_rejected_rows")]
    assert outcome.rows is not None
    assert outcome.rows.read == 300 and outcome.rows.rejected == {}
    report = report_at(world, outcome.excluded[0].report_key)
    mismatch = next(v for v in report["violations"] if v["rule"] == "type_mismatch")
    assert mismatch["column"] == "tenure" and mismatch["count"] == 50
    assert mismatch["examples"][0] == {"file": LATE, "row": 1}


def test_a_few_bad_rows_in_a_file_are_still_dropped_and_the_file_kept(world: World) -> None:
    frame = churn_frame(300, seed=5).astype({"tenure": object})
    frame.loc[:5, "tenure"] = "lots"  # 6 of 300 rows: 2 %, within the limit
    world.store.put(RAW, LATE, csv_bytes(frame))
    outcome = world.upload(MAR, good(3))
    assert outcome.status == "started" and outcome.excluded == []
    assert outcome.rows is not None and outcome.rows.rejected == {"type_mismatch": 6}


def test_a_version_refused_for_a_dataset_rule_also_lists_the_files_left_out(world: World) -> None:
    # Given a bad older file, and a good upload too small to train on alone
    world.store.put(RAW, FEB, b"\x89PNG\r\n\x1a\n\x00\x00")
    outcome = world.upload(MAR, good(3, rows=60))
    assert outcome.status == "rejected"
    rules = {v["rule"]: v for v in world.report(outcome)["violations"]}
    assert rules["too_few_rows"]["count"] == 60
    assert rules["unreadable_file"]["file"] == FEB
    assert "aws s3 rm" in rules["unreadable_file"]["message"]
    assert world.pipeline.runs == {}


def test_the_same_objects_give_the_same_version_with_the_same_files_left_out(
    world: World,
) -> None:
    world.store.put(RAW, FEB, ragged())
    assert world.upload(MAR, good(3)).status == "started"
    versions = world.store.keys(ARTIFACTS, "churn/versions/")
    writes = len(world.store.writes)
    # When a distinct event over exactly the same objects arrives (S3 delivers one again)
    info = world.store.head(RAW, MAR)
    again = world.process(info.__class__(**{**info.__dict__}))  # type: ignore[union-attr]
    assert again.status == "duplicate"
    # And a rebuilt event for the bad file is refused again from the finished version's manifest
    info = world.store.head(RAW, FEB)
    refused = world.process(info)
    assert refused.status == "rejected"
    assert "Expected 6 columns, got 5" in refused.reason and "aws s3 rm" in refused.reason
    assert world.store.keys(ARTIFACTS, "churn/versions/") == versions
    assert len(world.store.writes) == writes + 1  # the rejection report only


def test_manifests_written_before_files_could_be_left_out_still_read() -> None:
    older = {
        "dataset": "churn",
        "dataset_version": "abc",
        "created_at": "2026-11-22T00:00:00+00:00",
        "contract_sha256": "0" * 64,
        "sources": [],
        "rows": RowCounts(
            read=0, duplicates_dropped=0, rejected={}, accepted=0, per_split={}
        ).model_dump(),
        "row_issues": [],
        "split": {},
        "schema_key": "s",
        "profile_key": "p",
        "split_keys": {},
    }
    assert Manifest.model_validate_json(json.dumps(older)).excluded == []


def test_a_rebuilt_event_for_the_bad_file_is_refused_even_when_its_report_is_gone(
    world: World,
) -> None:
    world.store.put(RAW, FEB, ragged())
    [left_out] = world.upload(MAR, good(3)).excluded
    world.store.delete(ARTIFACTS, left_out.report_key)
    refused = world.process(world.store.head(RAW, FEB))
    assert refused.status == "rejected"
    assert refused.reason == left_out.message
