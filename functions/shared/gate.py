"""The promotion gate's policy, in Python: the ``Gate`` Choice state of
infra/statemachine/pipeline.asl.json implements exactly this on ``GateInputs`` (a property test
runs both on the same inputs and checks they agree).

A challenger passes iff its contract metric meets the threshold AND it is no worse than the
live champion by more than the tolerance, in the metric's direction. Anything missing, NaN or
infinite fails closed: an unmeasurable model never goes live.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from functions.shared.metrics import metric_info


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


def decide(
    metric: str,
    challenger: float | None,
    champion: float | None,
    *,
    threshold: float,
    tolerance: float,
) -> GateDecision:
    higher = metric_info(metric).higher_is_better
    reasons: list[str] = []
    passed = True
    if challenger is None or not math.isfinite(challenger):
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
        if champion is None:
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
            passed &= holds
    return GateDecision(
        passed=passed,
        reasons=reasons,
        metric=metric,
        challenger=challenger,
        champion=champion,
        threshold=threshold,
        tolerance=tolerance,
    )


class GateInputs(BaseModel):
    """What the evaluate function hands the Choice state: JSON-safe (non-finite → null) and
    ready for ASL's path comparisons, which cannot negate or add. ``champion_floor`` is the
    champion's value shifted by the tolerance in the metric's direction: the bar the
    challenger must reach; null when there is no measurable champion."""

    model_config = ConfigDict(frozen=True)

    metric: str
    higher_is_better: bool
    challenger: float | None
    champion: float | None
    threshold: float
    tolerance: float
    champion_floor: float | None

    def decide(self) -> GateDecision:
        """The Python policy on exactly what the Choice state sees."""
        return decide(
            self.metric,
            self.challenger,
            self.champion,
            threshold=self.threshold,
            tolerance=self.tolerance,
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
) -> GateInputs:
    higher = metric_info(metric).higher_is_better
    champ = _finite(champion)
    floor = None if champ is None else _champion_floor(champ, tolerance, higher=higher)
    return GateInputs(
        metric=metric,
        higher_is_better=higher,
        challenger=_finite(challenger),
        champion=champ,
        threshold=threshold,
        tolerance=tolerance,
        champion_floor=floor,
    )
