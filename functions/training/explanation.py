"""Write the explanation table (functions/shared/explanation.py) into the model file that ships.

The table is read off the exported graph itself (its LinearRegressor / LinearClassifier or
TreeEnsemble node, and the temperature a calibrated graph divides by), so it describes exactly
the numbers that serve. What the graph lacks comes from training: each tree node's cover from
the booster (XGBoost's hessian sums, LightGBM's row counts: the covers their own
``pred_contribs`` use), the encoded columns' training means (the graph run on the training
rows), and which user feature each encoded column comes from (the fitted ColumnTransformer).

A model the table cannot describe (another estimator, an ensemble graph this module does not
know yet) ships without one: the explain route then says so, and training is never failed by it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from lightgbm import LGBMClassifier, LGBMRegressor
from numpy.typing import NDArray
from onnx import helper, numpy_helper
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from xgboost import XGBClassifier, XGBRegressor

from functions.shared.explanation import (
    METADATA_KEY,
    ExplanationTable,
    ExplanationTableError,
    LinearMember,
    Output,
    TreeMember,
    with_float_outputs,
)
from functions.shared.features import DatasetSchema, graph_columns, onnx_input_names
from functions.training.export import CALIBRATION_PREFIX

log = logging.getLogger(__name__)

LINEAR_OPS = {"LinearRegressor", "LinearClassifier"}
TREE_OPS = {"TreeEnsembleRegressor", "TreeEnsembleClassifier"}


def with_explanation(
    model_bytes: bytes, pipeline: Pipeline, schema: DatasetSchema, train_feeds: dict[str, Any]
) -> bytes:
    """``model_bytes`` with its explanation table in ``metadata_props``; unchanged (and a
    warning logged) when the model is not one the table describes."""
    try:
        table = explanation_table(model_bytes, pipeline, schema, train_feeds)
    except (ExplanationTableError, ValueError, KeyError) as exc:
        log.warning("the model ships without explanations: %s", exc)
        return model_bytes
    model = onnx.load_from_string(model_bytes)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, table.to_bytes().decode()
    data: bytes = model.SerializeToString()
    return data


def explanation_table(
    model_bytes: bytes, pipeline: Pipeline, schema: DatasetSchema, train_feeds: dict[str, Any]
) -> ExplanationTable:
    """The table of a single-model graph (linear or trees).

    Raises
    ------
    ExplanationTableError
        The graph or the pipeline is not one the table describes.
    """
    model = onnx.load_from_string(model_bytes)
    nodes = [n for n in model.graph.node if n.op_type in LINEAR_OPS | TREE_OPS]
    if len(nodes) != 1:
        raise ExplanationTableError(
            f"the graph has {len(nodes)} model nodes ({[n.op_type for n in nodes]}); "
            "explanations take one"
        )
    node = nodes[0]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    features_tensor = node.input[0]
    encoded = _encoded_rows(model_bytes, features_tensor, train_feeds)
    column_features = _column_features(pipeline, schema, encoded.shape[1])
    classes = len(schema.classes or [])
    output: Output = "value" if schema.task == "regression" else "log_odds"
    if classes > 2:
        output = "logit"
    member: LinearMember | TreeMember
    if node.op_type in LINEAR_OPS:
        member = _linear(attributes, features_tensor, encoded, classes)
    else:
        member = _trees(attributes, features_tensor, pipeline.named_steps["model"])
    return ExplanationTable(
        output=output,
        scale=_scale(model),
        column_features=column_features,
        members=(member,),
        weights=(1.0,),
    )


def _encoded_rows(model_bytes: bytes, tensor: str, feeds: dict[str, Any]) -> NDArray[np.float64]:
    """The tensor the model node reads, on the training rows (the graph run with it as an
    extra output, as serving does)."""
    session = ort.InferenceSession(
        with_float_outputs(model_bytes, [tensor]), providers=["CPUExecutionProvider"]
    )
    (rows,) = session.run([tensor], feeds)
    return np.asarray(rows, dtype=np.float64)


def _column_features(pipeline: Pipeline, schema: DatasetSchema, width: int) -> NDArray[np.int32]:
    """For each encoded column, the index of the user feature (in schema order) it encodes."""
    names = onnx_input_names(schema.features)
    feature_of: dict[str, int] = {}
    for index, spec in enumerate(schema.features):
        for column, _ in graph_columns([spec], names):
            feature_of[column] = index
    transformer: ColumnTransformer = pipeline.named_steps["features"]
    columns: list[int] = []
    for name, fitted, inputs in transformer.transformers_:
        if name == "remainder" or fitted == "drop":
            continue
        if isinstance(fitted, OneHotEncoder):
            widths = list(fitted._n_features_outs)  # sklearn keeps the per-input widths private
        else:
            widths = [1] * len(inputs)
        for column, count in zip(inputs, widths, strict=True):
            columns.extend([feature_of[column]] * count)
    if len(columns) != width:
        raise ExplanationTableError(
            f"the pipeline encodes {len(columns)} columns, the graph's model node reads {width}"
        )
    return np.array(columns, dtype=np.int32)


def _linear(
    attributes: dict[str, Any], tensor: str, encoded: NDArray[np.float64], classes: int
) -> LinearMember:
    intercepts = np.array(attributes["intercepts"], dtype=np.float64)
    coefficients = np.array(attributes["coefficients"], dtype=np.float64).reshape(
        intercepts.size, -1
    )
    if classes == 2:  # the graph scores [-margin, margin]: the positive class's row explains
        coefficients, intercepts = coefficients[1:], intercepts[1:]
    return LinearMember(
        features_tensor=tensor,
        coefficients=coefficients,
        intercepts=intercepts,
        mean=encoded.mean(axis=0),
    )


def _trees(attributes: dict[str, Any], tensor: str, estimator: Any) -> TreeMember:
    if attributes.get("aggregate_function", b"SUM") not in (b"SUM", "SUM"):
        raise ExplanationTableError("only summed tree ensembles are explained")
    tree_ids = np.array(attributes["nodes_treeids"], dtype=np.int64)
    node_ids = np.array(attributes["nodes_nodeids"], dtype=np.int64)
    index = {
        (t, n): i for i, (t, n) in enumerate(zip(tree_ids.tolist(), node_ids.tolist(), strict=True))
    }
    modes = [m.decode() if isinstance(m, bytes) else m for m in attributes["nodes_modes"]]
    leaf = np.array([m == "LEAF" for m in modes])
    if not set(modes) <= {"LEAF", "BRANCH_LT", "BRANCH_LEQ"}:
        raise ExplanationTableError(f"tree split modes {sorted(set(modes))} are not explained")

    def child(ids: str) -> NDArray[np.int32]:
        pairs = zip(tree_ids.tolist(), list(attributes[ids]), strict=True)
        return np.array(
            [-1 if leaf[i] else index[(t, int(c))] for i, (t, c) in enumerate(pairs)],
            dtype=np.int32,
        )

    prefix = "class" if "class_ids" in attributes else "target"
    weight_tree = np.array(attributes[f"{prefix}_treeids"], dtype=np.int64)
    weight_node = np.array(attributes[f"{prefix}_nodeids"], dtype=np.int64)
    weight_target = np.array(attributes[f"{prefix}_ids"], dtype=np.int64)
    weights = np.array(attributes[f"{prefix}_weights"], dtype=np.float64)
    targets = int(weight_target.max()) + 1
    values = np.zeros((tree_ids.size, targets))
    for t, n, k, w in zip(weight_tree, weight_node, weight_target, weights, strict=True):
        values[index[(int(t), int(n))], k] += w
    base = np.zeros(targets)
    if attributes.get("base_values"):
        base += np.array(attributes["base_values"], dtype=np.float64)[:targets]
    true_child, false_child = child("nodes_truenodeids"), child("nodes_falsenodeids")
    roots = np.array([index[(t, 0)] for t in sorted(set(tree_ids.tolist()))], dtype=np.int32)
    member = TreeMember(
        features_tensor=tensor,
        feature=np.array(attributes["nodes_featureids"], dtype=np.int32),
        threshold=np.array(attributes["nodes_values"], dtype=np.float32),
        leq=np.array([m == "BRANCH_LEQ" for m in modes]),
        missing_true=np.array(attributes["nodes_missing_value_tracks_true"], dtype=bool)
        if attributes.get("nodes_missing_value_tracks_true")
        else np.zeros(tree_ids.size, dtype=bool),
        true_child=true_child,
        false_child=false_child,
        cover=np.zeros(tree_ids.size),
        values=values,
        roots=roots,
        base=base,
    )
    _fill_covers(member, estimator)
    return member


def _fill_covers(member: TreeMember, estimator: Any) -> None:
    """Each graph node's cover, from the booster's own tree dump, walking both trees together
    (true child with XGBoost's ``yes`` / LightGBM's left child) and checking every split's
    feature on the way."""
    if isinstance(estimator, XGBClassifier | XGBRegressor):
        dumps = [
            json.loads(d)
            for d in estimator.get_booster().get_dump(dump_format="json", with_stats=True)
        ]
        trees = [_xgboost_node(d) for d in dumps]
    elif isinstance(estimator, LGBMClassifier | LGBMRegressor):
        info = estimator.booster_.dump_model()["tree_info"]
        trees = [_lightgbm_node(t["tree_structure"]) for t in info]
    else:
        raise ExplanationTableError(f"covers of {type(estimator).__name__} trees are unknown")
    if len(trees) < member.roots.size:
        raise ExplanationTableError(
            f"the graph has {member.roots.size} trees, the booster {len(trees)}"
        )
    for root, tree in zip(member.roots.tolist(), trees, strict=False):
        stack = [(root, tree)]
        while stack:
            node, native = stack.pop()
            cover, split = native[0], native[1]
            member.cover[node] = cover
            if member.true_child[node] < 0:
                if split is not None:
                    raise ExplanationTableError(f"graph node {node} is a leaf, the booster's not")
                continue
            if split is None or split[0] != int(member.feature[node]):
                raise ExplanationTableError(
                    f"graph node {node} splits on column {member.feature[node]}, the booster's "
                    f"node on {None if split is None else split[0]}"
                )
            stack.append((int(member.true_child[node]), split[1]))
            stack.append((int(member.false_child[node]), split[2]))


# A booster node as (cover, None) for a leaf or (cover, (feature, true child, false child)).
_Native = tuple[float, Any]


def _xgboost_node(node: dict[str, Any]) -> _Native:
    if "leaf" in node:
        return float(node["cover"]), None
    children = {c["nodeid"]: c for c in node["children"]}
    feature = int(str(node["split"]).lstrip("f"))
    return float(node["cover"]), (
        feature,
        _xgboost_node(children[node["yes"]]),
        _xgboost_node(children[node["no"]]),
    )


def _lightgbm_node(node: dict[str, Any]) -> _Native:
    if "leaf_value" in node:
        return float(node.get("leaf_count", 0)), None
    return float(node["internal_count"]), (
        int(node["split_feature"]),
        _lightgbm_node(node["left_child"]),
        _lightgbm_node(node["right_child"]),
    )


def _scale(model: onnx.ModelProto) -> float:
    """What margins are multiplied by: the calibrated graph's 1/T, else 1."""
    for initializer in model.graph.initializer:
        if initializer.name == f"{CALIBRATION_PREFIX}inverse_t":
            return float(numpy_helper.to_array(initializer))
    return 1.0
