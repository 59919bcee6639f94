"""The parity check as pure functions: what passes, what fails, and the documented exceptions."""

from __future__ import annotations

import numpy as np
import pytest

from functions.shared.errors import ParityError
from functions.training.parity import (
    PARITY_TOLERANCE,
    classification_parity,
    ensure_parity,
    regression_parity,
)

NATIVE = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
LABELS = np.array([0, 2, 1])


def test_identical_outputs_pass() -> None:
    report = classification_parity(NATIVE, LABELS, NATIVE.astype(np.float32), LABELS)
    assert report.passed
    assert report.rows == 3
    assert report.label_agreement == 1.0
    assert report.ties == 0
    assert report.max_abs_diff < 1e-7


def test_a_probability_off_by_more_than_the_tolerance_fails() -> None:
    # Given an export that moved one probability by 2e-4 (labels unchanged)
    onnx = NATIVE.copy()
    onnx[1, 2] += 2e-4
    onnx[1, 1] -= 2e-4
    # When compared
    report = classification_parity(NATIVE, LABELS, onnx, LABELS)
    # Then the check fails on the probability figure alone
    assert not report.passed
    assert report.max_abs_diff == pytest.approx(2e-4)
    assert report.label_agreement == 1.0


def test_a_flipped_label_fails_even_with_close_probabilities() -> None:
    # Given an export that names another class on a row that is not a tie
    onnx_labels = np.array([0, 2, 0])
    # When compared
    report = classification_parity(NATIVE, LABELS, NATIVE, onnx_labels)
    # Then the check fails and says how many rows agree
    assert not report.passed
    assert report.label_agreement == pytest.approx(2 / 3)
    assert report.ties == 0


def test_a_flipped_label_on_a_documented_tie_is_tolerated() -> None:
    # Given a row whose native top-two probabilities are within the tolerance of each other
    native = np.array([[0.50002, 0.49998], [0.9, 0.1]])
    onnx = np.array([[0.49999, 0.50001], [0.9, 0.1]])
    # When float32 rounding lets the export pick the other class there
    report = classification_parity(native, np.array([0, 0]), onnx, np.array([1, 0]))
    # Then the disagreement is counted as a tie and the check passes
    assert report.passed
    assert report.ties == 1
    assert report.label_agreement == 0.5


def test_nan_from_the_export_fails() -> None:
    onnx = NATIVE.copy()
    onnx[0, 0] = np.nan
    report = classification_parity(NATIVE, LABELS, onnx, LABELS)
    assert not report.passed
    assert report.max_abs_diff == float("inf")


def test_wrong_output_shape_raises() -> None:
    with pytest.raises(ParityError, match="wrong shape"):
        classification_parity(NATIVE, LABELS, NATIVE[:, :2], LABELS)


def test_regression_is_relative_to_the_models_scale() -> None:
    # Given a price model's predictions, one of them near zero (rms about 180 000)
    native = np.array([250_000.0, 0.5])
    # When the large one is off by 10 (4e-5 relative) and the small one by 5 (float32's
    # spacing at the model's scale is 0.016, so a sum of such terms may be off by that much)
    report = regression_parity(native, native + np.array([10.0, 5.0]))
    # Then both are within 1e-4 of the scale the model works at
    assert report.passed
    assert report.max_abs_diff == pytest.approx(10.0)
    assert report.max_scaled_diff == pytest.approx(4e-5)
    assert report.label_agreement is None


def test_regression_of_small_values_is_absolute() -> None:
    # Given a model whose outputs are all below 1: the figure is the absolute difference
    native = np.array([0.5, -0.2, 0.01])
    report = regression_parity(native, native + np.array([0.0, 5e-5, 0.0]))
    assert report.passed
    assert report.max_scaled_diff == pytest.approx(5e-5)


def test_regression_mismatch_fails() -> None:
    # Given a large prediction off by 3e-4 relative, a small one off by 3e-4 of the model's
    # scale, and a model of small values off by 2e-4 absolute
    cases = [
        (np.array([100_000.0, 0.2]), np.array([30.0, 0.0])),
        (np.array([100_000.0, 0.2]), np.array([0.0, 30.0])),
        (np.array([0.2, 0.4]), np.array([0.0, 2e-4])),
    ]
    for native, offset in cases:
        report = regression_parity(native, (native + offset).reshape(-1, 1))
        assert not report.passed
        assert report.max_scaled_diff > PARITY_TOLERANCE


def _float32_sum(terms: np.ndarray, order: np.ndarray) -> np.ndarray:
    total = np.zeros(terms.shape[0], dtype=np.float32)
    for column in order:
        total += terms[:, column]
    return total


def test_float32_rounding_of_a_long_tailed_price_model_passes() -> None:
    # Given a boosted model of lognormal prices (500 to 200 000): every prediction is a base
    # score (the mean price) plus 300 float32 leaves, the cheapest cars landing near zero
    rng = np.random.default_rng(7)
    prices = np.clip(rng.lognormal(9.4, 1.0, 5000), 500, 200_000)
    prices[:50] = rng.uniform(-20, 20, 50)  # a model under-predicting the cheapest cars
    base = prices.mean()
    shares = rng.dirichlet(np.ones(300), size=prices.size)
    terms = np.column_stack([np.full(prices.size, base), (prices - base)[:, None] * shares])
    terms = terms.astype(np.float32)
    exact = terms.astype(np.float64).sum(axis=1)
    # When the native library and onnxruntime each sum them in float32, in different orders
    native = _float32_sum(terms, np.arange(301))
    exported = _float32_sum(terms, np.r_[1:301, 0])
    # Then both are float32-close to the exact sum, not bitwise equal, and parity passes
    assert 0 < np.max(np.abs(exported - native)) < 1e-6 * np.abs(terms).sum(axis=1).max()
    assert np.max(np.abs(native - exact) / np.maximum(1, np.abs(exact))) > PARITY_TOLERANCE
    report = regression_parity(native, exported)
    assert report.passed, report
    assert report.max_scaled_diff < PARITY_TOLERANCE / 10


def test_ensure_parity_raises_with_the_figures() -> None:
    report = classification_parity(NATIVE, LABELS, NATIVE, np.array([1, 2, 1]))
    with pytest.raises(ParityError) as caught:
        ensure_parity(report, "xgboost")
    message = str(caught.value)
    assert "'xgboost'" in message
    assert "3 validation rows" in message
    assert "66.6667%" in message


def test_ensure_parity_accepts_a_passing_report() -> None:
    ensure_parity(regression_parity(np.ones(4), np.ones(4)), "linear")
