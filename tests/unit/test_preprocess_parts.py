"""Per-file parts (issue 20): each data file is read once, into a part; a version lists its
parts and adds the new ones' distinct rows to the last version's totals. What must hold: the
version is the one a fresh build of the same files gives (rows, splits, counts, profile),
whatever order the files came in and whether it was added to or built afresh; a replaced file
supersedes its part; an upload reads no earlier file; duplicates across files are kept once."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from functions.preprocess import assemble
from functions.preprocess.logic import PreprocessOutcome, process_removal
from functions.preprocess.parts import read_index
from functions.preprocess.versions import read_manifest
from functions.shared import layout
from functions.shared.manifest import Manifest
from functions.shared.runs import manifest_key
from functions.shared.s3_events import (
    EventShapeError,
    RemovedObject,
    parse_removal_event,
    parse_upload_event,
)
from tests.builders import ARTIFACTS, EVENTS, RAW, World, churn_frame, csv_bytes

SPLITS = ("train", "validation", "test")
A, B, C = "churn/data/a.csv", "churn/data/b.csv", "churn/data/c.csv"


def data(seed: int, rows: int = 300, start: int = 0) -> bytes:
    return csv_bytes(churn_frame(rows, seed=seed, start_id=start))


def manifest(world: World, outcome: PreprocessOutcome) -> Manifest:
    assert outcome.dataset_version, outcome.reason
    return read_manifest(world.store, ARTIFACTS, "churn", outcome.dataset_version)


def profile(world: World, outcome: PreprocessOutcome) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        world.store.get_bytes(ARTIFACTS, manifest(world, outcome).profile_key)
    )
    return found


def same_profile(got: Any, want: Any) -> None:
    """Counts and shares exact, float statistics to the last few bits (Chan's merge)."""
    if isinstance(want, dict):
        assert set(got) == set(want)
        for key in want:
            same_profile(got[key], want[key])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            same_profile(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    else:
        assert got == want


def same_version(
    world: World,
    got: PreprocessOutcome,
    other: World,
    want: PreprocessOutcome,
    *,
    same_objects: bool = True,
) -> None:
    """The same rows, counts, profile and split files; the same version and part ids when the
    objects are the same (a replaced object is a new S3 version, so another id)."""
    mine, theirs = manifest(world, got), manifest(other, want)
    if same_objects:
        assert got.dataset_version == want.dataset_version
        assert [p.part_id for p in mine.parts] == [p.part_id for p in theirs.parts]
    assert mine.rows == theirs.rows
    same_profile(profile(world, got), profile(other, want))
    for split in SPLITS:
        mine_rows, their_rows = world.split(got, split), other.split(want, split)
        if not same_objects:  # other part ids: the parts' order, so the rows', may differ
            mine_rows = mine_rows.sort_values("customer_id", ignore_index=True)
            their_rows = their_rows.sort_values("customer_id", ignore_index=True)
        pd.testing.assert_frame_equal(mine_rows, their_rows)


def world_with(*files: tuple[str, bytes]) -> World:
    world = World()
    world.contract(id_column="customer_id")
    for key, body in files:
        world.store.put(RAW, key, body)
    return world


def test_files_added_one_by_one_give_the_version_a_fresh_build_of_them_gives() -> None:
    # Given three files whose rows overlap (b repeats 40 of a's rows, c 25 of b's)
    a = churn_frame(300, seed=1)
    b = pd.concat([a.iloc[:40], churn_frame(260, seed=2, start_id=1000)], ignore_index=True)
    c = pd.concat([b.iloc[100:125], churn_frame(275, seed=3, start_id=2000)], ignore_index=True)
    files = [(A, csv_bytes(a)), (B, csv_bytes(b)), (C, csv_bytes(c))]
    # When they arrive one at a time (each version added to the last one's totals)
    world = world_with()
    outcomes = [world.upload(key, body) for key, body in files]
    assert [o.status for o in outcomes] == ["started"] * 3
    # Then the last version is the one a build of all three at once gives
    fresh = world_with(*files[:2])
    at_once = fresh.upload(*files[2])
    same_version(world, outcomes[-1], fresh, at_once)
    rows = manifest(world, outcomes[-1]).rows
    assert rows.read == 900 and rows.duplicates_dropped == 65 and rows.accepted == 835
    # and the split files hold every distinct row once
    total = sum(len(world.split(outcomes[-1], s)) for s in SPLITS)
    assert total == 835


def test_two_files_in_either_order_give_the_same_version() -> None:
    first, second = (A, data(1)), (B, data(2, start=500))
    ab, ba = world_with(), world_with()
    ab.upload(*first)
    one = ab.upload(*second)
    ba.upload(*second)
    other = ba.upload(*first)
    assert one.status == other.status == "started"
    same_version(ab, one, ba, other)


def test_an_upload_reads_only_its_own_file_and_builds_only_its_own_part() -> None:
    world = world_with()
    for index in range(4):
        world.upload(f"churn/data/day-{index}.csv", data(index, start=1000 * index))
    world.store.downloads.clear()
    written_before = set(k for _, k in world.store.writes)
    outcome = world.upload("churn/data/day-4.csv", data(4, start=4000))
    assert outcome.status == "started", outcome.reason
    assert world.store.downloads == [(RAW, "churn/data/day-4.csv")]
    new_parts = {
        k.split("/")[2]
        for _, k in world.store.writes
        if k.startswith("churn/parts/") and k.endswith("/part.json") and k not in written_before
    }
    assert new_parts == {manifest(world, outcome).parts[-1].part_id} or len(new_parts) == 1
    assert manifest(world, outcome).rows.read == 1500


def test_a_replaced_file_supersedes_its_part_and_its_old_rows_leave_the_version() -> None:
    world = world_with()
    world.upload(A, data(1))
    before = world.upload(B, data(2, start=500))
    old_b = next(p for p in manifest(world, before).parts if p.key == B)
    # When b is uploaded again with other rows
    after = world.upload(B, data(7, rows=200, start=900))
    assert after.status == "started", after.reason
    parts = manifest(world, after).parts
    new_b = next(p for p in parts if p.key == B)
    # Then its new part replaces the old one, which stays stored for the old version
    assert new_b.part_id != old_b.part_id and old_b.part_id not in {p.part_id for p in parts}
    assert world.store.head(ARTIFACTS, old_b.index_key) is not None
    # and the version is what a fresh build of a and the new b gives
    fresh = world_with((A, data(1)))
    replaced = fresh.upload(B, data(7, rows=200, start=900))
    same_version(world, after, fresh, replaced, same_objects=False)


def test_a_replaced_file_that_shared_rows_with_another_is_subtracted_exactly() -> None:
    a = churn_frame(300, seed=1)
    shared = pd.concat([a.iloc[:50], churn_frame(250, seed=2, start_id=700)], ignore_index=True)
    world = world_with()
    world.upload(A, csv_bytes(a))
    world.upload(B, csv_bytes(shared))
    # When b is replaced by a file sharing other rows of a
    again = pd.concat([a.iloc[200:230], churn_frame(170, seed=5, start_id=1700)])
    after = world.upload(B, csv_bytes(again))
    fresh = world_with((A, csv_bytes(a)))
    same_version(world, after, fresh, fresh.upload(B, csv_bytes(again)), same_objects=False)
    assert manifest(world, after).rows.duplicates_dropped == 30


def test_ten_deliveries_of_one_file_build_one_part_one_version_and_one_run() -> None:
    world = world_with()
    info = world.store.put(RAW, A, data(1))
    outcomes = [world.process(info) for _ in range(10)]
    assert [o.status for o in outcomes] == ["started"] + ["duplicate"] * 9
    assert len(world.pipeline.runs) == 1
    assert len(world.store.downloads) == 1
    assert len(world.store.keys(ARTIFACTS, "churn/parts/")) == len(
        set(world.store.keys(ARTIFACTS, "churn/parts/"))
    )
    records = [k for k in world.store.keys(ARTIFACTS, "churn/parts/") if k.endswith("part.json")]
    manifests = [
        k for k in world.store.keys(ARTIFACTS, "churn/versions/") if k.endswith("manifest.json")
    ]
    assert len(records) == 1 and len(manifests) == 1


def test_a_part_without_its_record_is_built_again_and_a_stored_one_is_reused() -> None:
    world = world_with()
    first = world.upload(A, data(1))
    part = manifest(world, first).parts[0]
    # a crash after the split files but before part.json: nothing after it was written
    version = first.dataset_version or ""
    for key in (
        layout.part_record_key("churn", part.part_id),
        layout.version_state_key("churn", version),
        layout.latest_state_key("churn"),
        manifest_key("churn", version),
    ):
        world.store.objects.pop((ARTIFACTS, key))
    world.store.downloads.clear()
    again = world.upload(B, data(2, start=500))
    assert again.status == "started", again.reason
    assert sorted(k for _, k in world.store.downloads) == [A, B]
    assert [p.part_id for p in manifest(world, again).parts if p.key == A] == [part.part_id]


def test_a_stale_or_foreign_base_is_ignored_and_the_version_built_from_its_parts() -> None:
    world = world_with()
    world.upload(A, data(1))
    world.store.put(ARTIFACTS, layout.latest_state_key("churn"), b"{not json")
    got = world.upload(B, data(2, start=500))
    fresh = world_with((A, data(1)))
    same_version(world, got, fresh, fresh.upload(B, data(2, start=500)))


def test_seen_in_finds_exactly_the_needles_a_sorted_index_holds() -> None:
    rng = np.random.default_rng(0)
    index = np.unique(rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64))
    needles = np.concatenate([index[::7], rng.integers(0, 2**64 - 1, 500, dtype=np.uint64)])
    rng.shuffle(needles)
    want = np.isin(needles, index)
    assert np.array_equal(assemble.seen_in(needles, index), want)
    assert not assemble.seen_in(needles, index[:0]).any()
    assert np.array_equal(assemble.seen_in(index[-1:], index), [True])


def test_a_new_first_file_with_the_same_roles_rebuilds_no_other_part() -> None:
    # Given a dataset of two files; the roles come from the lowest key (b)
    world = world_with()
    world.upload(B, data(2, start=500))
    before = world.upload(C, data(3, start=900))
    # When a file whose key sorts first arrives (its roles' reasons quote its own counts)
    world.store.downloads.clear()
    after = world.upload(A, data(1, rows=350))
    # Then only it is read, and b's and c's parts stay the ones built before
    assert after.status == "started", after.reason
    assert world.store.downloads == [(RAW, A)]
    kept = {p.part_id for p in manifest(world, before).parts}
    assert kept < {p.part_id for p in manifest(world, after).parts}


def test_a_part_index_that_is_not_one_is_refused_naming_it() -> None:
    from functions.preprocess.parts import index_bytes, read_index

    good = np.array([1, 5, 9], dtype=np.uint64)
    signed = io.BytesIO()
    np.save(signed, good.astype(np.int64))
    assert read_index(index_bytes(good), 3, "k").tolist() == [1, 5, 9]
    bad = {
        "not an NPY file": b"garbage",
        "shape": index_bytes(good[:2]),
        "not strictly increasing": index_bytes(good[::-1].copy()),
        "int64": signed.getvalue(),
    }
    for problem, raw in bad.items():
        with pytest.raises(ValueError, match=problem):
            read_index(raw, 3, "parts/p/rows.u64.npy")


# --- deleted files ------------------------------------------------------------------------------


def removed(world: World, key: str, marker: str = "dm1") -> PreprocessOutcome:
    """Delete ``key`` (as a delete marker hides it) and process the event S3 sends for it."""
    world.store.objects.pop((RAW, key))
    return remove_event(world, key, marker)


def remove_event(world: World, key: str, marker: str = "dm1") -> PreprocessOutcome:
    return process_removal(
        RemovedObject(bucket=RAW, key=key, version_id=marker, sequencer=f"seq-{marker}"),
        store=world.store,
        orchestrator=world.pipeline,
        artifacts_bucket=ARTIFACTS,
    )


def test_a_deleted_file_leaves_the_version_and_a_run_starts_over_the_rest() -> None:
    world = world_with()
    world.upload(A, data(1))
    world.upload(B, data(2, start=500))
    outcome = removed(world, B)
    assert outcome.status == "started", outcome.reason
    assert [p.key for p in manifest(world, outcome).parts] == [A]
    # the version is the one the remaining file makes alone (reached by subtraction)
    alone = world_with()
    same_version(world, outcome, alone, alone.upload(A, data(1)))
    run = world.pipeline.runs[outcome.run_name or ""]
    assert run.dataset_version == outcome.dataset_version


def test_deleting_a_file_that_was_left_out_changes_no_rows_and_starts_nothing() -> None:
    world = world_with()
    world.upload(A, data(1))
    world.store.put(RAW, B, b"\x89PNG\r\n\x1a\n\x00\x00")
    with_bad = world.upload(C, data(3, start=900))
    assert [f.key for f in with_bad.excluded] == [B]
    runs = len(world.pipeline.runs)
    outcome = removed(world, B)
    assert outcome.status == "unchanged", outcome.reason
    assert "left out" in outcome.reason and len(world.pipeline.runs) == runs
    assert outcome.rows == with_bad.rows and outcome.excluded == []


def test_a_delete_delivered_ten_times_starts_one_run_and_a_restored_key_is_left_to_its_upload() -> (
    None
):
    world = world_with()
    world.upload(A, data(1))
    world.upload(B, data(2, start=500))
    world.store.objects.pop((RAW, B))
    outcomes = [remove_event(world, B) for _ in range(10)]
    assert [o.status for o in outcomes] == ["started"] + ["duplicate"] * 9
    # a delete whose key holds an object again (uploaded since) is stale: the upload runs
    world.store.put(RAW, B, data(2, start=500))
    assert remove_event(world, B, "dm2").status == "stale"


def test_deleting_the_last_file_is_refused_with_a_report_and_no_run() -> None:
    world = world_with()
    world.upload(A, data(1))
    runs = len(world.pipeline.runs)
    outcome = removed(world, A)
    assert outcome.status == "rejected" and "no CSV or Parquet files" in outcome.reason
    assert world.store.head(ARTIFACTS, outcome.report_key or "") is not None
    assert len(world.pipeline.runs) == runs


def test_delete_events_parse_from_eventbridge_and_notifications_and_nothing_else() -> None:
    sample = json.loads((EVENTS / "s3_object_deleted.eventbridge.json").read_text())
    [got] = parse_removal_event(sample)
    assert (got.key, got.version_id) == (
        "churn/data/churn.csv",
        sample["detail"]["object"]["version-id"],
    )
    assert parse_upload_event(sample) == []
    created = json.loads((EVENTS / "s3_object_created.eventbridge.json").read_text())
    assert parse_removal_event(created) == []
    notification = json.loads((EVENTS / "s3_object_created.s3_notification.json").read_text())
    record = notification["Records"][0]
    record["eventName"] = "ObjectRemoved:DeleteMarkerCreated"
    record["s3"]["object"].pop("size", None)
    record["s3"]["object"].pop("eTag", None)
    [from_notification] = parse_removal_event(notification)
    assert from_notification.key == unquote_plus(record["s3"]["object"]["key"])
    assert got.identity() != parse_upload_event(created)[0].identity()
    with pytest.raises(EventShapeError, match="malformed"):
        parse_removal_event({"detail-type": "Object Deleted", "detail": {}})


def test_a_file_with_no_possible_feature_is_refused_by_the_dataset_rule_not_a_crash() -> None:
    # R's MASS/SP500 as exported: a row number and the target (found by bench.gauntlet)
    world = World()
    world.contract(target="r500", task="regression", metric="r2", threshold=-1e9)
    frame = pd.DataFrame({"rownames": range(1, 301), "r500": np.linspace(-3, 3, 300)})
    outcome = world.upload("churn/data/sp500.csv", csv_bytes(frame))
    assert outcome.status == "rejected"
    assert outcome.reason.startswith("no column can be a feature")


def test_a_parts_index_is_exactly_the_sorted_hashes_of_the_rows_its_files_hold() -> None:
    # duplicates within the file, bad rows dropped: the index holds what was written, once
    frame = churn_frame(400, seed=4)
    frame = pd.concat([frame, frame.iloc[:30]], ignore_index=True).astype({"tenure": object})
    frame.loc[[5, 9], "tenure"] = "lots"
    world = world_with()
    outcome = world.upload(A, csv_bytes(frame))
    [part] = manifest(world, outcome).parts
    written = np.concatenate(
        [
            pq.read_table(io.BytesIO(world.store.get_bytes(ARTIFACTS, key)))
            .column("__row_hash")
            .to_numpy()
            for key in part.split_keys.values()
        ]
    )
    index = read_index(world.store.get_bytes(ARTIFACTS, part.index_key), part.rows_accepted, "i")
    assert np.array_equal(index, np.sort(written)) and len(np.unique(written)) == len(written)
    # 430 rows: 2 refused (their copies kept), 28 copies dropped
    assert part.rows_accepted == 400 == len(written)


def test_a_file_replaced_between_its_listing_and_its_download_is_left_to_its_own_event() -> None:
    # Given a store that lists no version ids (as S3's ListObjectsV2), in which b is replaced
    # the moment it is about to be read
    world = world_with()
    world.upload(A, data(1))
    newer = data(9, start=5000)
    real_download, real_list = world.store.download, world.store.list

    def unversioned(bucket: str, prefix: str) -> list[Any]:
        return [dataclasses.replace(o, version_id=None) for o in real_list(bucket, prefix)]

    world.store.list = unversioned  # type: ignore[method-assign]

    def replaced_first(bucket: str, key: str, dest: Any, **kwargs: Any) -> str:
        if key == B and world.store.get_bytes(RAW, B) != newer:
            world.store.put(RAW, B, newer)
        return real_download(bucket, key, dest, **kwargs)

    world.store.download = replaced_first  # type: ignore[method-assign]
    info = world.store.put(RAW, B, data(2, start=500))
    # When b's first event runs, the part it would build would name the old ETag: it stops
    outcome = world.process(info)
    assert outcome.status == "stale" and "replaced while this version was built" in outcome.reason
    # Then the replacement's event builds the version from the object really there
    latest = world.store.head(RAW, B)
    after = world.process(latest)
    assert after.status == "started", after.reason
    part = next(p for p in manifest(world, after).parts if p.key == B)
    assert part.etag == latest.etag  # type: ignore[union-attr]


def test_a_parts_profile_streamed_as_it_is_written_is_the_one_its_train_file_gives(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given row groups and profile chunks far smaller than a batch (many of each per file)
    from functions.preprocess import parts, profile
    from functions.preprocess.parts import PartBuilder, Policy, infer_roles, profiling_schema
    from functions.preprocess.profile import ProfileState
    from functions.shared.contract import Contract
    from functions.shared.storage import ObjectInfo

    monkeypatch.setattr(parts, "ROW_GROUP_ROWS", 64)
    monkeypatch.setattr(parts, "PROFILE_ROWS", 256)
    monkeypatch.setattr(profile, "PROFILE_ROWS", 256)
    local = tmp_path / "a.csv"
    local.write_bytes(data(seed=4, rows=3000))
    contract = Contract.model_validate(
        {"target": "churned", "task": "classification", "metric": "f1_macro", "threshold": 0.5}
    )
    pin = infer_roles(contract, local, A)
    source = ObjectInfo(RAW, A, local.stat().st_size, "etag")
    # When the part is built, its profile computed on the writer's thread as rows are written
    built = PartBuilder(contract, pin, "churn", "p", tmp_path, Policy()).build(local, source, "s")
    assert built.record is not None
    train = pq.ParquetFile(built.local["train"])
    # Then it is exactly the profile of the written train file, read back in the same chunks
    schema = profiling_schema(contract, pin, "churn")
    assert built.record.profile == ProfileState.from_parquet(built.local["train"], schema).to_dict()
    # and every row group but the last holds exactly ROW_GROUP_ROWS rows, in the order written
    groups = [train.metadata.row_group(i).num_rows for i in range(train.num_row_groups)]
    assert groups[:-1] == [64] * (len(groups) - 1) and 0 < groups[-1] <= 64
    assert train.metadata.num_rows > 4 * 256
