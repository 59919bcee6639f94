"""What an explanation's base value plus contributions add up to: one list, read by the
explainer (``functions.shared.explanation``, imported on a version's first ``:explain``) and by
the API's response model (``functions.inference.models``, imported at cold start), so this
module imports nothing."""

from __future__ import annotations

from typing import Literal

Output = Literal[
    "value",
    "log_value",
    "weighted_log_value",
    "log_odds",
    "logit",
    "weighted_log_odds",
    "weighted_logit",
]
# Outputs with one margin per class: the explained class is chosen per row.
PER_CLASS_OUTPUTS: frozenset[str] = frozenset({"logit", "weighted_logit"})
