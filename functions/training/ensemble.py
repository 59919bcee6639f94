"""Greedy ensemble selection (Caruana et al. 2004) over the searched families, as ONE ONNX graph.

``select`` starts from an empty blend and, for ``ENSEMBLE_ROUNDS`` rounds, adds (with
replacement) the candidate whose addition gives the best contract metric of the averaged
held-out predictions (probabilities for classification, values for regression); ties go to the
better-ranked candidate. The blend kept is the best prefix of those rounds, so its weights are
``count / rounds kept``. Held-out predictions are the ones each family's selection figure was
computed from (``candidates.HeldOutPredictions``): the validation split, or the k-fold search's
out-of-fold predictions on small datasets, scored as the mean of the metric per fold exactly as
the search scores a trial. A blend ships only when it holds two or more families and beats the
best of them alone on that figure; at most ``max_ensemble_members`` families (a
hyperparameter, capped at ``MAX_ENSEMBLE_MEMBERS`` for serving latency: docs/decisions.md,
2026-12-03).

The exported graph is the members' own graphs side by side, each with its own encoders, reading
the same inputs; their probability (or value) outputs are multiplied by their weights and summed
into ``probabilities`` (``label`` is its argmax) or ``variable``: the interface of a single
model, so inference, calibration and the parity check need nothing new. ``NativeBlend`` is the
same blend of the native pipelines, which the parity check compares the graph with.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import onnx
from lightgbm import LGBMClassifier, LGBMRegressor
from numpy.typing import NDArray
from pydantic import JsonValue
from sklearn.pipeline import Pipeline

from functions.shared.errors import TrainingError
from functions.shared.features import (
    LABEL_OUTPUT,
    PREDICTION_OUTPUT,
    PROBABILITIES_OUTPUT,
    DatasetSchema,
)
from functions.shared.metrics import (
    METRICS,
    classification_report,
    compute_metric,
    regression_report,
)
from functions.shared.model_card import ENSEMBLE, CandidateRecord, EnsembleMember, RefitRecord
from functions.training.candidates import FittedCandidate, HeldOutPredictions
from functions.training.refit import scaled_iterations, selected_iterations
from functions.training.script_mode import MAX_ENSEMBLE_MEMBERS, MAX_ENSEMBLE_TREES
from functions.training.splits import Split

log = logging.getLogger(__name__)

ENSEMBLE_ROUNDS = 25  # weights in steps of 1/25 (AutoGluon's weighted ensemble also uses 25)
BLEND_PREFIX = "blend_"  # the names of the nodes and tensors the blend adds


@dataclass(frozen=True)
class Selection:
    """The outcome of greedy selection: ``counts[i]`` picks of candidate i in the rounds kept,
    the blend's figure, each candidate's figure alone, and the figure after every round."""

    counts: tuple[int, ...]
    score: float
    singles: tuple[float, ...]
    trajectory: tuple[float, ...]

    @property
    def weights(self) -> tuple[float, ...]:
        total = sum(self.counts) or 1
        return tuple(count / total for count in self.counts)

    @property
    def members(self) -> int:
        return sum(1 for count in self.counts if count)


def held_out_score(
    metric: str, y: NDArray[Any], values: NDArray[np.float64], fold: NDArray[np.intp]
) -> float:
    """The contract metric as the search computes its selection figure: on each fold's rows,
    then averaged (NaN when undefined on any fold, as a trial with an undefined fold scores)."""
    scores = []
    for k in np.unique(fold):
        rows = fold == k
        if METRICS[metric].task == "classification":
            proba = np.clip(values[rows], 0.0, 1.0)  # float32 members can stray past 1
            scores.append(compute_metric(metric, y[rows], proba=proba))
        else:
            scores.append(compute_metric(metric, y[rows], pred=values[rows]))
    return float(np.mean(scores))


def select(
    metric: str,
    held_out: Sequence[HeldOutPredictions],
    *,
    rounds: int = ENSEMBLE_ROUNDS,
    max_members: int = MAX_ENSEMBLE_MEMBERS,
    costs: Sequence[int] | None = None,
    max_cost: int | None = None,
) -> Selection:
    """Greedy forward selection with replacement over candidates in rank order.

    Each round adds the candidate that makes the averaged predictions score best (the first
    such in ``held_out`` order on a tie), even when no addition improves it, so that a later
    round can; the blend returned is the prefix of rounds with the best figure (the earliest
    on a tie). At most ``max_members`` distinct candidates are ever picked, and, with
    ``costs`` (trees per candidate), a candidate that would take the distinct members' total
    past ``max_cost`` is not. An undefined figure (NaN) ranks below every defined one.
    Deterministic: no randomness anywhere.
    """
    if not held_out:
        raise TrainingError("ensemble selection needs at least one candidate")
    if rounds < 1 or max_members < 1:
        raise TrainingError(
            f"ensemble selection needs rounds >= 1 and max_members >= 1, got "
            f"{rounds} and {max_members}"
        )
    first = held_out[0]
    for other in held_out[1:]:
        if (
            other.values.shape != first.values.shape
            or not np.array_equal(other.y, first.y)
            or not np.array_equal(other.fold, first.fold)
        ):
            raise TrainingError(
                "ensemble selection needs every candidate's held-out predictions on the same "
                f"rows and folds: got shapes {[h.values.shape for h in held_out]}"
            )
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0

    def signed(value: float) -> float:
        return -math.inf if math.isnan(value) else sign * value

    def score(values: NDArray[np.float64]) -> float:
        return held_out_score(metric, first.y, values, first.fold)

    singles = tuple(score(h.values) for h in held_out)
    cost = list(costs) if costs is not None else [0] * len(held_out)
    ceiling = math.inf if max_cost is None else max_cost
    counts = [0] * len(held_out)
    total = np.zeros_like(first.values, dtype=np.float64)
    best_counts: tuple[int, ...] = ()
    best = -math.inf
    best_value = math.nan
    trajectory: list[float] = []
    for done in range(1, rounds + 1):
        full = sum(1 for count in counts if count) >= max_members
        spent = sum(c for c, count in zip(cost, counts, strict=True) if count)
        allowed = [
            i
            for i in range(len(held_out))
            if counts[i] or (not full and spent + cost[i] <= ceiling)
        ]
        if not allowed:
            break
        figures = [score((total + held_out[i].values) / done) for i in allowed]
        pick = allowed[max(range(len(allowed)), key=lambda j: (signed(figures[j]), -j))]
        value = figures[allowed.index(pick)]
        counts[pick] += 1
        total += held_out[pick].values
        trajectory.append(value)
        if signed(value) > best or not best_counts:
            best, best_value, best_counts = signed(value), value, tuple(counts)
    return Selection(best_counts or tuple(counts), best_value, singles, tuple(trajectory))


@dataclass(frozen=True)
class NativeBlend:
    """The weighted average of fitted pipelines: what the blend's graph must reproduce.

    The weights are the float32 values the graph holds, so both sides average alike."""

    models: tuple[Pipeline, ...]
    weights: tuple[float, ...]
    task: str

    def predict_proba(self, x: Any) -> NDArray[np.float64]:
        return self._average([m.predict_proba(x) for m in self.models])

    def predict(self, x: Any) -> NDArray[Any]:
        if self.task == "classification":
            labels: NDArray[np.int64] = np.argmax(self.predict_proba(x), axis=1).astype(np.int64)
            return labels
        return self._average([m.predict(x) for m in self.models])

    def _average(self, outputs: list[Any]) -> NDArray[np.float64]:
        return weighted_average(self.weights, outputs)


def weighted_average(weights: Sequence[float], outputs: Sequence[Any]) -> NDArray[np.float64]:
    """``sum(weight_i * output_i)`` in float64, in member order (one arithmetic for selection
    and the native blend, so their figures agree to the last bit)."""
    blended = np.zeros_like(np.asarray(outputs[0], dtype=np.float64))
    for weight, output in zip(weights, outputs, strict=True):
        blended += weight * np.asarray(output, dtype=np.float64)
    return blended


@dataclass(frozen=True)
class Blend:
    """An ensemble that beat its best member on the selection figure: its members (rank
    order), their weights, its card record and the native model the parity check runs."""

    members: tuple[FittedCandidate, ...]
    weights: tuple[float, ...]
    record: CandidateRecord
    pipeline: NativeBlend
    name: str = ENSEMBLE

    def refit(self, refit_member: Callable[[FittedCandidate], FittedCandidate]) -> Blend:
        """The same blend of its members refit on train + validation (refit.py), the weights
        unchanged; the record keeps the train-only blend's figures and adds the refit's rows
        and seconds (each member's own refit is in its record)."""
        members = tuple(refit_member(member) for member in self.members)
        refits = [m.record.refit for m in members]
        if any(r is None for r in refits):
            raise TrainingError("a refit member carries no refit record")
        record = RefitRecord(
            rows=max(r.rows for r in refits if r is not None),
            seconds=round(sum(r.seconds for r in refits if r is not None), 3),
        )
        native = NativeBlend(tuple(m.pipeline for m in members), self.weights, self.pipeline.task)
        return Blend(
            members, self.weights, self.record.model_copy(update={"refit": record}), native
        )

    def to_onnx(
        self, schema: DatasetSchema, export: Callable[[Pipeline, DatasetSchema], bytes]
    ) -> bytes:
        """Each member through ``export`` (export.to_onnx), then blended into one graph."""
        graphs = [export(member.pipeline, schema) for member in self.members]
        return blend_graphs(graphs, self.weights, schema)


def choose_ensemble(
    ranked: Sequence[FittedCandidate],
    schema: DatasetSchema,
    validation: Split,
    *,
    max_members: int = MAX_ENSEMBLE_MEMBERS,
    refit_rows: tuple[int, int] | None = None,
) -> Blend | None:
    """The blend to try before the best single candidate, or None when none beats it.

    ``ranked`` is best first (rank_candidates). Candidates without held-out predictions from
    the search are scored on ``validation``; if any candidate's held-out rows differ from the
    others' (some from k-fold, some not), all are scored on ``validation`` alike.
    ``refit_rows`` (train rows, train + validation rows) when the members will be refit: trees
    are then counted as the refit graphs will hold them.
    """
    if len(ranked) < 2 or max_members < 2:
        return None
    started = time.perf_counter()
    held_out = _held_out(ranked, schema, validation)
    trees = [tree_count(c.pipeline, refit_rows) for c in ranked]
    max_trees = max(MAX_ENSEMBLE_TREES, trees[0])  # never more than the cap or ranked[0] alone
    selection = select(
        schema.metric, held_out, max_members=max_members, costs=trees, max_cost=max_trees
    )
    best_single = max(
        range(len(ranked)), key=lambda i: _signed(schema.metric, selection.singles[i])
    )
    picked = [i for i, count in enumerate(selection.counts) if count]
    # float32, as the graph holds them, so the native blend averages with the same numbers;
    # the blend's figure is computed with them too: it is the figure of what ships
    weights = tuple(float(np.float32(selection.weights[i])) for i in picked)
    score = math.nan
    if len(picked) >= 2:
        first = held_out[0]
        blended = weighted_average(weights, [held_out[i].values for i in picked])
        score = held_out_score(schema.metric, first.y, blended, first.fold)
    beats = _signed(schema.metric, score) > _signed(schema.metric, selection.singles[best_single])
    if not beats:
        log.info(
            "ensemble selection kept %s alone (%s=%s)",
            ranked[best_single].name,
            schema.metric,
            selection.singles[best_single],
        )
        return None
    members = tuple(ranked[i] for i in picked)
    native = NativeBlend(tuple(m.pipeline for m in members), weights, schema.task)
    record = CandidateRecord(
        name=ENSEMBLE,
        params={
            "method": "greedy selection with replacement (Caruana et al. 2004)",
            "rounds": ENSEMBLE_ROUNDS,
            "rounds_kept": sum(selection.counts),
            "max_members": max_members,
            "trees": sum(trees[i] for i in picked),
            "max_trees": max_trees,
            "selection": _selection_name(held_out[0]),
            "best_single": ranked[best_single].name,
            "best_single_value": _json(selection.singles[best_single]),
        },
        fit_seconds=round(time.perf_counter() - started, 3),
        metric_value=_json(score),
        validation=_report(native, schema, validation),
        members=[
            EnsembleMember(
                name=ranked[i].name, weight=selection.weights[i], count=selection.counts[i]
            )
            for i in picked
        ],
    )
    log.info(
        "ensemble of %s: %s=%s beats %s alone (%s)",
        ", ".join(f"{m.name} {m.weight:.2f}" for m in record.members),
        schema.metric,
        score,
        ranked[best_single].name,
        selection.singles[best_single],
    )
    return Blend(members, weights, record, native)


def tree_count(pipeline: Pipeline, refit_rows: tuple[int, int] | None = None) -> int:
    """The trees the pipeline's ONNX export holds: the boosting rounds kept by early stopping
    (the converters export those only) times the trees per round; 0 for a linear model. With
    ``refit_rows`` (train rows, train + validation rows), the trees its refit will hold: the
    rounds scaled as refit.py scales them."""
    model = pipeline.named_steps["model"]
    rounds = selected_iterations(model)
    if rounds is None:
        return 0
    if refit_rows is not None:
        rounds = scaled_iterations(rounds, *refit_rows)
    if isinstance(model, LGBMClassifier | LGBMRegressor):
        return rounds * int(model.booster_.num_model_per_iteration())
    classes = int(getattr(model, "n_classes_", 1))  # XGBoost: a tree per class and round
    return rounds * (classes if classes > 2 else 1)


def predictions(pipeline: Any, schema: DatasetSchema, split: Split) -> NDArray[np.float64]:
    """What ``held_out_score`` averages: class probabilities, or predicted values."""
    if schema.task == "classification":
        return np.asarray(pipeline.predict_proba(split.frame), dtype=np.float64)
    return np.asarray(pipeline.predict(split.frame), dtype=np.float64).ravel()


def on_split(pipeline: Any, schema: DatasetSchema, split: Split) -> HeldOutPredictions:
    """A model's held-out predictions on one split (one fold)."""
    return HeldOutPredictions(
        predictions(pipeline, schema, split), split.y, np.zeros(split.rows, dtype=np.intp)
    )


def blend_graphs(graphs: Sequence[bytes], weights: Sequence[float], schema: DatasetSchema) -> bytes:
    """One graph computing ``sum(weight_i * member_i)`` over members sharing the same inputs.

    Every member's names are prefixed ``m<i>_`` (its inputs excepted), its graph outputs
    become internal tensors, and what no longer feeds an output (a member's own label) is
    dropped, so onnxruntime runs each member's encoders and model once and nothing else.
    """
    if len(graphs) != len(weights) or len(graphs) < 2:
        raise TrainingError(
            f"a blend needs two or more graphs with one weight each; got {len(graphs)} graphs "
            f"and {len(weights)} weights"
        )
    models = [onnx.load_from_string(g) for g in graphs]
    first = models[0]
    inputs = [(i.name, i.type) for i in first.graph.input]
    classification = schema.task == "classification"
    source = PROBABILITIES_OUTPUT if classification else PREDICTION_OUTPUT
    for number, model in enumerate(models):
        if [(i.name, i.type) for i in model.graph.input] != inputs:
            raise TrainingError(
                f"blend member {number} has inputs {[i.name for i in model.graph.input]}; "
                f"expected {[name for name, _ in inputs]}"
            )
        if source not in [o.name for o in model.graph.output]:
            raise TrainingError(f"blend member {number} has no '{source}' output")
    graph = onnx.GraphProto(name=f"{first.graph.name}-blend")
    graph.input.extend(first.graph.input)
    weighted: list[str] = []
    for number, (model, weight) in enumerate(zip(models, weights, strict=True)):
        prefix = f"m{number}_"
        member = onnx.compose.add_prefix_graph(model.graph, prefix, rename_inputs=False)
        graph.node.extend(member.node)
        graph.initializer.extend(member.initializer)
        graph.value_info.extend(member.value_info)
        weight_name, product = f"{BLEND_PREFIX}weight_{number}", f"{BLEND_PREFIX}weighted_{number}"
        graph.initializer.append(
            onnx.numpy_helper.from_array(np.array(weight, dtype=np.float32), weight_name)
        )
        graph.node.append(
            onnx.helper.make_node("Mul", [prefix + source, weight_name], [product], name=product)
        )
        weighted.append(product)
    graph.node.append(onnx.helper.make_node("Sum", weighted, [source], name=f"{BLEND_PREFIX}sum"))
    output = next(o for o in first.graph.output if o.name == source)
    if classification:
        graph.node.append(
            onnx.helper.make_node(
                "ArgMax", [source], [LABEL_OUTPUT], axis=1, keepdims=0, name=f"{BLEND_PREFIX}label"
            )
        )
        label = next(o for o in first.graph.output if o.name == LABEL_OUTPUT)
        graph.output.extend([label, output])
    else:
        graph.output.append(output)
    _share_identical(graph)
    _drop_unused(graph)
    blended = onnx.helper.make_model(
        graph,
        opset_imports=_opsets(models),
        producer_name=first.producer_name,
        producer_version=first.producer_version,
    )
    blended.ir_version = max(m.ir_version for m in models)
    onnx.checker.check_model(blended)
    data: bytes = blended.SerializeToString()
    return data


def _share_identical(graph: onnx.GraphProto) -> None:
    """Common subexpressions once: initializers equal but for their name become one, then a
    node with the same operator, attributes and inputs as an earlier one is dropped and its
    outputs read from that one. Members fitted on the same rows with the same encoders
    therefore share them (every ONNX operator here is deterministic)."""
    alias: dict[str, str] = {}
    first_of: dict[bytes, str] = {}
    for initializer in graph.initializer:
        nameless = onnx.TensorProto()
        nameless.CopyFrom(initializer)
        nameless.name = ""
        key = nameless.SerializeToString(deterministic=True)
        alias[initializer.name] = first_of.setdefault(key, initializer.name)
    earlier: dict[tuple[object, ...], list[str]] = {}
    kept = []
    for node in graph.node:
        node.input[:] = [alias.get(name, name) for name in node.input]
        key = (
            node.domain,
            node.op_type,
            tuple(node.input),
            tuple(a.SerializeToString(deterministic=True) for a in node.attribute),
            len(node.output),
        )
        if key in earlier:
            alias.update(zip(node.output, earlier[key], strict=True))
            continue
        earlier[key] = list(node.output)
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Keep only the nodes and initializers that some graph output depends on (the nodes are
    in topological order, as ONNX requires)."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _opsets(models: Sequence[onnx.ModelProto]) -> list[onnx.OperatorSetIdProto]:
    versions: dict[str, int] = {}
    for model in models:
        for entry in model.opset_import:
            versions[entry.domain] = max(versions.get(entry.domain, 0), int(entry.version))
    return [onnx.helper.make_opsetid(domain, version) for domain, version in versions.items()]


def _held_out(
    ranked: Sequence[FittedCandidate], schema: DatasetSchema, validation: Split
) -> list[HeldOutPredictions]:
    found = [c.held_out for c in ranked]
    if all(h is not None for h in found):
        present = cast(list[HeldOutPredictions], found)
        first = present[0]
        if all(
            h.values.shape == first.values.shape and np.array_equal(h.fold, first.fold)
            for h in present
        ):
            return present
    return [on_split(c.pipeline, schema, validation) for c in ranked]


def _selection_name(held_out: HeldOutPredictions) -> str:
    folds = int(np.unique(held_out.fold).size)
    return "validation" if folds == 1 else f"{folds}-fold out-of-fold"


def _signed(metric: str, value: float) -> float:
    if math.isnan(value):
        return -math.inf
    return value if METRICS[metric].higher_is_better else -value


def _json(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _report(native: NativeBlend, schema: DatasetSchema, split: Split) -> dict[str, JsonValue]:
    """The blend's validation report, as ``candidates.score`` reports a family's."""
    values = predictions(native, schema, split)
    raw: dict[str, object]
    if schema.task == "classification":
        raw = classification_report(split.y, np.clip(values, 0.0, 1.0), schema.classes or [])
    else:
        raw = regression_report(split.y, values)
    return cast(dict[str, JsonValue], raw)
