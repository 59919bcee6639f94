"""What changed between the live champion's features and the challenger's, named for a person.

The gate compares two models on the same test rows. That is only possible where the champion
can score the rows the challenger was tested on: its features must all still be there, each of
the same kind. Added columns are harmless (the champion ignores them); a removed, renamed or
re-typed feature, or a different target, makes the comparison impossible, and a gate that then
let the threshold alone decide would wave a worse model through. ``diff_schema`` says which case
a run is in; the gate refuses a blocking change unless the contract accepts it.

Kinds are compared as strings, so a kind added to ``FeatureKind`` needs no change here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from functions.shared.features import DatasetFacts, FeatureSpec

RENAME_SIMILARITY = 0.75
"""A removed and an added feature of the same kind are read as one renamed feature when their
names (lower-cased, letters and digits only) score at least this ``difflib`` ratio, or one of
three characters or more lies inside the other: ``monthly_charges`` → ``monthly_charge``,
``cust_id`` → ``customer_id`` (0.75), ``tenure`` → ``tenure_months`` (inside), but not ``id`` →
``paid`` (0.67) nor ``age`` → ``plan`` (0.29). A feature whose kind changed with its name is
reported as removed and added: nothing pairs them reliably."""
MIN_CONTAINED = 3  # a shorter name inside another is chance ("id" in "paid")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedFeature(_Frozen):
    name: str
    kind: str


class RenamedFeature(_Frozen):
    old: str
    new: str
    kind: str


class RetypedFeature(_Frozen):
    name: str
    old: str
    new: str


class SchemaChange(_Frozen):
    """How the challenger's features differ from those of live version ``champion_version``."""

    champion_version: int
    added: list[NamedFeature] = Field(default_factory=list)
    removed: list[NamedFeature] = Field(default_factory=list)
    renamed: list[RenamedFeature] = Field(default_factory=list)
    retyped: list[RetypedFeature] = Field(default_factory=list)
    target: str | None = None  # "'old' (task) → 'new' (task)" when the prediction itself changed
    accepted: bool = False  # the contract's accept_schema_change

    @property
    def blocking(self) -> bool:
        """True when the champion cannot score the challenger's test rows."""
        return bool(self.removed or self.renamed or self.retyped or self.target)

    def describe(self) -> str:
        """One line naming every change, e.g. ``removed: age (numeric); renamed: a → b``."""
        parts = []
        if self.target:
            parts.append(f"target changed: {self.target}")
        if self.removed:
            parts.append("removed: " + _named(self.removed))
        if self.renamed:
            parts.append(
                "renamed: " + ", ".join(f"{r.old} → {r.new} ({r.kind})" for r in self.renamed)
            )
        if self.retyped:
            parts.append(
                "re-typed: " + ", ".join(f"{r.name} ({r.old} → {r.new})" for r in self.retyped)
            )
        if self.added:
            parts.append("added: " + _named(self.added))
        return "; ".join(parts)


def diff_schema(
    champion: DatasetFacts, challenger: DatasetFacts, *, champion_version: int
) -> SchemaChange | None:
    """The change from the champion's card to the challenger's, ``None`` when there is none."""
    old = {f.name: _kind(f) for f in champion.features}
    new = {f.name: _kind(f) for f in challenger.features}
    removed = [NamedFeature(name=n, kind=k) for n, k in old.items() if n not in new]
    added = [NamedFeature(name=n, kind=k) for n, k in new.items() if n not in old]
    renamed = _pair_renames(removed, added)
    paired_old = {r.old for r in renamed}
    paired_new = {r.new for r in renamed}
    target = None
    if (champion.target, champion.task) != (challenger.target, challenger.task):
        target = (
            f"'{champion.target}' ({champion.task}) → '{challenger.target}' ({challenger.task})"
        )
    change = SchemaChange(
        champion_version=champion_version,
        added=[f for f in added if f.name not in paired_new],
        removed=[f for f in removed if f.name not in paired_old],
        renamed=renamed,
        retyped=[
            RetypedFeature(name=n, old=k, new=new[n]) for n, k in old.items() if new.get(n, k) != k
        ],
        target=target,
    )
    if not (change.added or change.blocking):
        return None
    return change


def _kind(feature: FeatureSpec) -> str:
    return str(feature.kind)


def _pair_renames(
    removed: Sequence[NamedFeature], added: Sequence[NamedFeature]
) -> list[RenamedFeature]:
    """Greedy pairing, most similar names first; each feature is paired at most once."""
    scored = sorted(
        (
            (_similarity(r.name, a.name), i, j)
            for i, r in enumerate(removed)
            for j, a in enumerate(added)
            if r.kind == a.kind
        ),
        key=lambda s: (-s[0], s[1], s[2]),
    )
    used_old: set[int] = set()
    used_new: set[int] = set()
    pairs: list[RenamedFeature] = []
    for score, i, j in scored:
        if score < RENAME_SIMILARITY or i in used_old or j in used_new:
            continue
        used_old.add(i)
        used_new.add(j)
        pairs.append(RenamedFeature(old=removed[i].name, new=added[j].name, kind=removed[i].kind))
    return sorted(pairs, key=lambda p: p.old)


def _similarity(a: str, b: str) -> float:
    x, y = _normalised(a), _normalised(b)
    if not x or not y:
        return 0.0
    shorter, longer = sorted((x, y), key=len)
    if len(shorter) >= MIN_CONTAINED and shorter in longer:
        return 1.0
    return difflib.SequenceMatcher(None, x, y).ratio()


def _normalised(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _named(features: Iterable[NamedFeature]) -> str:
    return ", ".join(f"{f.name} ({f.kind})" for f in features)
