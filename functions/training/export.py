"""Export a fitted candidate pipeline to one ONNX graph that needs only onnxruntime to serve.

The graph takes one ``(None, 1)`` tensor per raw feature, in schema order (float for numeric,
string for categorical), named by ``features.onnx_input_name``, exactly what
``features.onnx_feeds`` builds; imputation, scaling and
one-hot encoding run inside it (skl2onnx's one-hot converter is corrected here for one input
with infrequent categories). Outputs: ``label`` (int64 class index) and ``probabilities``
(float, columns in ``schema.classes`` order) for classification, ``variable`` for regression.
``append_temperature`` calibrates a classifier's ``probabilities`` inside the same graph, and
a tree regressor fitted on a log target gets its ``exp`` there too (training/target.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from lightgbm import LGBMClassifier, LGBMRegressor
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)
from skl2onnx.operator_converters.one_hot_encoder import convert_sklearn_one_hot_encoder
from skl2onnx.operator_converters.ordinal_encoder import convert_sklearn_ordinal_encoder
from skl2onnx.proto import onnx_proto
from skl2onnx.shape_calculators.one_hot_encoder import (
    calculate_sklearn_one_hot_encoder_output_shapes,
)
from skl2onnx.shape_calculators.ordinal_encoder import (
    calculate_sklearn_ordinal_encoder_output_shapes,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from xgboost import XGBClassifier, XGBRegressor

from functions.shared.errors import TrainingError
from functions.shared.features import (
    LABEL_OUTPUT,
    PREDICTION_OUTPUT,
    PROBABILITIES_OUTPUT,
    DatasetSchema,
    graph_columns,
    onnx_input_names,
)
from functions.shared.model_card import OnnxInfo, TensorInfo
from functions.training.encoding import TargetOrderedEncoder
from functions.training.graphs import rename_tensor
from functions.training.target import (
    LogTargetLGBMRegressor,
    LogTargetXGBRegressor,
    append_exp,
    uses_log_target,
)

# ai.onnx 17 and ai.onnx.ml 3 (TreeEnsemble with float attributes) run on every onnxruntime the
# inference layer may pin.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def register_xgboost_converters() -> None:
    """Teach skl2onnx the XGBoost estimators with onnxmltools' converter (re-registering is a
    harmless overwrite)."""
    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    for regressor, alias in (
        (XGBRegressor, "XGBoostXGBRegressor"),
        # its trees are XGBRegressor's; to_onnx appends the exp (training/target.py)
        (LogTargetXGBRegressor, "SluiceLogTargetXGBRegressor"),
    ):
        update_registered_converter(
            regressor, alias, calculate_linear_regressor_output_shapes, convert_xgboost
        )


def register_lightgbm_converters() -> None:
    """Teach skl2onnx the LightGBM estimators with onnxmltools' converter, thresholds made
    float32-exact (``convert_lightgbm_float32``; re-registering is a harmless overwrite)."""
    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm_float32,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    for regressor, alias in (
        (LGBMRegressor, "LightGbmLGBMRegressor"),
        (LogTargetLGBMRegressor, "SluiceLogTargetLGBMRegressor"),
    ):
        update_registered_converter(
            regressor,
            alias,
            calculate_linear_regressor_output_shapes,
            convert_lightgbm_float32,
            options={"split": None},
        )


def float32_threshold(threshold: float) -> float:
    """The largest float32 at or below ``threshold``: for any float32 ``x``,
    ``x <= threshold`` exactly when ``x <= float32_threshold(threshold)``.

    LightGBM splits at float64 midpoints between feature values; the ONNX tree holds float32
    thresholds, and rounding a midpoint to the nearest float32 may land it on the value above
    it, which then goes left in the graph and right natively (ames' coordinates: a 0.6 % price
    difference on one row failed parity)."""
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def float32_thresholds(dump: dict[str, Any]) -> dict[str, Any]:
    """LightGBM's ``dump_model()`` with every numeric ``<=`` split's threshold made
    float32-exact (``float32_threshold``), in place; categorical ``==`` splits are untouched."""
    stack = [tree["tree_structure"] for tree in dump.get("tree_info", [])]
    while stack:
        node = stack.pop()
        if "decision_type" not in node:  # a leaf
            continue
        threshold = node.get("threshold")
        if node["decision_type"] == "<=" and isinstance(threshold, int | float):
            node["threshold"] = float32_threshold(float(threshold))
        stack.extend(node[side] for side in ("left_child", "right_child") if side in node)
    return dump


class _Float32Booster:
    """What onnxmltools' converter reads of a booster: ``is_mock`` tells it to take
    ``dump_model()`` as it is, here with float32-exact thresholds."""

    is_mock = True

    def __init__(self, booster: Any) -> None:
        self._booster = booster

    def dump_model(self) -> dict[str, Any]:
        return float32_thresholds(self._booster.dump_model())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._booster, name)


class _Float32Model:
    """The fitted LightGBM estimator as the converter sees it, its booster's dump
    float32-exact; every other attribute is the estimator's."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.booster_ = _Float32Booster(model.booster_)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def convert_lightgbm_float32(scope: Any, operator: Any, container: Any) -> None:
    """onnxmltools' ``convert_lightgbm`` on the estimator with float32-exact thresholds, so the
    graph routes every float32 input as LightGBM does (``float32_threshold``)."""
    model = operator.raw_operator
    operator.raw_operator = _Float32Model(model)
    try:
        convert_lightgbm(scope, operator, container)
    finally:
        operator.raw_operator = model


