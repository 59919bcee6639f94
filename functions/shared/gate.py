"""The promotion gate's policy, in Python: the ``Gate`` Choice state of
infra/statemachine/pipeline.asl.json implements exactly this on ``GateInputs`` (a property test
runs both on the same inputs and checks they agree).

A challenger passes iff its contract metric meets the threshold AND it is no worse than the
live champion by more than the tolerance, in the metric's direction, AND the two are
``comparable``: a champion whose features the new data no longer has (removed, renamed,
re-typed, another target) cannot be scored on the challenger's test rows, and a gate that let
the threshold alone decide then would wave a worse model through; the contract may accept such
a change explicitly (``accept_schema_change``). Anything missing, NaN or infinite fails closed:
an unmeasurable model never goes live.

The reasons also carry what a person needs to trust the figures and that does not decide: the
metric's bootstrap interval for both models, and a warning when the test split is small.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from functions.shared.metrics import metric_info
from functions.shared.schema_change import SchemaChange

MIN_TEST_ROWS = 50
MIN_CLASS_TEST_ROWS = 10
MAX_SMALL_CLASSES = 10  # named in the warning; the count says how many more


class GateDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: list[str]
    metric: str
    challenger: float | None
    champion: float | None
    threshold: float
    tolerance: float


def _champion_floor(champion: float, tolerance: float, *, higher: bool) -> float:
    return champion - tolerance if higher else champion + tolerance


class MetricInterval(BaseModel):
    """A percentile bootstrap interval of the contract metric on the test split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    level: float = Field(gt=0, lt=1)
    resamples: int = Field(ge=1)


