"""The retraining guards as pure functions: each guard at its boundaries, the reasons, the run
names, the state transitions, and (hypothesis) the two promises over any sequence of alarms:
never more than ``max_runs_per_day`` starts in any 24 h, never two starts within the debounce
window. The load-decide-claim loop and the stores are tested in
tests/integration/test_retrain_guard_store.py."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from functions.retrain.guard import (
    Decision,
    GuardPolicy,
    GuardState,
    InFlight,
    Trigger,
    apply,
    decide,
    finish,
    release,
    run_name,
)
from functions.shared.layout import DATASET_NAME
from functions.shared.orchestration import TRAINING_JOB_NAME
from functions.shared.runs import training_job_name

DATASET = "churn"
T0 = datetime(2026, 11, 22, 9, 17, 30, tzinfo=UTC)
POLICY = GuardPolicy()  # 1 h debounce, 3 a day, 1000 rows or 10 %, 6 h in flight
HOUR = timedelta(hours=1)
EASTERN = timezone(timedelta(hours=-5))
SECOND = timedelta(seconds=1)


def trigger(at: datetime = T0, dataset: str = DATASET, event: str = "e-1") -> Trigger:
    return Trigger(
        dataset=dataset, source="churn-drift", reason="PSI 0.31 > 0.2", at=at, event_id=event
    )


def started(
    *times: datetime, rows: int | None = 5000, in_flight: bool = False, revision: int = 7
) -> GuardState:
    """A state in which runs started at ``times`` (the last one in flight if asked)."""
    last = max(times) if times else None
    flight = None
    if in_flight and last is not None:
        flight = InFlight(run_name=f"retrain-churn-{last:%Y%m%d%H%M}", started_at=last)
    return GuardState(
        last_started_at=last,
        starts=tuple(sorted(times)),
        in_flight=flight,
        rows_at_last_run=rows,
        revision=revision,
    )


def at(now: datetime, state: GuardState, rows: int = 10_000, **policy: Any) -> Decision:
    return decide(GuardPolicy(**policy), state, trigger(now), rows, now)


# -- the first run ------------------------------------------------------------------------------


def test_a_dataset_without_state_starts_and_says_why() -> None:
    decision = decide(POLICY, GuardState(), trigger(), 420, T0)
    assert decision.action == "start"
    assert decision.guard is None
    assert decision.run_name == "retrain-churn-202611220900"
    assert decision.reason == (
        "started: no previous run recorded (420 rows now); run 1 of 3 in the last 24 h"
    )


# -- debounce -----------------------------------------------------------------------------------


def test_debounce_skips_one_second_before_the_window_ends() -> None:
    decision = at(T0 + HOUR - SECOND, started(T0))
    assert (decision.action, decision.guard) == ("skip", "debounce")
    assert decision.reason == "debounced: last run started 59 min 59 s ago (window 1 h)"
    assert decision.run_name is None


def test_debounce_allows_exactly_at_the_window_edge() -> None:
    assert at(T0 + HOUR, started(T0)).action == "start"


def test_debounce_names_minutes_and_a_custom_window() -> None:
    decision = at(T0 + timedelta(minutes=12), started(T0), debounce_seconds=90 * 60)
    assert decision.reason == "debounced: last run started 12 min ago (window 1 h 30 min)"


def test_a_start_in_the_future_clock_skew_is_debounced() -> None:
    decision = at(T0, started(T0 + timedelta(seconds=5)))
    assert decision.guard == "debounce"
    assert "5 s in the future (clock skew)" in decision.reason


# -- daily cap ----------------------------------------------------------------------------------


def test_daily_cap_counts_the_last_24_hours_and_says_when_it_frees() -> None:
    state = started(T0, T0 + 2 * HOUR, T0 + 4 * HOUR)
    decision = at(T0 + 24 * HOUR - SECOND, state)
    assert (decision.action, decision.guard) == ("skip", "daily_cap")
    assert decision.reason == (
        "daily cap: 3 runs started in the last 24 h (max 3); next allowed in 1 s"
    )


def test_daily_cap_window_slides_a_start_stops_counting_24_hours_later() -> None:
    state = started(T0, T0 + 2 * HOUR, T0 + 4 * HOUR)
    decision = at(T0 + 24 * HOUR, state)
    assert decision.action == "start"
    assert decision.reason.endswith("run 3 of 3 in the last 24 h")


def test_daily_cap_lowered_below_the_starts_waits_for_enough_to_expire() -> None:
    # four starts counted, the cap is now 2: three must expire, the third oldest at T0 + 26 h
    state = started(T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR)
    decision = at(T0 + 10 * HOUR, state, max_runs_per_day=2)
    assert decision.reason == (
        "daily cap: 4 runs started in the last 24 h (max 2); next allowed in 16 h"
    )


def test_apply_keeps_only_the_starts_of_the_last_24_hours() -> None:
    old, recent = T0 - 30 * HOUR, T0 - 2 * HOUR
    state = apply(started(old, recent), at(T0, started(old, recent)), T0)
    assert state.starts == (recent, T0)


# -- new data -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "current", "action"),
    [
        (5000, 5499, "skip"),  # 10 % of 5000 = 500 < 1000: the fraction decides
        (5000, 5500, "start"),
        (20_000, 20_999, "skip"),  # 10 % = 2000 > 1000: the row count decides
        (20_000, 21_000, "start"),
        (5000, 4000, "skip"),  # fewer rows than last time is no new data
    ],
)
def test_new_data_counts_when_either_threshold_is_met(last: int, current: int, action: str) -> None:
    decision = at(T0, started(T0 - 2 * HOUR, rows=last), rows=current)
    assert decision.action == action
    assert decision.guard == (None if action == "start" else "no_new_data")


def test_no_new_data_reason_names_rows_and_both_thresholds() -> None:
    decision = at(T0, started(T0 - 2 * HOUR, rows=5000), rows=5120)
    assert decision.reason == (
        "no new data: 120 new rows since the last run (5000 -> 5120), "
        "needs 1000 rows or 10% of 5000 (500)"
    )


def test_the_fraction_is_exact_decimal_arithmetic() -> None:
    # 0.7 * 100 is 70.00000000000001 in floats; 70 new rows must be enough
    state = started(T0 - 2 * HOUR, rows=100)
    assert at(T0, state, rows=170, min_new_rows=None, min_new_fraction=0.7).action == "start"
    assert at(T0, state, rows=169, min_new_rows=None, min_new_fraction=0.7).action == "skip"


def test_a_fraction_of_an_empty_dataset_still_needs_one_new_row() -> None:
    state = started(T0 - 2 * HOUR, rows=0)
    assert at(T0, state, rows=0, min_new_rows=None).guard == "no_new_data"
    assert at(T0, state, rows=1, min_new_rows=None).action == "start"


def test_each_threshold_alone_and_the_guard_switched_off() -> None:
    state = started(T0 - 2 * HOUR, rows=5000)
    assert at(T0, state, rows=5999, min_new_fraction=None).guard == "no_new_data"
    assert at(T0, state, rows=6000, min_new_fraction=None).action == "start"
    off = at(T0, state, rows=4000, min_new_rows=None, min_new_fraction=None)
    assert off.action == "start"
    assert "new-data guard off" in off.reason


def test_a_start_reason_names_the_new_rows_and_the_count() -> None:
    decision = at(T0, started(T0 - 2 * HOUR, rows=5000), rows=6500)
    assert decision.reason == (
        "started: 1500 new rows since the last run (5000 -> 6500), needs 1000 rows or 10% of "
        "5000 (500); run 2 of 3 in the last 24 h"
    )


# -- in flight ----------------------------------------------------------------------------------


def test_a_run_in_flight_blocks_until_its_timeout() -> None:
    state = started(T0, in_flight=True)
    decision = at(T0 + 6 * HOUR - SECOND, state)
    assert (decision.action, decision.guard) == ("skip", "in_flight")
    assert decision.reason == (
        "in flight: run retrain-churn-202611220917 started 5 h 59 min 59 s ago "
        "(presumed lost after 6 h)"
    )


def test_a_run_in_flight_longer_than_the_timeout_is_presumed_lost() -> None:
    decision = at(T0 + 6 * HOUR, started(T0, in_flight=True))
    assert decision.action == "start"
    assert "run retrain-churn-202611220917 presumed lost (started 6 h ago, timeout 6 h)" in (
        decision.reason
    )


def test_in_flight_is_reported_before_debounce() -> None:
    assert at(T0 + SECOND, started(T0, in_flight=True)).guard == "in_flight"


# -- run names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        (3600, T0, "retrain-churn-202611220900"),
        (900, T0, "retrain-churn-202611220915"),
        (60, T0, "retrain-churn-202611220917"),
        (86_400, T0, "retrain-churn-202611220000"),
        (3600, T0.astimezone(EASTERN), "retrain-churn-202611220900"),  # names are in UTC
    ],
)
def test_run_name_is_now_floored_to_the_debounce_window(
    window: int, now: datetime, expected: str
) -> None:
    assert run_name(DATASET, now, window) == expected


def test_everyone_in_one_window_names_the_same_run_the_next_window_another() -> None:
    names = {run_name(DATASET, T0 + timedelta(minutes=m), 3600) for m in range(42)}
    assert names == {"retrain-churn-202611220900"}
    assert run_name(DATASET, T0 + timedelta(minutes=43), 3600) == "retrain-churn-202611221000"


def test_datasets_that_are_not_name_safe_get_a_digest() -> None:
    assert run_name("a-b", T0, 3600) == "retrain-a-b-202611220900"
    underscored = run_name("a_b", T0, 3600)
    assert re.fullmatch(r"retrain-a-b-[0-9a-f]{8}-202611220900", underscored)
    longest = "x" * 64
    assert len(run_name(longest, T0, 3600)) <= 63
    assert run_name(longest, T0, 3600) != run_name("x" * 63, T0, 3600)


@settings(max_examples=200, deadline=None)
@given(
    dataset=st.from_regex(DATASET_NAME, fullmatch=True),
    minutes=st.integers(0, 60 * 24 * 365 * 50),
    window=st.integers(60, 7 * 86_400),
)
def test_run_names_are_valid_execution_and_training_job_names(
    dataset: str, minutes: int, window: int
) -> None:
    name = run_name(dataset, datetime(2000, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes), window)
    assert re.fullmatch(TRAINING_JOB_NAME, name), name
    assert len(name) <= 63
    assert training_job_name(name) == name  # what the pipeline's training job will be called


def test_windows_under_a_minute_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="at least a minute"):
        run_name(DATASET, T0, 59)
    with pytest.raises(ValidationError):
        GuardPolicy(debounce_seconds=30)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(POLICY, GuardState(), trigger(), 1, T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="current_rows"):
        decide(POLICY, GuardState(), trigger(), -1, T0)


# -- transitions --------------------------------------------------------------------------------


def test_apply_claims_the_start() -> None:
    before = started(T0 - 3 * HOUR, rows=5000)
    decision = at(T0, before)
    after = apply(before, decision, T0)
    assert after.last_started_at == T0
    assert after.starts == (T0 - 3 * HOUR, T0)
    assert after.in_flight == InFlight(
        run_name="retrain-churn-202611220900", started_at=T0, previous_started_at=T0 - 3 * HOUR
    )
    assert after.rows_at_last_run == 5000
    assert after.revision == before.revision + 1


def test_apply_refuses_a_skip() -> None:
    with pytest.raises(ValueError, match="only a start"):
        apply(GuardState(), Decision(action="skip", guard="debounce", reason="r"), T0)


def test_a_decision_is_consistent() -> None:
    with pytest.raises(ValidationError):
        Decision(action="start", reason="r")
    with pytest.raises(ValidationError):
        Decision(action="skip", reason="r", run_name="retrain-churn-202611220900")
    with pytest.raises(ValidationError):
        Decision(action="start", reason="r", run_name="retrain_churn")  # not a job name


def test_finish_clears_the_run_and_sets_the_baseline() -> None:
    claimed = apply(GuardState(), decide(POLICY, GuardState(), trigger(), 5000, T0), T0)
    name = "retrain-churn-202611220900"
    done = finish(claimed, name, 5000)
    assert (done.in_flight, done.rows_at_last_run, done.revision) == (None, 5000, 2)
    assert done.last_started_at == T0  # the debounce still counts from the start
    failed = finish(claimed, name, None)
    assert (failed.in_flight, failed.rows_at_last_run) == (None, None)


def test_finish_of_a_run_not_in_flight_changes_nothing() -> None:
    claimed = apply(GuardState(), decide(POLICY, GuardState(), trigger(), 5000, T0), T0)
    assert finish(claimed, "retrain-churn-202611210900", 5000) is claimed
    done = finish(claimed, "retrain-churn-202611220900", 5000)
    assert finish(done, "retrain-churn-202611220900", 9000) is done  # a duplicate event


def test_release_undoes_the_claim_as_if_it_never_happened() -> None:
    before = started(T0 - 3 * HOUR, rows=5000)
    claimed = apply(before, at(T0, before), T0)
    released = release(claimed, "retrain-churn-202611220900")
    assert released.model_dump(exclude={"revision"}) == before.model_dump(exclude={"revision"})
    assert released.revision == before.revision + 2
    assert release(released, "retrain-churn-202611220900") is released
    # and the next alarm in the same window may start the same run again
    assert at(T0 + SECOND, released).run_name == "retrain-churn-202611220900"


# -- the promises, over any sequence of events --------------------------------------------------

EDGES = ("debounce", "cap", "timeout")
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["alarm", "alarm", "alarm", "finish", "finish_failed", "start_fails"]),
        # when: a gap after the previous event, or a guard's edge (or a second before it)
        st.one_of(st.integers(0, 5 * 3600), st.tuples(st.sampled_from(EDGES), st.booleans())),
        st.integers(0, 3000),  # rows added since the previous event
    ),
    max_size=80,
)
POLICIES = st.builds(
    GuardPolicy,
    debounce_seconds=st.integers(60, 4 * 3600),
    max_runs_per_day=st.integers(1, 4),
    min_new_rows=st.none() | st.integers(1, 3000),
    min_new_fraction=st.none() | st.floats(0.01, 1.0),
    in_flight_timeout_seconds=st.integers(60, 12 * 3600),
)


def next_time(
    policy: GuardPolicy, state: GuardState, now: datetime, when: int | tuple[str, bool]
) -> datetime:
    """``now`` + a gap, or the moment a guard of ``state`` stops refusing (or 1 s before)."""
    if isinstance(when, int):
        return now + timedelta(seconds=when)
    edge, early = when
    target: datetime | None = None
    if edge == "debounce" and state.last_started_at is not None:
        target = state.last_started_at + timedelta(seconds=policy.debounce_seconds)
    elif edge == "cap" and state.starts:
        target = state.starts[0] + timedelta(hours=24)
    elif edge == "timeout" and state.in_flight is not None:
        target = state.in_flight.started_at + timedelta(seconds=policy.in_flight_timeout_seconds)
    if target is None:
        return now
    return max(now, target - SECOND if early else target)


@settings(max_examples=400, deadline=None)
@given(policy=POLICIES, events=EVENTS)
def test_no_sequence_of_alarms_breaks_the_cap_the_debounce_or_in_flight(
    policy: GuardPolicy, events: list[tuple[str, int | tuple[str, bool], int]]
) -> None:
    state, now, rows = GuardState(), T0, 1000
    runs: list[tuple[datetime, str]] = []  # the starts that really started
    for kind, when, added in events:
        now, rows = next_time(policy, state, now, when), rows + added
        if kind in ("finish", "finish_failed"):
            if state.in_flight is not None:
                state = finish(state, state.in_flight.run_name, rows if kind == "finish" else None)
            continue
        decision = decide(policy, state, trigger(now), rows, now)
        if decision.action == "skip":
            continue
        assert decision.run_name is not None
        blocking = state.in_flight
        assert blocking is None or now - blocking.started_at >= timedelta(
            seconds=policy.in_flight_timeout_seconds
        )
        claimed = apply(state, decision, now)
        if kind == "start_fails":
            state = release(claimed, decision.run_name)
        else:
            state = claimed
            runs.append((now, decision.run_name))
    debounce, day = timedelta(seconds=policy.debounce_seconds), timedelta(hours=24)
    for (earlier, _), (later, _) in itertools.pairwise(runs):
        assert later - earlier >= debounce
    for first, _ in runs:
        assert sum(first <= t < first + day for t, _ in runs) <= policy.max_runs_per_day
    assert len({name for _, name in runs}) == len(runs)  # one window, one name
