"""Whether an alarm may start a retraining run: the guards, as pure functions of a state.

An alarm (drift, live quality, error rate) asks for a run over the dataset's current data.
``decide`` answers from the dataset's ``GuardState``, checking in this order:

1. ``in_flight``: a run the guard started has not finished yet, unless it started
   ``in_flight_timeout_seconds`` ago or more (then it is presumed lost and no longer blocks);
   or the orchestrator says a run of the dataset is executing (``running``: an upload's run,
   or the guard's own, however old);
2. ``debounce``: the last start was less than ``debounce_seconds`` ago;
3. ``daily_cap``: ``max_runs_per_day`` starts already happened in the last 24 h (a sliding
   window: a start stops counting exactly 24 h after it happened);
4. ``no_new_data``: fewer new rows than the dataset had at the last run's end than *either*
   threshold asks for (``min_new_rows``, or ``min_new_fraction`` of the last run's rows).

(``no_data`` is recorded by the retrain function before any of these: the dataset's current
data has no complete dataset version to train on.)

``apply`` is the state after a start, ``release`` undoes a start that never happened (the
execution could not be started), ``finish`` ends one. Every change bumps ``revision``, which
the store (``guard_store``) conditions its writes on, so of two callers deciding on the same
state only one can act. Nothing here reads a clock or does I/O: ``now`` is always passed in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from functions.shared.layout import DATASET_NAME
from functions.shared.orchestration import TRAINING_JOB_NAME

GuardCode = Literal["debounce", "daily_cap", "no_new_data", "in_flight", "no_data", "retired"]

DAY = timedelta(hours=24)
RUN_NAME_PREFIX = "retrain-"
# The run name is the Step Functions execution name (80 at most) and, unchanged, the SageMaker
# training job name (functions/shared/runs.py::training_job_name keeps the last 63 of
# [a-zA-Z0-9-]): 63 characters of letters, digits and hyphens satisfy both.
RUN_NAME_LIMIT = 63
RUN_NAME_PATTERN = TRAINING_JOB_NAME
_STAMP = "%Y%m%d%H%M"
_DATASET_ROOM = RUN_NAME_LIMIT - len(RUN_NAME_PREFIX) - len("-yyyymmddhhmm")  # 42
_DIGEST = 8


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardPolicy(_Frozen):
    """The limits, per dataset. docs/decisions.md says why these defaults."""

    debounce_seconds: int = Field(default=3600, ge=60)  # ≥ 1 min: run names have minutes
    max_runs_per_day: int = Field(default=3, ge=1)
    # New data counts if EITHER threshold is met; None switches one off, both None the guard.
    min_new_rows: int | None = Field(default=1000, ge=1)
    min_new_fraction: float | None = Field(default=0.1, gt=0)
    in_flight_timeout_seconds: int = Field(default=6 * 3600, ge=60)


class Trigger(_Frozen):
    """One alarm event, as the retrain function receives it from EventBridge."""

    dataset: str = Field(pattern=DATASET_NAME.pattern)
    source: str  # the alarm's name
    reason: str  # the alarm's reason text
    at: AwareDatetime  # when the alarm changed state
    event_id: str = Field(min_length=1, pattern=r"^[^#]+$")  # EventBridge's event id


class InFlight(_Frozen):
    run_name: str
    started_at: AwareDatetime
    previous_started_at: AwareDatetime | None = None  # what ``release`` restores


class GuardState(_Frozen):
    """A dataset's guard state; ``revision`` 0 means nothing was ever stored."""

    last_started_at: AwareDatetime | None = None
    starts: tuple[AwareDatetime, ...] = ()  # starts of the last 24 h, oldest first
    in_flight: InFlight | None = None
    rows_at_last_run: int | None = Field(default=None, ge=0)
    revision: int = Field(default=0, ge=0)