class GateEvidence(BaseModel):
    """What the reasons report beside the verdict. Only ``GateInputs.comparable`` (derived from
    ``schema_change`` by ``gate_inputs``) decides; the rest informs the person reading them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_change: SchemaChange | None = None
    champion_note: str | None = None  # why a live champion was not scored, when it was not
    challenger_interval: MetricInterval | None = None
    champion_interval: MetricInterval | None = None
    test_rows: int | None = None
    small_classes: dict[str, int] = Field(default_factory=dict)  # class → test rows, < MIN
    more_small_classes: int = 0  # small classes past MAX_SMALL_CLASSES, not named


def decide(
    metric: str,
    challenger: float | None,
    champion: float | None,
    *,
    threshold: float,
    tolerance: float,
    comparable: bool = True,
    evidence: GateEvidence | None = None,
) -> GateDecision:
    higher = metric_info(metric).higher_is_better
    evidence = evidence or GateEvidence()
    reasons: list[str] = []
    passed = True
    if challenger is None or not math.isfinite(challenger):
        challenger_value = None
        passed = False
        reasons.append(f"challenger {metric} is {challenger!r}: not measurable, failing closed")
    else:
        meets = challenger >= threshold if higher else challenger <= threshold
        word = "≥" if higher else "≤"
        reasons.append(
            f"challenger {metric} {challenger:.6g} {'meets' if meets else 'misses'} "
            f"threshold {word} {threshold:.6g}"
        )
        passed &= meets
        challenger_value = challenger
    if not comparable:
        passed = False
        reasons.append(_incomparable(evidence.schema_change))
    elif challenger_value is not None:
        said, holds = _against_champion(
            challenger_value, champion, tolerance, higher, metric, evidence
        )
        reasons += said
        passed &= holds
    reasons += _interval_reasons(evidence)
    reasons += _small_split_warnings(evidence)
    return GateDecision(
        passed=passed,
        reasons=reasons,
        metric=metric,
        challenger=challenger,
        champion=champion,
        threshold=threshold,
        tolerance=tolerance,
    )


def _incomparable(change: SchemaChange | None) -> str:
    if change is None or not change.blocking:
        return "the gate inputs do not say the champion can be compared: failing closed"
    return (
        f"refused: the features changed since live version {change.champion_version} "
        f"({change.describe()}), so the champion cannot score the new test rows and the two "
        "models cannot be compared; if the change is intended, set "
        '"accept_schema_change": true in contract.json to let the threshold alone decide'
    )


def _against_champion(
    challenger: float,
    champion: float | None,
    tolerance: float,
    higher: bool,
    metric: str,
    evidence: GateEvidence,
) -> tuple[list[str], bool]:
    """What the champion comparison says, and whether the challenger holds up in it."""
    change = evidence.schema_change
    if change is not None and change.blocking:  # comparable only because accepted
        return [
            f"the features changed since live version {change.champion_version} "
            f"({change.describe()}): accepted by the contract (accept_schema_change), "
            "threshold alone decides"
        ], True
    reasons = []
    holds = True
    if change is not None:  # columns added: the champion ignores them
        reasons.append(
            f"features {change.describe()} since live version {change.champion_version}: "
            "the champion ignores them and is scored on the same rows"
        )
    if champion is None:
        if evidence.champion_note:
            reasons.append(
                f"live champion not scored ({evidence.champion_note}): threshold alone decides"
            )
        else:
            reasons.append("no live champion: threshold alone decides")
    elif not math.isfinite(champion):
        reasons.append(f"champion {metric} is {champion!r}: ignored, threshold alone decides")
    else:
        floor = _champion_floor(champion, tolerance, higher=higher)
        holds = challenger >= floor if higher else challenger <= floor
        reasons.append(
            f"challenger {challenger:.6g} vs champion {champion:.6g} "
            f"(tolerance {tolerance:.6g}): {'not worse' if holds else 'worse'} than allowed"
        )
    return reasons, holds


def _interval_reasons(evidence: GateEvidence) -> list[str]:
    shown = [
        f"{role} {interval.low:.6g}–{interval.high:.6g}"
        for role, interval in (
            ("challenger", evidence.challenger_interval),
            ("champion", evidence.champion_interval),
        )
        if interval is not None
    ]
    first = evidence.challenger_interval or evidence.champion_interval
    if first is None:
        return []
    rows = f" of {evidence.test_rows} test rows" if evidence.test_rows is not None else ""
    return [
        f"{first.level:.0%} bootstrap interval ({first.resamples} resamples{rows}): "
        + ", ".join(shown)
    ]


def _small_split_warnings(evidence: GateEvidence) -> list[str]:
    warnings = []
    if evidence.test_rows is not None and evidence.test_rows < MIN_TEST_ROWS:
        warnings.append(
            f"warning: the test split has only {evidence.test_rows} rows (under "
            f"{MIN_TEST_ROWS}): its figures are rough, read them with the interval"
        )
    if evidence.small_classes:
        named = ", ".join(f"'{c}' {n}" for c, n in evidence.small_classes.items())
        more = f" and {evidence.more_small_classes} more" if evidence.more_small_classes else ""
        warnings.append(
            f"warning: classes with under {MIN_CLASS_TEST_ROWS} test rows: {named}{more}; "
            "their per-class figures are noise"
        )
    return warnings


class GateInputs(BaseModel):
    """What the evaluate function hands the Choice state: JSON-safe (non-finite → null) and
    ready for ASL's path comparisons, which cannot negate or add. ``champion_floor`` is the
    champion's value shifted by the tolerance in the metric's direction: the bar the
    challenger must reach; null when there is no measurable champion. ``comparable`` must be
    true (a document without it is refused, by the Choice and here alike); ``evidence`` is read
    by people, not by the Choice."""

    model_config = ConfigDict(frozen=True)

    metric: str
    higher_is_better: bool
    challenger: float | None
    champion: float | None
    threshold: float
    tolerance: float
    champion_floor: float | None
    comparable: bool = False
    evidence: GateEvidence = Field(default_factory=GateEvidence)

    def decide(self) -> GateDecision:
        """The Python policy on exactly what the Choice state sees."""
        return decide(
            self.metric,
            self.challenger,
            self.champion,
            threshold=self.threshold,
            tolerance=self.tolerance,
            comparable=self.comparable,
            evidence=self.evidence,
        )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def gate_inputs(
    metric: str,
    challenger: float | None,
    champion: float | None,
    *,
    threshold: float,
    tolerance: float,
    evidence: GateEvidence | None = None,
) -> GateInputs:
    """``comparable`` unless the evidence holds a blocking schema change the contract did not
    accept. Under a blocking change no champion figure reaches the Choice: the champion cannot
    have been measured on these rows, and an accepted change lets the threshold alone decide."""
    higher = metric_info(metric).higher_is_better
    evidence = evidence or GateEvidence()
    change = evidence.schema_change
    blocking = change is not None and change.blocking
    champ = None if blocking else _finite(champion)
    floor = None if champ is None else _champion_floor(champ, tolerance, higher=higher)
    return GateInputs(
        metric=metric,
        higher_is_better=higher,
        challenger=_finite(challenger),
        champion=champ,
        threshold=threshold,
        tolerance=tolerance,
        champion_floor=floor,
        comparable=not blocking or (change is not None and change.accepted),
        evidence=evidence,
    )


def small_classes(class_rows: dict[str, int]) -> tuple[dict[str, int], int]:
    """The classes with under ``MIN_CLASS_TEST_ROWS`` test rows, fewest first, at most
    ``MAX_SMALL_CLASSES`` named, and how many more there are."""
    small = sorted(((n, c) for c, n in class_rows.items() if n < MIN_CLASS_TEST_ROWS))
    named = {c: n for n, c in small[:MAX_SMALL_CLASSES]}
    return named, max(0, len(small) - MAX_SMALL_CLASSES)
