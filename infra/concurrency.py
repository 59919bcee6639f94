"""The stack's reserved Lambda concurrency: the ``reserved_concurrency`` context, validated in one
place for ``cdk synth`` (infra/aws/app.py) and for ``sluice doctor``, which checks it against the
account's unreserved concurrency. No CDK import here: the doctor runs without node."""

from __future__ import annotations

import json
from typing import Any

# The functions a stage may reserve concurrency for (``-c reserved_concurrency=...``).
RESERVABLE = ("preprocess", "batch", "retrain", "drift")


def reserved_concurrency(value: Any) -> dict[str, int]:
    """The ``reserved_concurrency`` context, a JSON object ``{"preprocess": 5}`` (in cdk.json, or
    a string with ``-c``): the functions that get a reservation. None by default: Lambda refuses a
    reservation that leaves less than the account's minimum unreserved (10 of a new account's
    quota of 10), so any default reservation would fail a new account's first deploy."""
    if value is None:
        return {}
    try:
        chosen = json.loads(value) if isinstance(value, str) else value
    except ValueError as error:
        raise ValueError(f"context reserved_concurrency: {value!r} is not JSON: {error}") from None
    if not isinstance(chosen, dict):
        raise ValueError(
            f"context reserved_concurrency: {value!r} must be an object of function → count "
            f"(functions: {', '.join(RESERVABLE)})"
        )
    for name, count in chosen.items():
        if name not in RESERVABLE:
            raise ValueError(
                f"context reserved_concurrency: '{name}' is not a function that takes a "
                f"reservation (known: {', '.join(RESERVABLE)})"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"context reserved_concurrency: {name}={count!r} must be a whole number ≥ 1 "
                "(0 would stop the function; leave it out for no reservation)"
            )
    return dict(chosen)
