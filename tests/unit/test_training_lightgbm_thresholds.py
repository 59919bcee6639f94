"""LightGBM's float64 split thresholds become float32-exact in the graph, so that a float32
input on either side of a split goes the same way in onnxruntime as in LightGBM."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from lightgbm import LGBMRegressor
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from functions.training.export import (
    TARGET_OPSET,
    float32_threshold,
    register_lightgbm_converters,
)


@pytest.mark.parametrize("threshold", [42.00050000000001, -93.6250001, 1e-35, 0.5, 3.0])
def test_a_threshold_rounds_down_to_the_largest_float32_below_it(threshold: float) -> None:
    rounded = float32_threshold(threshold)
    assert float(np.float32(rounded)) == rounded <= threshold
    above = float(np.nextafter(np.float32(rounded), np.float32(np.inf)))
    assert above > threshold  # no float32 between it and the threshold


def test_inputs_one_float32_apart_route_as_lightgbm_routes_them() -> None:
    # Given values in adjacent pairs of float32s (coordinates stored as float32 look like this)
    # and a target that tells each pair's members apart, so LightGBM splits between them at
    # float64 midpoints that round half the time to the float32 above
    base = np.float32(42.0) + np.arange(150, dtype=np.float32) * np.float32(1e-3)
    pairs = np.concatenate([base, np.nextafter(base, np.float32(np.inf))])
    x = np.repeat(pairs, 4).astype(np.float32)[:, None]
    y = np.random.default_rng(0).normal(size=x.shape[0]) + np.isin(x[:, 0], pairs[150:]) * 100.0
    model = LGBMRegressor(n_estimators=20, min_child_samples=2, min_data_in_bin=1, verbose=-1)
    model.fit(x, y)
    # When converted as sluice converts LightGBM
    register_lightgbm_converters()
    graph = convert_sklearn(
        model, initial_types=[("x", FloatTensorType([None, 1]))], target_opset=TARGET_OPSET
    )
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    # Then the graph predicts what LightGBM predicts, to float32's rounding of the sum
    (exported,) = session.run(None, {"x": x})
    native = model.predict(x)
    assert np.abs(np.asarray(exported).ravel() - native).max() < 1e-3