class Decision(_Frozen):
    action: Literal["start", "skip"]
    reason: str  # names the guard and its numbers
    guard: GuardCode | None = None  # which guard refused; None for a start
    run_name: str | None = Field(default=None, pattern=RUN_NAME_PATTERN)  # set for a start

    @model_validator(mode="after")
    def _consistent(self) -> Decision:
        if self.action == "start" and (self.run_name is None or self.guard is not None):
            raise ValueError("a start names its run and no guard")
        if self.action == "skip" and (self.run_name is not None or self.guard is None):
            raise ValueError("a skip names the guard that refused and no run")
        return self


def decide(
    policy: GuardPolicy,
    state: GuardState,
    trigger: Trigger,
    current_rows: int,
    now: datetime,
    running: Sequence[str] = (),
) -> Decision:
    """Start or skip, and why. ``current_rows``: rows of the dataset's current data;
    ``running``: names of the dataset's runs executing now, as the orchestrator reports them."""
    _require_aware(now)
    if current_rows < 0:
        raise ValueError(f"current_rows must be ≥ 0, got {current_rows}")
    lost = ""
    if state.in_flight is not None:
        age = now - state.in_flight.started_at
        timeout = timedelta(seconds=policy.in_flight_timeout_seconds)
        if age < timeout:
            return _skip(
                "in_flight",
                f"in flight: run {state.in_flight.run_name} started {_ago(age)} "
                f"(presumed lost after {_span(timeout)})",
            )
        lost = (
            f"; run {state.in_flight.run_name} presumed lost (started {_ago(age)}, "
            f"timeout {_span(timeout)})"
        )
    if running:
        return _skip("in_flight", f"in flight: run {running[0]} is executing")
    if state.last_started_at is not None:
        since = now - state.last_started_at
        window = timedelta(seconds=policy.debounce_seconds)
        if since < window:
            return _skip(
                "debounce", f"debounced: last run started {_ago(since)} (window {_span(window)})"
            )
    recent = sorted(_recent(state.starts, now))
    if len(recent) >= policy.max_runs_per_day:
        # the start whose expiry brings the count below the cap
        frees = recent[len(recent) - policy.max_runs_per_day] + DAY
        return _skip(
            "daily_cap",
            f"daily cap: {len(recent)} runs started in the last 24 h "
            f"(max {policy.max_runs_per_day}); next allowed in {_span(frees - now)}",
        )
    enough, data = _new_data(policy, state.rows_at_last_run, current_rows)
    if not enough:
        return _skip("no_new_data", f"no new data: {data}")
    return Decision(
        action="start",
        reason=f"started: {data}; run {len(recent) + 1} of {policy.max_runs_per_day} in the "
        f"last 24 h{lost}",
        run_name=run_name(trigger.dataset, now, policy.debounce_seconds),
    )


def apply(state: GuardState, decision: Decision, now: datetime) -> GuardState:
    """The state once ``decision`` (a start) is claimed: the run is in flight."""
    _require_aware(now)
    if decision.action != "start" or decision.run_name is None:
        raise ValueError("only a start changes the guard state")
    return GuardState(
        last_started_at=now,
        starts=(*sorted(_recent(state.starts, now)), now),
        in_flight=InFlight(
            run_name=decision.run_name, started_at=now, previous_started_at=state.last_started_at
        ),
        rows_at_last_run=state.rows_at_last_run,
        revision=state.revision + 1,
    )


def finish(state: GuardState, run_name: str, rows: int | None) -> GuardState:
    """The run ended: it no longer blocks, and ``rows`` (the rows it trained on) become the
    baseline of the new-data guard. ``rows=None`` (the run failed) keeps the old baseline.

    A run that is not the one in flight (a duplicate event, or a run presumed lost that another
    run has replaced) changes nothing: the same state, same revision, comes back.
    """
    if state.in_flight is None or state.in_flight.run_name != run_name:
        return state
    if rows is not None and rows < 0:
        raise ValueError(f"rows must be ≥ 0, got {rows}")
    return state.model_copy(
        update={
            "in_flight": None,
            "rows_at_last_run": state.rows_at_last_run if rows is None else rows,
            "revision": state.revision + 1,
        }
    )