def register_target_ordered_encoder_converter() -> None:
    """encoding.TargetOrderedEncoder is an OrdinalEncoder with chosen categories: skl2onnx's
    ordinal-encoder converter converts it as it is (re-registering is a harmless overwrite)."""
    update_registered_converter(
        TargetOrderedEncoder,
        "SluiceTargetOrderedEncoder",
        calculate_sklearn_ordinal_encoder_output_shapes,
        convert_sklearn_ordinal_encoder,
    )


def register_one_hot_encoder_converter() -> None:
    """Replace skl2onnx's one-hot converter with ``convert_one_hot_encoder`` (which hands every
    case but one back to it; re-registering is a harmless overwrite)."""
    update_registered_converter(
        OneHotEncoder,
        "SklearnOneHotEncoder",
        calculate_sklearn_one_hot_encoder_output_shapes,
        convert_one_hot_encoder,
    )


def convert_one_hot_encoder(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx's converter, plus the case it refuses: an encoder with ONE input (a dataset with
    one categorical feature) whose feature has infrequent categories.

    skl2onnx 1.20.0 encodes infrequent categories only in its several-inputs branch; its
    one-input branch raises NotImplementedError for them (onnx/sklearn-onnx#1026, and
    docs/decisions.md 2026-12-03). This builds what the several-inputs branch builds for each
    input: an ai.onnx.ml OneHotEncoder over the frequent categories followed by the infrequent
    ones (``zeros=1``: an unseen category is all zeros), then the infrequent columns summed into
    the last one, which is scikit-learn's output column for them. A row holds one category, so
    that sum is exactly 0 or 1.
    """
    encoder = operator.raw_operator
    if not _one_input_with_infrequent(operator):
        convert_sklearn_one_hot_encoder(scope, operator, container)
        return
    (infrequent,) = encoder.infrequent_categories_
    rare = set(infrequent.tolist())
    frequent = [c for c in encoder.categories_[0].tolist() if c not in rare]
    categories = [*frequent, *infrequent.tolist()]
    int64 = onnx_proto.TensorProto.INT64

    encoded = scope.get_unique_variable_name("encoded")
    container.add_node(
        "OneHotEncoder",
        operator.inputs[0].full_name,
        encoded,
        op_domain="ai.onnx.ml",
        name=scope.get_unique_operator_name("OneHotEncoder"),
        cats_strings=np.array([str(c).encode("utf-8") for c in categories]),
        zeros=1,
    )
    sizes = scope.get_unique_variable_name("sizes")
    container.add_initializer(sizes, int64, [2], [len(frequent), len(infrequent)])
    kept = scope.get_unique_variable_name("frequent")
    merged = scope.get_unique_variable_name("infrequent")
    container.add_node(
        "Split",
        [encoded, sizes],
        [kept, merged],
        axis=-1,
        name=scope.get_unique_operator_name("Split"),
    )
    last_axis = scope.get_unique_variable_name("last_axis")
    container.add_initializer(last_axis, int64, [1], [-1])
    summed = scope.get_unique_variable_name("infrequent_sum")
    container.add_node(
        "ReduceSum",
        [merged, last_axis],
        summed,
        keepdims=1,
        name=scope.get_unique_operator_name("ReduceSum"),
    )
    joined = scope.get_unique_variable_name("joined")
    container.add_node(
        "Concat", [kept, summed], joined, axis=-1, name=scope.get_unique_operator_name("Concat")
    )
    # OneHotEncoder added an axis: (n, 1, categories) back to (n, frequent + 1).
    shape = scope.get_unique_variable_name("shape")
    container.add_initializer(shape, int64, [2], [-1, len(frequent) + 1])
    container.add_node(
        "Reshape",
        [joined, shape],
        operator.outputs[0].full_name,
        name=scope.get_unique_operator_name("Reshape"),
    )


def _one_input_with_infrequent(operator: Any) -> bool:
    """The case skl2onnx refuses, in the form sluice builds: one string input of one column,
    unseen categories ignored, nothing dropped, float output."""
    encoder = operator.raw_operator
    inputs = operator.inputs
    return (
        len(inputs) == 1
        and isinstance(inputs[0].type, StringTensorType)
        and len(encoder.categories_) == 1
        and encoder.handle_unknown == "ignore"
        and encoder.drop_idx_ is None
        and np.issubdtype(encoder.dtype, np.floating)
        and getattr(encoder, "infrequent_categories_", [None])[0] is not None
    )


def to_onnx(pipeline: Pipeline, schema: DatasetSchema) -> bytes:
    """Convert the fitted pipeline; raise TrainingError if the graph's interface is not ours."""
    register_xgboost_converters()
    register_lightgbm_converters()
    register_one_hot_encoder_converter()
    register_target_ordered_encoder_converter()
    columns = graph_columns(schema.features, onnx_input_names(schema.features))
    initial_types: list[tuple[str, Any]] = [
        (name, StringTensorType([None, 1]) if text else FloatTensorType([None, 1]))
        for name, text in columns
    ]
    options: dict[int, dict[str, Any]] = {}
    if schema.task == "classification":
        options[id(pipeline.named_steps["model"])] = {"zipmap": False}
    model = convert_sklearn(
        pipeline,
        name=f"sluice-{schema.dataset}-{schema.dataset_version}",
        initial_types=initial_types,
        options=options,
        target_opset=TARGET_OPSET,
    )
    expected = (
        [LABEL_OUTPUT, PROBABILITIES_OUTPUT]
        if schema.task == "classification"
        else [PREDICTION_OUTPUT]
    )
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [name for name, _ in columns] or outputs != expected:
        raise TrainingError(
            f"the exported graph has inputs {inputs} and outputs {outputs}; expected "
            f"{[name for name, _ in columns]} and {expected}"
        )
    data: bytes = model.SerializeToString()
    if uses_log_target(pipeline.named_steps["model"]):
        return append_exp(data)
    return data


