"""Exact per-prediction explanations (SHAP values) of a shipped ONNX graph, with numpy only.

Training writes an *explanation table* into the model file itself, as the ONNX model's
``metadata_props`` entry ``sluice.explain`` (an npz, base64): the model's linear coefficients or
tree nodes as the graph holds them, the tree nodes' covers (the boosters' own, which the graph
does not carry), the training mean of every encoded column, and which user feature each encoded
column comes from. The table therefore shares the model's sha256, needs no second artifact, no
registry field and no card field, and cannot describe another model than the one it ships in.

At serving time (``load_explainer``) the table is read from the file's top-level protobuf fields
and the graph is opened once more with one extra output: the encoded tensor its model node
reads (imputed, scaled, ordinal- or one-hot-encoded), so the explanation sees exactly the
numbers the model saw. Contributions are computed on those encoded columns and summed back to
the user's features.

- Linear: ``coef * (x - training mean)``, exact (the independent-features SHAP values that
  ``shap.LinearExplainer`` gives with the training rows as background).
- Trees: path-dependent TreeSHAP (Lundberg et al. 2018), exact. Per leaf, with ``P`` the
  distinct features on its path, ``z_j`` the product of the cover fractions of the path's
  splits on feature ``j`` and ``o_j`` whether the row satisfies them all, a feature's share is
  ``v (o_i - z_i) sum_{S ⊆ P\\{i}} |S|!(d-|S|-1)!/d! prod_{S} o_j prod_{P\\S\\{i}} z_j``: exactly
  what algorithm 2's EXTEND / UNWOUND sums compute. Since ``o`` is 0 or 1, the inner sum only
  depends on the set ``T`` of satisfied features, and is ``Psi(T\\{i}) / z_i`` with
  ``Psi(U) = sum_{S ⊆ U} w(|S|) prod_{P\\S} z_j``: a table of 2^d values per leaf, built once
  when the model is opened (the "Fast TreeSHAP v2" trade of memory for time). A row then costs
  one comparison per node, one gather per (leaf, feature) and one sum: no Python loop.
- Ensembles: the weighted sum of the members' exact values (a table lists its members, their
  weights and each member's own map of encoded columns to user features: members of one blend
  encode differently, one-hot for a linear model, target-ordered codes for trees).

Base value plus contributions equals the model's margin: the value for a regressor, the
log-odds of the positive class for a binary classifier, the explained class's logit (softmax
input) for a multiclass one; a temperature-calibrated graph's margins are divided by its
temperature, so they are the log-odds of the probabilities it serves. A blend of regressors
averages values, so its sum is its prediction; a blend of classifiers averages probabilities,
which no sum of margins reproduces, so its sum is the weighted mean of its members' log-odds
(``weighted_log_odds``) or logits (``weighted_logit``), uncalibrated (docs/decisions.md,
2026-12-03).

Trees fitted on ``log(target)`` (training/target.py) serve ``exp`` of their margin: their sum is
that margin, the log of the served value (``log_value``), exact as a classifier's log-odds are.
A blend of such trees averages the members' values, which no sum of logs reproduces either: its
sum is the weighted sum of the members' margins (``weighted_log_value``), the log of the
members' weighted geometric mean, not of the served (arithmetic) mean (docs/decisions.md,
2026-12-04). A blend mixing them with members fitted on the target itself has no table: its
members' margins are in two units, and ``ABSENT_KEY`` says so in the model file instead.

Imports numpy only: this module is on the inference path.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from functions.shared.errors import SluiceError
from functions.shared.explanation_outputs import Output

METADATA_KEY = "sluice.explain"
# Why a model file carries no table (training found the model one it does not describe): what
# the explain route answers instead of a generic "no table".
ABSENT_KEY = "sluice.explain.absent"
FORMAT_VERSION = 2  # 2: one column map per member (1: one map, one member)
READ_FORMATS = (1, 2)
# Longest distinct-feature path a tree table takes: its leaf's table holds 2^d floats.
MAX_PATH_FEATURES = 16
# Largest TreeSHAP table a model may need (float32: 256 MiB), so a Lambda's memory holds it.
MAX_TABLE_FLOATS = 1 << 26
# Rows explained per numpy pass: bounds the (rows x leaf-features) temporaries.
_CELLS_PER_PASS = 4_000_000

# A binary classifier's outputs: the positive class's, the negative class's being its negation.
BINARY_OUTPUTS: frozenset[str] = frozenset({"log_odds", "weighted_log_odds"})
Kind = Literal["linear", "trees"]


class ExplanationTableError(SluiceError):
    """A model file's explanation table is missing, unreadable or inconsistent."""


