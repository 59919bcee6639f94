"""Write the explanation table (functions/shared/explanation.py) into the model file that ships.

The table is read off the exported graph itself (its LinearRegressor / LinearClassifier or
TreeEnsemble node, and the temperature a calibrated graph divides by), so it describes exactly
the numbers that serve. What the graph lacks comes from training: each tree node's cover from
the booster (XGBoost's hessian sums, LightGBM's row counts: the covers their own
``pred_contribs`` use), the encoded columns' training means (the graph run on the training
rows), and which user feature each encoded column comes from (the fitted ColumnTransformer).

A blend (ensemble.blend_graphs) is one member per model node, each read as a single model is,
with its own encoded tensor and column map (members encode categories differently) and its
weight as the graph's ``blend_weighted_<i>`` node multiplies by it; what its contributions add
up to is in functions/shared/explanation.py.

Trees fitted on a log target (training/target.py) are read as any trees are: the graph's tree
node computes their margin, the ``Exp`` after it is not part of the table, and the output says
their sum is the log of the value served (``log_value``; a blend of them: ``weighted_log_value``).

A model the table cannot describe (another estimator, or a blend mixing members fitted on a log
target with members fitted on the target itself: their margins are in two units) ships without
one, the reason written in its place (``ABSENT_KEY``): the explain route then says so, and
training is never failed by it.
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
    ABSENT_KEY,
    METADATA_KEY,
    ExplanationTable,
    ExplanationTableError,
    LinearMember,
    TreeMember,
    with_float_outputs,
)
from functions.shared.explanation_outputs import Output
from functions.shared.features import DatasetSchema, graph_columns, onnx_input_names
from functions.training.ensemble import BLEND_PREFIX, NativeBlend
from functions.training.export import CALIBRATION_PREFIX
from functions.training.target import uses_log_target

log = logging.getLogger(__name__)

LINEAR_OPS = {"LinearRegressor", "LinearClassifier"}
TREE_OPS = {"TreeEnsembleRegressor", "TreeEnsembleClassifier"}


def with_explanation(
    model_bytes: bytes,
    pipeline: Pipeline | NativeBlend,
    schema: DatasetSchema,
    train_feeds: dict[str, Any],
) -> bytes:
    """``model_bytes`` with its explanation table in ``metadata_props``; when the model is not
    one the table describes, with the reason instead (under ``ABSENT_KEY``, a warning logged)."""
    model = onnx.load_from_string(model_bytes)
    entry = model.metadata_props.add()
    try:
        table = explanation_table(model_bytes, pipeline, schema, train_feeds)
    except (ExplanationTableError, ValueError, KeyError) as exc:
        log.warning("the model ships without explanations: %s", exc)
        entry.key, entry.value = ABSENT_KEY, str(exc)
    else:
        entry.key, entry.value = METADATA_KEY, table.to_bytes().decode()
    data: bytes = model.SerializeToString()
    return data


def explanation_table(
    model_bytes: bytes,
    pipeline: Pipeline | NativeBlend,
    schema: DatasetSchema,
    train_feeds: dict[str, Any],
) -> ExplanationTable:
    """The table of a single-model graph (linear or trees) or of a blend of them.

    Raises
    ------
    ExplanationTableError
        The graph or the pipeline is not one the table describes.
    """
    model = onnx.load_from_string(model_bytes)
    nodes = [n for n in model.graph.node if n.op_type in LINEAR_OPS | TREE_OPS]
    blend = isinstance(pipeline, NativeBlend)
    pipelines = list(pipeline.models) if isinstance(pipeline, NativeBlend) else [pipeline]
    if len(nodes) != len(pipelines):
        raise ExplanationTableError(
            f"the graph has {len(nodes)} model nodes ({[n.op_type for n in nodes]}); "
            f"the model has {len(pipelines)} member(s)"
        )
    if blend:  # a member's nodes and tensors are prefixed m<i>_ (ensemble.blend_graphs)
        nodes = [_member_node(nodes, number) for number in range(len(pipelines))]
    logged = _log_target_members(pipelines)
    tensors = [node.input[0] for node in nodes]
    encoded = _encoded_rows(model_bytes, tensors, train_feeds)
    classes = len(schema.classes or [])
    output: Output = "value" if schema.task == "regression" else "log_odds"
    if classes > 2:
        output = "logit"
    if logged:  # the trees' margin is the log of what the graph's Exp serves
        output = "log_value"
    if blend and output != "value":
        output = _WEIGHTED[output]
    members: list[LinearMember | TreeMember] = []
    column_maps = []
    for node, member_pipeline, x in zip(nodes, pipelines, encoded, strict=True):
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        column_maps.append(_column_features(member_pipeline, schema, x.shape[1]))
        if node.op_type in LINEAR_OPS:
            members.append(_linear(attributes, node.input[0], x, classes))
        else:
            members.append(_trees(attributes, node.input[0], member_pipeline.named_steps["model"]))
    return ExplanationTable(
        output=output,
        # a blend's classifiers are explained before the blend's calibration: see the output
        scale=1.0 if blend else _scale(model),
        column_maps=tuple(column_maps),
        members=tuple(members),
        weights=_blend_weights(model, len(members)) if blend else (1.0,),
    )


# A blend's output for its members' own: the weighted sum of their margins.
_WEIGHTED: dict[str, Output] = {
    "log_odds": "weighted_log_odds",
    "logit": "weighted_logit",
    "log_value": "weighted_log_value",
}


def _log_target_members(pipelines: list[Pipeline]) -> bool:
    """Whether the members are fitted on log(target), all of them.

    Raises
    ------
    ExplanationTableError
        Some are and some are not: the ones' margins are logs of values, the others' values, and
        no weighted sum of the two is the blend's prediction or its log.
    """
    names = [type(p.named_steps.get("model")).__name__ for p in pipelines]
    logged = [uses_log_target(p.named_steps.get("model")) for p in pipelines]
    if any(logged) and not all(logged):
        on_log = ", ".join(n for n, log_target in zip(names, logged, strict=True) if log_target)
        on_raw = ", ".join(n for n, log_target in zip(names, logged, strict=True) if not log_target)
        raise ExplanationTableError(
            f"the blend mixes members fitted on log(target) ({on_log}) with members fitted on "
            f"the target itself ({on_raw}): their SHAP values add up to a log and to a value, "
            "and no sum of the two is the blended prediction or its log"
        )
    return all(logged)


def _member_node(nodes: list[onnx.NodeProto], number: int) -> onnx.NodeProto:
    """Blend member ``number``'s model node: the one whose outputs carry its prefix."""
    prefix = f"m{number}_"
    found = [n for n in nodes if n.output and n.output[0].startswith(prefix)]
    if len(found) != 1:
        raise ExplanationTableError(
            f"the blend's member {number} has {len(found)} model nodes; explanations take one"
        )
    return found[0]


def _blend_weights(model: onnx.ModelProto, members: int) -> tuple[float, ...]:
    """Each member's weight as the graph multiplies by it (float32), read from its
    ``blend_weighted_<i>`` node (equal weights share one initializer)."""
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    weights = []
    for number in range(members):
        node = nodes.get(f"{BLEND_PREFIX}weighted_{number}")
        if node is None or node.input[1] not in initializers:
            raise ExplanationTableError(f"the blend's weight of member {number} is not found")
        weights.append(float(numpy_helper.to_array(initializers[node.input[1]])))
    return tuple(weights)


def _encoded_rows(
    model_bytes: bytes, tensors: list[str], feeds: dict[str, Any]
) -> list[NDArray[np.float64]]:
    """The tensors the model nodes read, on the training rows (the graph run with them as
    extra outputs, as serving does; a tensor two members share is fetched once)."""
    unique = list(dict.fromkeys(tensors))
    session = ort.InferenceSession(
        with_float_outputs(model_bytes, unique), providers=["CPUExecutionProvider"]
    )
    rows = dict(zip(unique, session.run(unique, feeds), strict=True))
    return [np.asarray(rows[t], dtype=np.float64) for t in tensors]


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