CALIBRATION_PREFIX = "calibration_"


def append_temperature(data: bytes, temperature: float, floor: float) -> bytes:
    """Scale a classification graph's ``probabilities`` by ``temperature``, inside the graph.

    The model's own probability tensor is renamed and followed by ``Clip(min=floor) -> Log ->
    Mul(1/T) -> Softmax``, whose output takes the ``probabilities`` name; ``label`` and the
    inputs are untouched, so serving sees the same interface (calibration.temperature_scale
    is the native twin the parity check compares it with).
    """
    model = onnx.load_from_string(data)
    graph = model.graph
    outputs = [o.name for o in graph.output]
    if PROBABILITIES_OUTPUT not in outputs:
        raise TrainingError(
            f"cannot calibrate a graph without a '{PROBABILITIES_OUTPUT}' output (it has {outputs})"
        )
    raw = f"{CALIBRATION_PREFIX}uncalibrated"
    rename_tensor(graph, PROBABILITIES_OUTPUT, raw)
    floor_name, inverse_name = f"{CALIBRATION_PREFIX}floor", f"{CALIBRATION_PREFIX}inverse_t"
    graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.array(floor, dtype=np.float32), floor_name),
            onnx.numpy_helper.from_array(
                np.array(1.0 / temperature, dtype=np.float32), inverse_name
            ),
        ]
    )
    clipped, logs, scaled = (f"{CALIBRATION_PREFIX}{n}" for n in ("clipped", "log", "scaled"))
    graph.node.extend(
        [
            onnx.helper.make_node("Clip", [raw, floor_name], [clipped], name=clipped),
            onnx.helper.make_node("Log", [clipped], [logs], name=logs),
            onnx.helper.make_node("Mul", [logs, inverse_name], [scaled], name=scaled),
            onnx.helper.make_node(
                "Softmax",
                [scaled],
                [PROBABILITIES_OUTPUT],
                axis=-1,
                name=f"{CALIBRATION_PREFIX}softmax",
            ),
        ]
    )
    onnx.checker.check_model(model)
    calibrated: bytes = model.SerializeToString()
    return calibrated


def describe_onnx(data: bytes, sha256: str, session: Any) -> OnnxInfo:
    """The card's view of the graph; ``session`` is the onnxruntime session the parity check
    ran, so the types recorded are the ones onnxruntime reports to inference."""
    model = onnx.load_from_string(data)
    return OnnxInfo(
        sha256=sha256,
        bytes=len(data),
        opset={entry.domain: int(entry.version) for entry in model.opset_import},
        inputs=[_tensor(node) for node in session.get_inputs()],
        outputs=[_tensor(node) for node in session.get_outputs()],
    )


def _tensor(node: Any) -> TensorInfo:
    return TensorInfo(name=node.name, type=node.type, shape=list(node.shape))
