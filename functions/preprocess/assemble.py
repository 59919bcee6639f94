"""A dataset version from its parts: the pin, the parts to build, and the version's totals over
its distinct rows, added to the last version's instead of re-read from every file
(docs/decisions.md, "Per-file parts").

The totals (``VersionState``: rows per split and class, the train rows' mergeable profile) are
those of the *distinct* rows of the version's parts. Appending a part adds its rows less those
whose hash another part already holds (one binary search per new row in each part's sorted
index); removing one subtracts its rows that no other part holds. Only a part that shares rows
is re-read, and only that part. Without a base (the first version, a contract or pin change,
more than ``MAX_DIFFS`` parts changed) the totals are summed over every part, duplicates found
with one ``np.unique`` over every index.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from functions.preprocess.parts import (
    Built,
    PartBuilder,
    PartRecord,
    PartSummary,
    Policy,
    RefusedPart,
    Roles,
    Rows,
    empty_profile,
    infer_roles,
    object_id,
    part_id,
    read_index,
    rows_of,
    schema_for,
    too_large_violations,
    upload_part,
)
from functions.preprocess.profile import NumericState, ProfileState
from functions.shared import layout
from functions.shared.contract import Contract
from functions.shared.features import DatasetSchema
from functions.shared.storage import ObjectInfo, ObjectStore

STATE_FORMAT = 1
TOO_LARGE = "file_too_large"  # refused unread by this reader, not for a fault of the object
MAX_DIFFS = 8  # parts added or removed since the base; past it the totals are summed afresh
FETCHERS = 8  # indexes read at once


class VersionState(BaseModel):
    """``versions/<v>/state.json``: the parts a version is made of and the totals of their
    distinct rows; the next upload's base."""

    format: int = STATE_FORMAT
    data_digest: str
    roles_sha: str
    parts: dict[str, PartSummary] = Field(default_factory=dict)  # accepted, by part id
    refused: dict[str, RefusedPart] = Field(default_factory=dict)
    per_split: dict[str, int] = Field(default_factory=dict)
    classes: dict[str, int] = Field(default_factory=dict)
    profile: dict[str, Any] = Field(default_factory=dict)


class ObjectTooLargeError(Exception):
    """An object over this reader's cap (``Policy.max_upload_bytes``): never downloaded here."""


@dataclass
class Parts:
    """The parts of the current listing: accepted ones (with their records where read), and
    refused ones, by source key."""

    pin: Roles
    accepted: dict[str, PartSummary]  # part id -> summary
    records: dict[str, PartRecord]  # part id -> record, for the parts read or built now
    built: dict[str, Built]  # part id -> built in this call (split files still local)
    refused: dict[str, tuple[ObjectInfo, RefusedPart]]  # source key -> refusal


