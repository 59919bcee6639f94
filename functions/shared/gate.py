"""The promotion gate's policy, in Python: the Choice state in the pipeline definition must
implement exactly this (issue 3 adds the test that both agree).

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
            floor = champion - tolerance if higher else champion + tolerance
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
