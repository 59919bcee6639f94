"""Drift statistics and report: PSI/KS against profiles built by preprocessing's own code."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.drift.report import report_html, report_json
from functions.drift.stats import (
    EPSILON,
    MIN_LIVE_ROWS,
    DriftResult,
    FeatureDrift,
    category_counts,
    drift,
    kolmogorov_sf,
    ks_numeric,
    numeric_bin_labels,
    psi,
    psi_categorical,
    psi_level,
    psi_numeric,
)
from functions.preprocess.profile import categorical_profile, numeric_profile
from functions.shared.contract import FeatureKind
from functions.shared.features import FeatureSpec

N = 5000


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return numeric_profile(rng.normal(10.0, 2.0, N))


def live(shift_sd: float, seed: int = 8) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(10.0 + 2.0 * shift_sd, 2.0, N)


# --- numeric -------------------------------------------------------------------------------


def test_the_same_distribution_does_not_drift(baseline: dict[str, Any]) -> None:
    result = psi_numeric(baseline, live(0.0), feature="x")
    assert result.psi is not None
    assert result.psi < 0.02
    assert result.level == "none"
    assert result.ks is not None
    assert result.ks < 0.03
    assert result.ks_pvalue is not None
    assert result.ks_pvalue > 0.05
    assert result.bins[0].label.startswith("(-inf, ")
    assert len(result.bins) == 10  # deciles; no missing bin when neither side has missing values


def test_a_shift_of_one_sd_is_major_drift(baseline: dict[str, Any]) -> None:
    result = psi_numeric(baseline, live(1.0), feature="x")
    assert result.psi is not None
    assert result.psi > 0.25
    assert result.level == "major"
    assert result.ks is not None
    assert result.ks > 0.3
    assert result.ks_pvalue is not None
    assert result.ks_pvalue < 1e-6


def test_a_shift_of_a_fifth_sd_is_small_but_seen(baseline: dict[str, Any]) -> None:
    result = psi_numeric(baseline, live(0.2), feature="x")
    assert result.psi is not None
    assert 0.02 < result.psi < 0.1
    assert result.level == "none"
    assert result.ks_pvalue is not None
    assert result.ks_pvalue < 1e-3  # with 5000 rows a side, KS does see it


def test_ks_numeric_agrees_with_psi_numeric(baseline: dict[str, Any]) -> None:
    values = live(0.5)
    ks = ks_numeric(baseline, values)
    scored = psi_numeric(baseline, values)
    assert ks == (scored.ks, scored.ks_pvalue)


def test_psi_and_ks_by_hand() -> None:
    # Training: one inner edge at 0, half the rows on each side, 10 rows, none missing.
    profile = {
        "kind": "numeric",
        "count": 10,
        "missing": 0,
        "histogram": {"edges": [0.0], "shares": [0.5, 0.5]},
    }
    # Live: 3 of 4 below 0 -> actual shares 0.75 / 0.25.
    # PSI = (0.75 - 0.5)·ln(0.75/0.5) + (0.25 - 0.5)·ln(0.25/0.5)
    #     = 0.25·0.405465 + 0.25·0.693147 = 0.274653  (major)
    result = psi_numeric(profile, np.array([-3.0, -1.0, -0.5, 2.0]))
    assert result.psi == pytest.approx(0.25 * math.log(1.5) + 0.25 * math.log(2.0))
    assert result.psi == pytest.approx(0.274653, abs=1e-6)
    assert result.level == "major"
    # KS at the edge: CDF_train(0) = 0.5, CDF_live(0) = 0.75 -> D = 0.25;
    # n_eff = 10·4/14 = 2.857, √n_eff·D = 0.4226 -> p = Q(0.4226) ≈ 0.99.
    assert result.ks == pytest.approx(0.25)
    assert result.ks_pvalue == pytest.approx(kolmogorov_sf(math.sqrt(40 / 14) * 0.25))
    assert [b.label for b in result.bins] == ["(-inf, 0)", "[0, inf)"]
    # A value on an edge goes right, exactly as profile.py binned training values.
    even = psi_numeric(profile, np.array([-3.0, -1.0, 0.0, 2.0]))
    assert even.psi == pytest.approx(0.0)
    assert [b.actual for b in even.bins] == [0.5, 0.5]


def test_an_empty_bin_on_either_side_gives_a_finite_psi() -> None:
    profile = {
        "kind": "numeric",
        "count": 100,
        "missing": 0,
        "histogram": {"edges": [1.0, 2.0], "shares": [0.5, 0.0, 0.5]},
    }
    result = psi_numeric(profile, np.full(200, 5.0))  # live: all in the last bin
    assert result.psi is not None
    assert math.isfinite(result.psi)
    # (1e-4 - 0.5)·ln(1e-4/0.5) + 0 (empty on both sides) + (1 - 0.5)·ln(1/0.5)
    assert result.psi == pytest.approx(
        (EPSILON - 0.5) * math.log(EPSILON / 0.5) + 0.5 * math.log(2.0)
    )


def test_missing_values_are_a_bin_of_their_own() -> None:
    values = np.random.default_rng(1).normal(size=N)
    values[:500] = np.nan  # 10 % missing in training
    profile = numeric_profile(values)
    same = np.random.default_rng(2).normal(size=N)
    same[:500] = np.nan
    steady = psi_numeric(profile, same)
    assert steady.psi is not None
    assert steady.psi < 0.02
    assert steady.bins[-1].label == "missing"
    assert steady.bins[-1].expected == pytest.approx(0.1)
    assert steady.live_missing == 500

    more_missing = np.random.default_rng(2).normal(size=N)
    more_missing[:2000] = np.nan  # 40 % missing live, present values unchanged
    shifted = psi_numeric(profile, more_missing)
    assert shifted.psi is not None
    assert shifted.psi > 0.25
    assert shifted.bins[-1].actual == pytest.approx(0.4)
    # KS is on present values only: their distribution did not move
    assert shifted.ks is not None
    assert shifted.ks < 0.05
    # None in a live column is missing too
    with_none = psi_numeric(profile, [None, 1.0, None, 0.0])
    assert with_none.live_missing == 2


def test_kolmogorov_sf_matches_published_values() -> None:
    assert kolmogorov_sf(0.0) == 1.0
    assert kolmogorov_sf(0.5) == pytest.approx(0.9639452436648751, rel=1e-9)
    assert kolmogorov_sf(1.0) == pytest.approx(0.26999967167735456, rel=1e-9)
    assert kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-4)  # the 5 % critical value
    assert kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-4)
    # the two series meet at 1.18
    assert kolmogorov_sf(1.18 - 1e-9) == pytest.approx(kolmogorov_sf(1.18), rel=1e-7)


def test_bin_labels_stay_distinct() -> None:
    assert numeric_bin_labels([3.2, 7.5]) == ["(-inf, 3.2)", "[3.2, 7.5)", "[7.5, inf)"]
    labels = numeric_bin_labels([1.00001, 1.00002])
    assert len(set(labels)) == 3
    assert numeric_bin_labels([]) == ["(-inf, inf)"]


# --- categorical ---------------------------------------------------------------------------


def test_a_categorical_share_change_is_major_drift() -> None:
    profile = categorical_profile(np.array(["a", "b"] * (N // 2), dtype=object))
    same = psi_categorical(profile, np.array(["a", "b"] * (N // 2), dtype=object))
    assert same.psi == pytest.approx(0.0)
    moved = psi_categorical(profile, np.array(["a"] * 4000 + ["b"] * 1000, dtype=object))
    # 0.3·ln(1.6) + 0.3·ln(2.5) = 0.4159
    assert moved.psi == pytest.approx(0.3 * math.log(1.6) + 0.3 * math.log(2.5))
    assert moved.level == "major"
    assert moved.ks is None
    assert moved.ks_pvalue is None


def test_unseen_categories_fall_into_other_and_none_is_missing() -> None:
    profile = {
        "kind": "categorical",
        "count": 100,
        "cardinality": 4,
        "shares": {"a": 0.6, "b": 0.3, "__other__": 0.1},
    }
    values = np.array(["a"] * 60 + [" B"] * 25 + ["c"] * 10 + ["zz"] * 3 + [None, "NULL"], object)
    result = psi_categorical(profile, values)
    shares = {b.label: (b.expected, b.actual) for b in result.bins}
    assert shares["b"] == (0.3, 0.25)  # normalised as training normalised it
    assert shares["__other__"] == (0.1, 0.13)
    assert shares["__missing__"] == (0.0, 0.02)
    assert result.live_missing == 2
    assert list(shares) == ["a", "b", "__other__", "__missing__"]
    assert result.unlisted_categories == {"c": 0.1, "zz": 0.03}


def test_categories_are_counted_by_type_as_well_as_value() -> None:
    # True == 1 == 1.0 in Python, but "true" and "1" are different categories
    counts = category_counts(np.array([True, 1, 1.0, "1", None, float("nan")], dtype=object))
    assert counts == {"true": 1, "1": 3, "__missing__": 2}


# --- a dataset -----------------------------------------------------------------------------


SPECS = [
    FeatureSpec(name="age", kind=FeatureKind.NUMERIC),
    FeatureSpec(name="plan", kind=FeatureKind.CATEGORICAL),
    FeatureSpec(name="spend", kind=FeatureKind.NUMERIC),
    FeatureSpec(name="region", kind=FeatureKind.CATEGORICAL),
]


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    return {
        "rows": N,
        "features": {
            "age": numeric_profile(rng.normal(40, 10, N)),
            "plan": categorical_profile(rng.choice(np.array(["basic", "pro"], object), N)),
            "spend": numeric_profile(rng.exponential(50, N)),
            "region": categorical_profile(rng.choice(np.array(["eu", "us"], object), N)),
        },
    }


@pytest.fixture(scope="module")
def result(profile: dict[str, Any]) -> DriftResult:
    rng = np.random.default_rng(4)
    columns = {
        "age": rng.normal(50, 10, 1000),  # +1 sd: major
        "plan": rng.choice(np.array(["basic", "pro", "<script>alert(1)</script>"], object), 1000),
        "spend": rng.exponential(50, 40),  # too few rows to score
        # "region" was not captured at all
    }
    return drift(profile, SPECS, columns, dataset="churn", dataset_version="v1")


def test_drift_scores_what_it_can_and_reports_the_rest(result: DriftResult) -> None:
    by_name = {f.feature: f for f in result.features}
    assert [f.feature for f in result.features] == ["age", "plan", "spend", "region"]
    assert by_name["age"].level == "major"
    assert by_name["plan"].level == "major"  # a third of the rows in a category never seen
    assert by_name["spend"].status == "insufficient_data"
    assert by_name["spend"].psi is None
    assert by_name["spend"].live_count == 40
    assert by_name["region"].status == "missing_column"
    assert by_name["region"].psi is None
    assert result.scored == 2
    assert result.drifted == 2
    assert result.drifted_share == 1.0
    scored = [f.psi for f in result.features if f.psi is not None]
    assert len(scored) == 2
    assert result.max_psi == max(scored)
    assert result.mean_psi == pytest.approx(sum(scored) / 2)
    assert result.level == "major"
    assert result.live_rows == 1000


def test_a_feature_without_a_baseline_is_reported(profile: dict[str, Any]) -> None:
    specs = [
        FeatureSpec(name="age", kind=FeatureKind.CATEGORICAL),
        FeatureSpec(name="new", kind=FeatureKind.NUMERIC),
    ]
    columns = {"age": np.array(["1"] * 200, object), "new": np.zeros(200)}
    result = drift(profile, specs, columns, dataset="churn")
    assert [f.status for f in result.features] == ["no_baseline", "no_baseline"]
    assert result.scored == 0
    assert result.level is None
    assert result.max_psi is None
    assert result.metrics() == []  # nothing measured, nothing published


def test_few_present_values_score_psi_but_not_ks(profile: dict[str, Any]) -> None:
    column = np.full(MIN_LIVE_ROWS * 2, np.nan)
    column[:10] = 40.0
    (age,) = drift(profile, SPECS[:1], {"age": column}, dataset="churn").features
    assert age.status == "scored"
    assert age.level == "major"  # 95 % missing where training had none
    assert age.ks is None
    assert age.ks_pvalue is None


def test_metrics_names_and_dimensions(result: DriftResult) -> None:
    metrics = result.metrics()
    names = [(name, dims) for name, dims, _ in metrics]
    assert names == [
        ("FeaturePSI", {"dataset": "churn", "feature": "age"}),
        ("FeatureKS", {"dataset": "churn", "feature": "age"}),
        ("FeaturePSI", {"dataset": "churn", "feature": "plan"}),
        ("DatasetDriftPSI", {"dataset": "churn"}),
        ("DriftedFeatures", {"dataset": "churn"}),
    ]
    values = {name: value for name, _, value in metrics}
    assert values["DatasetDriftPSI"] == result.max_psi
    assert values["DriftedFeatures"] == 2.0


# --- the report ----------------------------------------------------------------------------


def test_json_round_trips(result: DriftResult) -> None:
    data = report_json(result)
    assert DriftResult.model_validate_json(data) == result
    assert report_json(DriftResult.model_validate_json(data)) == data
    assert data.index(b'"dataset"') < data.index(b'"features"') < data.index(b'"level": "major"')


def test_html_is_self_contained_escaped_and_has_a_chart_per_scored_feature(
    result: DriftResult,
) -> None:
    page = report_html(result).decode()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == result.scored == 2
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert "insufficient data" in page
    assert "no live values" in page


def test_html_escapes_hostile_feature_names() -> None:
    hostile = '"><img src=x onerror=alert(1)>'
    feature = FeatureDrift(feature=hostile, kind=FeatureKind.NUMERIC, status="missing_column")
    report = DriftResult(
        dataset="<b>ds</b>",
        live_rows=0,
        features=[feature],
        scored=0,
        max_psi=None,
        mean_psi=None,
        drifted=0,
        drifted_share=None,
        level=None,
    )
    page = report_html(report).decode()
    assert "<img" not in page
    assert "<b>ds" not in page
    assert "&quot;&gt;&lt;img" in page


def test_html_escapes_hostile_category_names_in_the_chart() -> None:
    hostile = "<script>alert('x')</script>"
    profile = categorical_profile(np.array([hostile, "ok"] * 100, dtype=object))
    scored = psi_categorical(profile, np.array([hostile] * 150 + ["ok"] * 50, dtype=object))
    report = drift(
        {"features": {"c": profile}},
        [FeatureSpec(name="c", kind=FeatureKind.CATEGORICAL)],
        {"c": np.array([hostile] * 150 + ["ok"] * 50, dtype=object)},
        dataset="d",
    )
    assert report.features[0].psi == scored.psi
    page = report_html(report).decode()
    assert page.count("<svg") == 1
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


# --- properties ----------------------------------------------------------------------------

shares = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_psi_is_finite_and_not_negative_for_any_shares(data: st.DataObject) -> None:
    expected = data.draw(shares)
    actual = data.draw(
        st.lists(st.floats(0.0, 1.0), min_size=len(expected), max_size=len(expected))
    )
    value = psi(expected, actual)
    assert math.isfinite(value)
    assert value >= 0.0
    assert psi(expected, expected) == 0.0
    assert psi_level(value) in ("none", "moderate", "major")


samples = st.lists(
    st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(math.nan)), min_size=1, max_size=60
)


@given(samples, samples)
@settings(max_examples=60, deadline=None)
def test_psi_and_ks_are_sane_for_any_samples(train: list[float], now: list[float]) -> None:
    result = psi_numeric(numeric_profile(np.array(train)), np.array(now))
    assert result.psi is not None
    assert math.isfinite(result.psi)
    assert result.psi >= 0.0
    assert math.isclose(sum(b.expected for b in result.bins), 1.0)
    assert math.isclose(sum(b.actual for b in result.bins), 1.0)
    if result.ks is not None:
        assert 0.0 <= result.ks <= 1.0 + 1e-12
        assert result.ks_pvalue is not None
        assert 0.0 <= result.ks_pvalue <= 1.0