def seen_in(needles: np.ndarray[Any, Any], index: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Which of ``needles`` the sorted ``index`` holds."""
    if index.size == 0 or needles.size == 0:
        return np.zeros(needles.shape, dtype=bool)
    at = np.minimum(np.searchsorted(index, needles), index.size - 1)
    found: np.ndarray[Any, Any] = index[at] == needles
    return found


def member_of(
    wanted: np.ndarray[Any, Any],
) -> Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
    """A row filter: the rows whose hash the sorted ``wanted`` holds."""
    return lambda hashes: seen_in(hashes, wanted)


class PartStore:
    """Reads parts' files from the artifacts bucket into a work folder, each once."""

    def __init__(self, store: ObjectStore, bucket: str, dataset: str, work: Path) -> None:
        self.store = store
        self.bucket = bucket
        self.dataset = dataset
        self.work = work

    def record(self, pid: str) -> PartRecord:
        raw = self.store.get_bytes(self.bucket, layout.part_record_key(self.dataset, pid))
        return PartRecord.model_validate_json(raw)

    def indexes(self, summaries: Iterable[PartSummary]) -> dict[str, np.ndarray[Any, Any]]:
        todo = list(summaries)

        def fetch(summary: PartSummary) -> np.ndarray[Any, Any]:
            raw = self.store.get_bytes(self.bucket, summary.index_key)
            return read_index(raw, summary.rows.accepted, summary.index_key)

        with ThreadPoolExecutor(FETCHERS) as pool:
            return dict(zip((s.part_id for s in todo), pool.map(fetch, todo), strict=True))

    def files(self, summary: PartSummary, built: Built | None) -> dict[str, Path]:
        if built is not None:
            return built.local
        files = {}
        for split, key in summary.split_keys.items():
            path = self.work / Path(key).name
            if not path.exists():
                self.store.download(self.bucket, key, path)
            files[split] = path
        return files


@dataclass
class Totals:
    """Rows per split and class and the train profile, over a set of distinct rows."""

    per_split: dict[str, int]
    classes: dict[str, int]
    profile: ProfileState

    def plus(self, rows: Rows, sign: int = 1) -> Totals:
        per_split = {
            s: self.per_split.get(s, 0) + sign * rows.per_split.get(s, 0)
            for s in {*self.per_split, *rows.per_split}
        }
        classes = dict(self.classes)
        for label, count in rows.classes.items():
            classes[label] = classes.get(label, 0) + sign * count
        profile = (
            self.profile.merge(rows.profile) if sign > 0 else self.profile.remove(rows.profile)
        )
        return Totals(per_split, {k: v for k, v in classes.items() if v}, profile)


def rows_of_record(record: PartRecord) -> Rows:
    return Rows(
        per_split=dict(record.rows.per_split),
        classes=dict(record.classes),
        profile=ProfileState.from_dict(record.profile),
    )


def empty_totals(schema: DatasetSchema) -> Totals:
    return Totals({"train": 0, "validation": 0, "test": 0}, {}, empty_profile(schema))


def with_extremes(profile: ProfileState, summaries: Iterable[PartSummary]) -> ProfileState:
    """Numeric min and max from the parts' own (a removal leaves them as bounds)."""
    kept = list(summaries)

    def fixed(name: str, state: Any) -> Any:
        if not isinstance(state, NumericState) or state.n == 0:
            return state
        found = [s.extremes[name] for s in kept if name in s.extremes]
        if not found:
            return state
        return replace(state, min=min(f[0] for f in found), max=max(f[1] for f in found))

    features = {name: fixed(name, state) for name, state in profile.features.items()}
    return replace(profile, features=features, target=fixed("__target__", profile.target))


class Assembler:
    """The totals of a version's distinct rows, from a base state or from scratch."""

    def __init__(self, parts: Parts, reader: PartStore, schema: DatasetSchema) -> None:
        self.parts = parts
        self.reader = reader
        self.schema = schema

    def _record(self, pid: str) -> PartRecord:
        if pid not in self.parts.records:
            self.parts.records[pid] = self.reader.record(pid)
        return self.parts.records[pid]

    def _rows(
        self, summary: PartSummary, keep: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]
    ) -> Rows:
        files = self.reader.files(summary, self.parts.built.get(summary.part_id))
        return rows_of(files, self.schema, keep)

    def full(self) -> Totals:
        order = sorted(self.parts.accepted)
        totals = empty_totals(self.schema)
        if not order:
            return totals
        if len(order) == 1:  # one part's rows are distinct already: no index to read
            return totals.plus(rows_of_record(self._record(order[0])))
        indexes = self._indexes(order)
        sizes = [indexes[p].size for p in order]
        winner = np.ones(sum(sizes), dtype=bool)
        if len(order) > 1:  # one part's index is distinct already
            _, first = np.unique(np.concatenate([indexes[p] for p in order]), return_index=True)
            winner[:] = False
            winner[first] = True
        start = 0
        for pid, size in zip(order, sizes, strict=True):
            kept = winner[start : start + size]
            start += size
            if kept.all():
                totals = totals.plus(rows_of_record(self._record(pid)))
            elif kept.any():
                wanted = indexes[pid][kept]
                totals = totals.plus(self._rows(self.parts.accepted[pid], member_of(wanted)))
        return totals

    def incremental(self, base: VersionState) -> Totals:
        totals = Totals(
            dict(base.per_split),
            dict(base.classes),
            ProfileState.from_dict(base.profile),
        )
        removed = sorted(set(base.parts) - set(self.parts.accepted))
        added = sorted(set(self.parts.accepted) - set(base.parts))
        held = sorted(set(base.parts))
        indexes = self._indexes(held, base.parts)
        indexes.update(self._indexes(added))
        members = set(held)
        for pid in removed:
            members.discard(pid)
            index = indexes[pid]
            shared = self._seen(index, members, indexes)
            summary = base.parts[pid]
            if not shared.any():
                totals = totals.plus(rows_of_record(self._record(pid)), -1)
            else:
                only = index[~shared]
                totals = totals.plus(self._rows(summary, member_of(only)), -1)
        for pid in added:
            index = indexes[pid]
            dup = self._seen(index, members, indexes)
            if not dup.any():
                totals = totals.plus(rows_of_record(self._record(pid)))
            elif not dup.all():
                fresh = index[~dup]
                totals = totals.plus(self._rows(self.parts.accepted[pid], member_of(fresh)))
            members.add(pid)
        if removed:
            totals.profile = with_extremes(totals.profile, self.parts.accepted.values())
        return totals

    @staticmethod
    def _seen(
        needles: np.ndarray[Any, Any],
        members: Iterable[str],
        indexes: dict[str, np.ndarray[Any, Any]],
    ) -> np.ndarray[Any, Any]:
        seen = np.zeros(needles.shape, dtype=bool)
        for pid in members:
            seen |= seen_in(needles, indexes[pid])
        return seen

    def _indexes(
        self, pids: Iterable[str], summaries: dict[str, PartSummary] | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        found = {}
        todo = []
        for pid in pids:
            built = self.parts.built.get(pid)
            if built is not None and built.index is not None:
                found[pid] = built.index
            else:
                todo.append((summaries or self.parts.accepted)[pid])
        found.update(self.reader.indexes(todo))
        return found


def latest_state(store: ObjectStore, bucket: str, dataset: str) -> VersionState | None:
    """The state of the last version built (``parts/latest.json`` names it); None when there is
    none or it cannot be read (a stale or broken hint only costs a full assembly)."""
    hint = layout.latest_state_key(dataset)
    if store.head(bucket, hint) is None:
        return None
    try:
        version = json.loads(store.get_bytes(bucket, hint))["dataset_version"]
        key = layout.version_state_key(dataset, str(version))
        if store.head(bucket, key) is None:
            return None
        return VersionState.model_validate_json(store.get_bytes(bucket, key))
    except (ValueError, KeyError, TypeError):
        return None


def base_of_state(
    state: VersionState | None, data_digest: str, roles_sha: str
) -> VersionState | None:
    """``state`` when a version under this contract data and pin can start from it."""
    if state is None:
        return None
    if (state.format, state.data_digest, state.roles_sha) != (STATE_FORMAT, data_digest, roles_sha):
        return None
    return state


def pin_of(
    store: ObjectStore,
    contract: Contract,
    dataset: str,
    bucket: str,
    sources: list[ObjectInfo],
    local: Callable[[ObjectInfo], Path],
) -> tuple[Roles, ObjectInfo | None]:
    """The column roles every part is built under, and the object they come from: those the
    lowest-key usable object's first rows give (as the first file fixed them before parts).
    Each object's roles are read once and kept (``layout.roles_key``); an object whose own part
    is refused is marked unusable there (``disqualify``)."""
    digest = contract.data_digest()
    for source in sources:
        key = layout.roles_key(dataset, object_id(digest, source))
        if store.head(bucket, key) is not None:
            roles = Roles.model_validate_json(store.get_bytes(bucket, key))
        else:
            try:
                path = local(source)
            except ObjectTooLargeError:
                continue  # not read here; a processing job reads it (and may pin from it)
            roles = infer_roles(contract, path, source.key)
            store.put_bytes(bucket, key, roles.model_dump_json().encode())
        if roles.readable:
            return roles, source
    return Roles(readable=False), None


def disqualify(
    store: ObjectStore, contract: Contract, dataset: str, bucket: str, source: ObjectInfo
) -> None:
    key = layout.roles_key(dataset, object_id(contract.data_digest(), source))
    store.put_bytes(bucket, key, Roles(readable=False).model_dump_json().encode())


def schema_of(
    contract: Contract,
    pin: Roles,
    dataset: str,
    version: str,
    summaries: Iterable[PartSummary],
    classes: dict[str, int],
) -> DatasetSchema:
    """The version's schema: the pin's features with what the parts showed of them."""
    kept = list(summaries)
    numeric = {name for s in kept for name in s.numeric_categories}
    features = [
        spec.model_copy(update={"text_only": spec.name not in numeric})
        if spec.kind.value == "categorical"
        else spec
        for spec in pin.features
    ]
    names = class_names(kept, classes)
    spelt = [names[k] for k in sorted(classes)] if contract.task == "classification" else None
    return schema_for(contract, features, pin.roles, dataset, version, spelt)


def class_names(summaries: Iterable[PartSummary], classes: Iterable[str]) -> dict[str, str]:
    """Each class (as matched) -> its most frequent spelling over the parts (ties: the first in
    sorted order)."""
    spellings: dict[str, dict[str, int]] = {}
    for summary in summaries:
        for label, counts in summary.spellings.items():
            mine = spellings.setdefault(label, {})
            for text, count in counts.items():
                mine[text] = mine.get(text, 0) + count
    return {
        key: min(spellings[key].items(), key=lambda pair: (-pair[1], pair[0]))[0]
        if spellings.get(key)
        else key
        for key in classes
    }


def build_parts(
    store: ObjectStore,
    raw_bucket: str,
    artifacts_bucket: str,
    dataset: str,
    contract: Contract,
    sources: list[ObjectInfo],
    policy: Policy,
    work: Path,
    base_of: Callable[[Roles], VersionState | None],
    progress: Callable[[ObjectInfo, int, int], None],
    owns: Callable[[ObjectInfo], bool] = lambda source: True,
) -> tuple[Parts, VersionState | None]:
    """Every source's part under the pin: taken from the base state, read from its record, or
    built now (downloading only the objects that have none). An object over
    ``policy.max_upload_bytes`` without a part is refused unread (``file_too_large``).
    ``owns``: the objects this caller builds (a processing job's instance takes its share;
    the pin's own object is taken by every caller, since the pin depends on it)."""
    downloads: dict[str, tuple[Path, str]] = {}

    def fetch(source: ObjectInfo) -> tuple[Path, str]:
        if source.size > policy.max_upload_bytes:
            raise ObjectTooLargeError(source.key)
        if source.key not in downloads or not downloads[source.key][0].exists():
            path = work / f"src-{len(downloads)}{Path(source.key).suffix.lower()}"
            # the object listed, not one uploaded since: its part id names this ETag
            sha = store.download(
                raw_bucket, source.key, path, version_id=source.version_id, if_match=source.etag
            )
            downloads[source.key] = (path, sha)
        return downloads[source.key]

    def local(source: ObjectInfo) -> Path:
        return fetch(source)[0]

    maker = _PartMaker(store, artifacts_bucket, dataset, contract, policy, work, fetch, progress)
    refused: dict[str, tuple[ObjectInfo, RefusedPart]] = {}
    while True:
        candidates = [s for s in sources if s.key not in refused]
        pin, origin = pin_of(store, contract, dataset, artifacts_bucket, candidates, local)
        base = base_of(pin)
        parts = Parts(pin=pin, accepted={}, records={}, built={}, refused=dict(refused))
        # The pin's own object first: refused, it cannot fix the roles of the others, and its
        # refusal (a fault of its own under its own roles) stands under any other pin.
        if origin is None or maker.take(origin, parts, base):
            break
        refused[origin.key] = parts.refused[origin.key]
        if refused[origin.key][1].violations[0].rule != TOO_LARGE:
            disqualify(store, contract, dataset, artifacts_bucket, origin)
    for source in sources:
        if source is not origin and source.key not in refused and owns(source):
            maker.take(source, parts, base)
    return parts, base


class _PartMaker:
    """Each source's part under a pin: from the base state, its stored record or refusal, or
    built now."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        dataset: str,
        contract: Contract,
        policy: Policy,
        work: Path,
        fetch: Callable[[ObjectInfo], tuple[Path, str]],
        progress: Callable[[ObjectInfo, int, int], None],
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.dataset = dataset
        self.contract = contract
        self.policy = policy
        self.work = work
        self.fetch = fetch
        self.progress = progress

    def take(self, source: ObjectInfo, parts: Parts, base: VersionState | None) -> bool:
        """Adds the source's part to ``parts``; False when it is refused."""
        pid = part_id(self.contract.data_digest(), parts.pin.sha, source)
        if base is not None and pid in base.parts:
            parts.accepted[pid] = base.parts[pid]
            return True
        if base is not None and pid in base.refused:
            parts.refused[source.key] = (source, base.refused[pid])
            return False
        record_key = layout.part_record_key(self.dataset, pid)
        if self.store.head(self.bucket, record_key) is not None:
            record = PartRecord.model_validate_json(self.store.get_bytes(self.bucket, record_key))
            parts.accepted[pid] = record.summary()
            parts.records[pid] = record
            return True
        rejected_key = layout.part_rejected_key(self.dataset, pid)
        if self.store.head(self.bucket, rejected_key) is not None:
            refused = RefusedPart.model_validate_json(
                self.store.get_bytes(self.bucket, rejected_key)
            )
            parts.refused[source.key] = (source, refused)
            return False
        try:
            path, sha = self.fetch(source)
        except ObjectTooLargeError:
            cap = self.policy.max_upload_bytes
            violations = too_large_violations(self.store, self.contract, [source], cap)
            parts.refused[source.key] = (source, RefusedPart(violations=violations))
            return False  # no marker: a reader with a larger cap builds it
        folder = self.work / pid
        folder.mkdir(exist_ok=True)
        builder = PartBuilder(
            self.contract,
            parts.pin,
            self.dataset,
            pid,
            folder,
            self.policy,
            functools.partial(self.progress, source),
        )
        built = builder.build(path, source, sha)
        path.unlink(missing_ok=True)
        upload_part(self.store, self.bucket, self.dataset, built)
        if built.refused is not None:
            parts.refused[source.key] = (source, built.refused)
            return False
        assert built.record is not None
        parts.accepted[pid] = built.record.summary()
        parts.records[pid] = built.record
        parts.built[pid] = built
        return True


def work_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="sluice-preprocess-")