# --- the table as stored --------------------------------------------------------------------


@dataclass(frozen=True)
class LinearMember:
    """``margin[k] = coefficients[k] @ x + intercepts[k]``; ``mean``: training mean of x."""

    features_tensor: str
    coefficients: NDArray[np.float64]  # (targets, columns)
    intercepts: NDArray[np.float64]  # (targets,)
    mean: NDArray[np.float64]  # (columns,)


@dataclass(frozen=True)
class TreeMember:
    """A sum of trees as the graph's TreeEnsemble node holds them, plus each node's cover.

    Nodes are numbered globally; ``true_child`` / ``false_child`` are -1 on a leaf. A row goes to
    ``true_child`` when ``x < threshold`` (``x <= threshold`` where ``leq``), and a missing
    value goes there when ``missing_true``.
    """

    features_tensor: str
    feature: NDArray[np.int32]
    threshold: NDArray[np.float32]
    leq: NDArray[np.bool_]
    missing_true: NDArray[np.bool_]
    true_child: NDArray[np.int32]
    false_child: NDArray[np.int32]
    cover: NDArray[np.float64]
    values: NDArray[np.float64]  # (nodes, targets): leaf weights, 0 on internal nodes
    roots: NDArray[np.int32]
    base: NDArray[np.float64]  # (targets,)


Member = LinearMember | TreeMember