def release(state: GuardState, run_name: str) -> GuardState:
    """Undo the claim of a start whose execution could not be started: as if it never was
    (no longer in flight, not counted by the daily cap, and the debounce window measured from
    the start before it). Not the run in flight: the same state comes back."""
    flight = state.in_flight
    if flight is None or flight.run_name != run_name:
        return state
    last = state.last_started_at
    return state.model_copy(
        update={
            "in_flight": None,
            "starts": tuple(s for s in state.starts if s != flight.started_at),
            "last_started_at": flight.previous_started_at if last == flight.started_at else last,
            "revision": state.revision + 1,
        }
    )


def run_name(dataset: str, now: datetime, window_seconds: int) -> str:
    """``retrain-<dataset>-<yyyymmddhhmm>``: ``now`` floored to the debounce window (windows
    aligned on the Unix epoch, UTC), so everyone deciding within one window names the same run
    and Step Functions itself refuses a second execution of it.

    Two starts are at least one window apart (the debounce guard), hence in different windows,
    hence differently named; windows of a minute or more keep that true at minute precision.
    A dataset name that is not already letters, digits and hyphens within 42 characters (an
    underscore, or too long) becomes its first 33 characters (``_`` → ``-``), a hyphen and 8 hex
    digits of its SHA-256, so ``a_b`` and ``a-b`` still get different names.
    """
    _require_aware(now)
    if window_seconds < 60:
        raise ValueError("the run-name window must be at least a minute")
    floored = math.floor(now.timestamp()) // window_seconds * window_seconds
    stamp = datetime.fromtimestamp(floored, UTC).strftime(_STAMP)
    return f"{RUN_NAME_PREFIX}{_name_part(dataset)}-{stamp}"


def _name_part(dataset: str) -> str:
    safe = dataset.replace("_", "-")
    if safe == dataset and len(dataset) <= _DATASET_ROOM:
        return dataset
    digest = hashlib.sha256(dataset.encode()).hexdigest()[:_DIGEST]
    return f"{safe[: _DATASET_ROOM - _DIGEST - 1]}-{digest}"


def _new_data(policy: GuardPolicy, last: int | None, current: int) -> tuple[bool, str]:
    if last is None:
        return True, f"no previous run recorded ({current} rows now)"
    new = current - last
    needs: list[tuple[int, str]] = []
    if policy.min_new_rows is not None:
        needs.append((policy.min_new_rows, f"{policy.min_new_rows} rows"))
    if policy.min_new_fraction is not None:
        # exact decimal arithmetic: 0.7 * 100 is 70, not 70.00000000000001
        rows = max(1, math.ceil(Fraction(str(policy.min_new_fraction)) * last))
        needs.append((rows, f"{policy.min_new_fraction * 100:g}% of {last} ({rows})"))
    counted = f"{new} new rows since the last run ({last} -> {current})"
    if not needs:
        return True, f"{counted}, new-data guard off"
    wanted = " or ".join(text for _, text in needs)
    return new >= min(rows for rows, _ in needs), f"{counted}, needs {wanted}"


def _recent(starts: tuple[datetime, ...], now: datetime) -> list[datetime]:
    """The starts that count against the cap at ``now``: those of the last 24 h."""
    return [s for s in starts if s > now - DAY]


def _skip(guard: GuardCode, reason: str) -> Decision:
    return Decision(action="skip", guard=guard, reason=reason)


def _ago(delta: timedelta) -> str:
    if delta < timedelta(0):
        return f"{_span(-delta)} in the future (clock skew)"
    return f"{_span(delta)} ago"


def _span(delta: timedelta) -> str:
    """``1 h``, ``12 min``, ``59 min 59 s``, ``0 s``: whole seconds, largest units first."""
    seconds = math.floor(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts) or "0 s"


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
