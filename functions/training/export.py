"""Export a fitted candidate pipeline to one ONNX graph that needs only onnxruntime to serve.

The graph takes one ``(None, 1)`` tensor per raw feature, in schema order (float for numeric,
string for categorical), named by ``features.onnx_input_name``, exactly what
``features.onnx_feeds`` builds; imputation, scaling and
one-hot encoding run inside it. Outputs: ``label`` (int64 class index) and ``probabilities``
(float, columns in ``schema.classes`` order) for classification, ``variable`` for regression.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)
from sklearn.pipeline import Pipeline
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
    update_registered_converter(
        XGBRegressor,
        "XGBoostXGBRegressor",
        calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )


def to_onnx(pipeline: Pipeline, schema: DatasetSchema) -> bytes:
    """Convert the fitted pipeline; raise TrainingError if the graph's interface is not ours."""
    register_xgboost_converters()
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
    return data


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