@dataclass(frozen=True)
class ExplanationTable:
    """What training stores in the model file.

    ``column_maps[m][c]``: index (in the card's feature order) of the user feature member
    ``m``'s encoded column ``c`` comes from. ``scale``: what margins are multiplied by
    (1 / temperature for a calibrated graph). ``weights``: each member's weight in the sum.
    """

    output: Output
    scale: float
    column_maps: tuple[NDArray[np.int32], ...]
    members: tuple[Member, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.members) == len(self.weights) == len(self.column_maps) >= 1:
            raise ExplanationTableError(
                f"the explanation table has {len(self.members)} members, {len(self.weights)} "
                f"weights and {len(self.column_maps)} column maps; it needs one of each per member"
            )

    @property
    def column_features(self) -> NDArray[np.int32]:
        """The members' column maps end to end: the user feature of each column of
        ``Contributions.columns``."""
        return np.concatenate(self.column_maps).astype(np.int32)

    def to_bytes(self) -> bytes:
        arrays: dict[str, NDArray[Any]] = {}
        kinds: list[Kind] = []
        for number, member in enumerate(self.members):
            arrays[f"column_features_{number}"] = self.column_maps[number]
            fields = vars(member)
            kinds.append("linear" if isinstance(member, LinearMember) else "trees")
            for name, value in fields.items():
                if name != "features_tensor":
                    arrays[f"m{number}_{name}"] = value
        header = {
            "format": FORMAT_VERSION,
            "output": self.output,
            "scale": self.scale,
            "kinds": kinds,
            "weights": list(self.weights),
            "features_tensors": [m.features_tensor for m in self.members],
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **arrays)
        return base64.b64encode(buffer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> ExplanationTable:
        try:
            with np.load(io.BytesIO(base64.b64decode(data)), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            header = json.loads(arrays["header"].tobytes())
        except Exception as exc:
            raise ExplanationTableError(f"the explanation table cannot be read: {exc}") from exc
        if header.get("format") not in READ_FORMATS:
            raise ExplanationTableError(
                f"explanation table format {header.get('format')} is not one of {READ_FORMATS}"
            )
        try:
            return cls._from_parts(header, arrays)
        except ExplanationTableError:
            raise
        except Exception as exc:  # a missing key or array, a field of the wrong type or shape
            raise ExplanationTableError(
                f"the explanation table is damaged: {type(exc).__name__}: {exc}"
            ) from exc

    @classmethod
    def _from_parts(cls, header: dict[str, Any], arrays: dict[str, Any]) -> ExplanationTable:
        members: list[Member] = []
        for number, (kind, tensor) in enumerate(
            zip(header["kinds"], header["features_tensors"], strict=True)
        ):
            fields = {
                name.removeprefix(f"m{number}_"): value
                for name, value in arrays.items()
                if name.startswith(f"m{number}_")
            }
            if kind not in ("linear", "trees"):
                raise ExplanationTableError(f"explanation table member {number} is a {kind!r}")
            member_type = LinearMember if kind == "linear" else TreeMember
            members.append(member_type(features_tensor=tensor, **fields))
        if header["format"] == 1:  # one member, one map
            maps = [arrays["column_features"]]
        else:
            maps = [arrays[f"column_features_{number}"] for number in range(len(members))]
        if header["output"] not in get_args(Output):
            raise ExplanationTableError(f"explanation table output {header['output']!r} is unknown")
        return cls(
            output=header["output"],
            scale=float(header["scale"]),
            column_maps=tuple(m.astype(np.int32) for m in maps),
            members=tuple(members),
            weights=tuple(float(w) for w in header["weights"]),
        )


# --- explaining -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Contributions:
    """Per row: the explained target, base value, per-column contributions and the margin.

    ``base + columns.sum(axis=1) == margin`` (to float rounding), all already scaled.
    """

    targets: NDArray[np.int64]  # (rows,)
    base: NDArray[np.float64]  # (rows,)
    columns: NDArray[np.float64]  # (rows, encoded columns)
    margin: NDArray[np.float64]  # (rows,)

    def by_feature(self, column_features: NDArray[np.int32], features: int) -> NDArray[Any]:
        """Contributions summed per user feature: (rows, features)."""
        mapping = np.zeros((self.columns.shape[1], features))
        mapping[np.arange(column_features.size), column_features] = 1.0
        result: NDArray[np.float64] = self.columns @ mapping
        return result


class _LinearExplainer:
    def __init__(self, member: LinearMember) -> None:
        self.coefficients = member.coefficients
        self.mean = member.mean
        self.expected = member.coefficients @ member.mean + member.intercepts

    def explain(
        self, x: NDArray[Any], targets: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        centred = np.asarray(x, dtype=np.float64) - self.mean
        columns = self.coefficients[targets] * centred
        return self.expected[targets], columns


class _TreeExplainer:
    """Path-dependent TreeSHAP over every leaf at once (see the module docstring).

    A leaf's distinct path features are numbered (its *slots*) in the order the path meets them,
    so a split's slot is the same for every leaf below it: which slots a row fails is then
    propagated from the roots down, one tree level per numpy pass, instead of per path edge.
    """

    def __init__(self, member: TreeMember) -> None:
        # Splits are compared on internal nodes only; ``levels`` index their parents that way.
        internal = np.flatnonzero(member.true_child >= 0)
        position = np.full(member.feature.size, -1, dtype=np.intp)
        position[internal] = np.arange(internal.size)
        self.feature = member.feature[internal].astype(np.intp)
        self.threshold = member.threshold[internal].astype(np.float32)
        self.leq = member.leq[internal].astype(bool)
        self.missing_true = member.missing_true[internal].astype(bool)
        values = member.values.astype(np.float64)
        walk = _walk(member)
        self.expected = member.base.astype(np.float64) + walk.fractions @ values[walk.leaves]
        self.levels = [
            (children, parents, position[parents], went_true, bits)
            for children, parents, went_true, bits in walk.levels
        ]
        self.nodes = member.feature.size
        leaves = np.array(walk.path_leaves, dtype=np.intp)
        self.path_leaves = leaves
        self.full = np.array([(1 << len(z)) - 1 for z in walk.zs], dtype=np.int32)
        # Slots in leaf order: a leaf's slots are contiguous (``np.repeat`` spreads its pattern)
        # and read its table in increasing addresses.
        self.slots_per_leaf = np.array([len(z) for z in walk.zs], dtype=np.intp)
        slot_leaf = np.repeat(np.arange(leaves.size), self.slots_per_leaf)
        slot_number = np.array([j for z in walk.zs for j in range(len(z))], dtype=np.int32)
        self.slot_bit = (np.int32(1) << slot_number).astype(np.int32)
        self.slot_unset = ~self.slot_bit
        # int32 indexes halve these arrays: a row's time goes to memory traffic, not arithmetic.
        self.slot_feature = np.array([f for fs in walk.features for f in fs], dtype=np.int32)
        z = np.array([v for zs in walk.zs for v in zs], dtype=np.float64)
        self.slot_ratio = (1.0 - z) / z  # (o - z) / z where o = 1; -1 where o = 0
        tables, offsets = _psi_tables(walk.zs)
        # float32 halves the table's memory traffic (the gather from it is the row's largest
        # cost); its rounding, 6e-8 of a share, stays far inside the 1e-4 the tests hold.
        self.psi = tables.astype(np.float32)
        self.slot_offset = offsets[slot_leaf].astype(np.int32)
        self.slot_values = values[leaves][slot_leaf]  # (slots, targets)
        # One target (a regressor, a binary classifier): the share's factor for o = 1 and o = 0,
        # in float32 like the table (a row's working set is what its time goes to).
        self.followed = (self.slot_values[:, 0] * self.slot_ratio).astype(np.float32)
        self.missed = (-self.slot_values[:, 0]).astype(np.float32)

    def explain(
        self, x: NDArray[Any], targets: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        rows, width = x.shape
        columns = np.zeros((rows, width))
        if self.slot_feature.size:
            step = max(1, _CELLS_PER_PASS // max(self.slot_feature.size, self.nodes))
            for first in range(0, rows, step):
                chunk = slice(first, first + step)
                columns[chunk] = self._columns(x[chunk], targets[chunk], width)
        return self.expected[targets], columns

    def _columns(
        self, x: NDArray[Any], targets: NDArray[np.int64], width: int
    ) -> NDArray[np.float64]:
        rows = x.shape[0]
        values = np.asarray(x, dtype=np.float32)[:, self.feature]
        goes_true = np.where(
            np.isnan(values),
            self.missing_true,
            np.where(self.leq, values <= self.threshold, values < self.threshold),
        )
        failed = np.zeros((rows, self.nodes), dtype=np.int32)  # slots failed on the way
        for children, parents, compared, went_true, bits in self.levels:
            missed = goes_true[:, compared] != went_true
            failed[:, children] = failed[:, parents] | (missed * bits)
        satisfied = self.full & ~failed[:, self.path_leaves]
        pattern = np.repeat(satisfied, self.slots_per_leaf, axis=1)
        psi = self.psi[self.slot_offset + (pattern & self.slot_unset)]
        followed = (pattern & self.slot_bit) != 0
        share: NDArray[Any]
        if self.slot_values.shape[1] == 1:
            share = psi * np.where(followed, self.followed, self.missed)
        else:
            weights = self.slot_values[:, targets].T
            share = psi * np.where(followed, self.slot_ratio, -1.0) * weights
        sums: NDArray[Any]
        if rows == 1:
            sums = np.bincount(self.slot_feature, weights=share[0], minlength=width)
            return np.asarray(sums[None, :], dtype=np.float64)
        index = self.slot_feature + width * np.arange(rows)[:, None]
        sums = np.bincount(index.ravel(), weights=share.ravel(), minlength=rows * width)
        return np.asarray(sums.reshape(rows, width), dtype=np.float64)


@dataclass
class _Walk:
    """Every tree walked from its root: ``levels`` (per depth: children, their parents, whether
    each is its parent's true child, and the bit of the parent's slot), every leaf with the
    fraction of the training cover that reaches it, and for each leaf under at least one split
    its slots' features and cover fractions ``z``."""

    levels: list[tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_], NDArray[np.int32]]]
    leaves: list[int]
    fractions: NDArray[np.float64]
    path_leaves: list[int]
    features: list[list[int]]
    zs: list[list[float]]


def _walk(member: TreeMember) -> _Walk:
    true_child, false_child = member.true_child.tolist(), member.false_child.tolist()
    cover, feature = member.cover.tolist(), member.feature.tolist()
    by_depth: dict[int, list[tuple[int, int, bool, int]]] = {}
    walk = _Walk([], [], np.zeros(0), [], [], [])
    fractions: list[float] = []
    # (node, depth, fraction of the root's cover, slot of each feature met, z per slot)
    stack: list[tuple[int, int, float, dict[int, int], list[float]]] = [
        (root, 0, 1.0, {}, []) for root in member.roots.tolist()
    ]
    while stack:
        node, depth, fraction, slots, zs = stack.pop()
        if true_child[node] < 0:
            walk.leaves.append(node)
            fractions.append(fraction)
            if slots:
                if len(slots) > MAX_PATH_FEATURES:
                    raise ExplanationTableError(
                        f"a tree path splits on {len(slots)} distinct features; explanations "
                        f"take at most {MAX_PATH_FEATURES}"
                    )
                walk.path_leaves.append(node)
                walk.features.append(list(slots))
                walk.zs.append(zs)
            continue
        if cover[node] <= 0:
            raise ExplanationTableError(f"tree node {node} has no cover")
        split = feature[node]
        slot = slots.get(split, len(slots))
        for child, went_true in ((true_child[node], True), (false_child[node], False)):
            z = cover[child] / cover[node]
            child_zs = list(zs)
            if slot == len(zs):
                child_zs.append(z)
            else:
                child_zs[slot] *= z
            by_depth.setdefault(depth + 1, []).append((child, node, went_true, 1 << slot))
            stack.append((child, depth + 1, fraction * z, {**slots, split: slot}, child_zs))
    walk.fractions = np.array(fractions, dtype=np.float64)
    for depth in sorted(by_depth):
        level = by_depth[depth]
        walk.levels.append(
            (
                np.array([e[0] for e in level], dtype=np.intp),
                np.array([e[1] for e in level], dtype=np.intp),
                np.array([e[2] for e in level], dtype=bool),
                np.array([e[3] for e in level], dtype=np.int32),
            )
        )
    return walk


def _psi_tables(zs_by_leaf: list[list[float]]) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Per leaf with d distinct path features: Psi(U) for every U ⊆ P (2^d values), all in one
    flat array, and each leaf's offset into it."""
    sizes = np.array([1 << len(zs) for zs in zs_by_leaf], dtype=np.intp)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    if int(sizes.sum()) > MAX_TABLE_FLOATS:
        raise ExplanationTableError(
            f"the trees' SHAP tables would hold {int(sizes.sum())} values; explanations take at "
            f"most {MAX_TABLE_FLOATS} (the paths are too long)"
        )
    flat = np.zeros(int(sizes.sum()))
    by_depth: dict[int, list[int]] = {}
    for leaf, zs in enumerate(zs_by_leaf):
        by_depth.setdefault(len(zs), []).append(leaf)
    for depth, group in by_depth.items():
        size = 1 << depth
        z = np.array([zs_by_leaf[leaf] for leaf in group], dtype=np.float64).reshape(-1, depth)
        masks = np.arange(size)
        counts = np.array([bin(m).count("1") for m in range(size)])
        weights = np.array(
            [
                math.factorial(k) * math.factorial(depth - k - 1) / math.factorial(depth)
                if k < depth
                else 0.0
                for k in counts
            ]
        )
        # term[S] = w(|S|) * prod_{j not in S} z_j
        term = np.ones((len(group), size))
        for j in range(depth):
            outside = (masks >> j) & 1 == 0
            term[:, outside] *= z[:, j : j + 1]
        term *= weights
        # Psi(U) = sum over subsets S of U: the zeta transform, one bit at a time.
        for j in range(depth):
            shaped = term.reshape(len(group), size >> (j + 1), 2, 1 << j)
            shaped[:, :, 1, :] += shaped[:, :, 0, :]
        index = offsets[np.array(group)][:, None] + masks
        flat[index] = term
    return flat, offsets


class Explainer:
    """A model file's explanation table, ready to explain encoded rows."""

    def __init__(self, table: ExplanationTable) -> None:
        self.table = table
        self._members = [
            _LinearExplainer(m) if isinstance(m, LinearMember) else _TreeExplainer(m)
            for m in table.members
        ]

    @property
    def features_tensors(self) -> list[str]:
        return [m.features_tensor for m in self.table.members]

    def explain(self, encoded: list[NDArray[Any]], targets: NDArray[np.int64]) -> Contributions:
        """``encoded``: each member's encoded rows (its ``features_tensor``); ``targets``: the
        margin explained per row (0 for a regressor or a binary classifier). The columns are
        the members' own, weighted, end to end (``ExplanationTable.column_features``)."""
        if len(encoded) != len(self._members):
            raise ExplanationTableError(
                f"{len(encoded)} encoded tensors for {len(self._members)} members"
            )
        rows = encoded[0].shape[0]
        base = np.zeros(rows)
        parts = []
        for number, (member, weight, x, column_map) in enumerate(
            zip(self._members, self.table.weights, encoded, self.table.column_maps, strict=True)
        ):
            if x.shape[1] != column_map.size:
                raise ExplanationTableError(
                    f"member {number}'s encoded tensor has {x.shape[1]} columns, its map in the "
                    f"table {column_map.size}"
                )
            member_base, member_columns = member.explain(x, targets)
            base += weight * member_base
            parts.append(member_columns if weight == 1.0 else weight * member_columns)
        columns = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        scale = self.table.scale
        base, columns = base * scale, columns * scale
        return Contributions(targets, base, columns, base + columns.sum(axis=1))


# --- reading the table from an ONNX file, without the onnx package ---------------------------

_MODEL_GRAPH = 7
_MODEL_METADATA = 14
_GRAPH_OUTPUT = 12


def metadata_entries(model: bytes) -> dict[str, bytes]:
    """The ``metadata_props`` of an ONNX ModelProto, read from its top-level protobuf fields."""
    entries: dict[str, bytes] = {}
    for field, value in _fields(model, keep={_MODEL_METADATA}):
        if field == _MODEL_METADATA and isinstance(value, bytes):
            parts = dict(_fields(value))
            key, entry = parts.get(1), parts.get(2)
            if isinstance(key, bytes) and isinstance(entry, bytes):
                entries[key.decode()] = entry
    return entries


def with_float_outputs(model: bytes, names: list[str]) -> bytes:
    """The same model with the float tensors ``names`` added as graph outputs.

    A protobuf parser merges a repeated embedded message field: appending a second ``graph``
    field that holds only ``output`` entries adds those outputs to the model's graph.
    """
    outputs = b""
    for name in names:
        tensor_type = _varint(1 << 3) + _varint(1)  # elem_type (a varint field) = FLOAT
        type_proto = _field(1, tensor_type)  # TypeProto.tensor_type
        value_info = _field(1, name.encode()) + _field(2, type_proto)
        outputs += _field(_GRAPH_OUTPUT, value_info)
    return model + _field(_MODEL_GRAPH, outputs)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _fields(data: bytes, keep: set[int] | None = None) -> list[tuple[int, bytes | int]]:
    """Top-level (field number, value) pairs of a protobuf message; nested ones stay bytes.
    ``keep``: the only fields returned (the others, a model's graph among them, are skipped
    without copying them)."""
    fields: list[tuple[int, bytes | int]] = []
    view = memoryview(data)
    position = 0

    def varint() -> int:
        nonlocal position
        shift = result = 0
        while True:
            if position >= len(view):
                raise ExplanationTableError("the model file is not a protobuf message")
            byte = view[position]
            position += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while position < len(view):
        key = varint()
        number, wire = key >> 3, key & 7
        wanted = keep is None or number in keep
        if wire == 0:
            value = varint()
            if wanted:
                fields.append((number, value))
        elif wire == 2:
            length = varint()
            if wanted:
                fields.append((number, bytes(view[position : position + length])))
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            raise ExplanationTableError(f"unsupported protobuf wire type {wire}")
    return fields
