"""Evaluate: score the challenger and the live champion on the same test split, decide the gate.

Steps, each a boundary that validates:

1. open SageMaker's ``model.tar.gz`` safely (only ``model.onnx`` and ``model_card.json``, size
   capped) and check the card belongs to this run's dataset version and that the ONNX bytes are
   the ones the card's sha256 names;
2. publish ``model.onnx`` and ``model_card.json`` next to the archive, where inference reads them;
3. score the challenger and, when the dataset has a live model that can score the same rows
   (its features all still there, of the same kinds; added columns it ignores), the champion
   (its bytes checked against the registry's sha256) on the current test split, each with a
   bootstrap interval and group metrics per ``sensitive`` column. A champion that cannot be
   loaded does not block the run; one whose features changed does, unless the contract
   accepts the change (``accept_schema_change``): the gate refuses it, naming the change;
4. apply the gate policy, write ``evaluation.json``, register the challenger as a candidate;
5. write the model report beside the model (``report/``: the page, its figures and the JSON
   twin, ``model_report.py``), from the outputs already computed for the gate.

Nothing here changes the live model: promotion is a separate step the Choice state selects.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pydantic import JsonValue, ValidationError

from functions.evaluate.model_report import (
    ModelReport,
    ReportInputs,
    ScoredRows,
    build_model_report,
)
from functions.evaluate.models import (
    EVALUATION_FILE,
    ChampionNote,
    EvaluateResult,
    EvaluationReport,
    ModelScore,
)
from functions.evaluate.report_html import figures as draw_figures
from functions.evaluate.report_html import report_html
from functions.shared import layout
from functions.shared.contract import describe_validation_error
from functions.shared.errors import SluiceError
from functions.shared.features import DatasetSchema, normalise_category
from functions.shared.gate import GateEvidence, MetricInterval, gate_inputs, small_classes
from functions.shared.metrics import (
    bootstrap_interval,
    classification_report,
    regression_report,
)
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
from functions.shared.pipeline_state import PipelineState
from functions.shared.registry import ModelRegistry, NewModelVersion
from functions.shared.row_hash import (
    ROW_HASH,
    ChannelManifestError,
    is_manifest_uri,
    read_channel_manifest,
)
from functions.shared.row_tables import kept_once
from functions.shared.schema_change import SchemaChange, diff_schema
from functions.shared.scoring import ModelIntegrityError, ScoringModel
from functions.shared.storage import ObjectNotFoundError, ObjectStore, parse_s3_uri, s3_uri

MAX_MODEL_BYTES = 200 * 1024 * 1024
MAX_CARD_BYTES = 4 * 1024 * 1024
MIN_GROUP_ROWS = 10  # smaller groups are reported by size only: their metrics are noise
MAX_GROUPS = 50


class ModelArtifactError(SluiceError):
    """The training job's output is not a usable sluice model (missing file, wrong dataset,
    sha256 mismatch, oversized member)."""


class EvaluationError(SluiceError):
    """The test split cannot be scored (missing split, columns or labels)."""


@dataclass(frozen=True)
class TestSplit:
    columns: dict[str, NDArray[Any]]
    rows: int


@dataclass(frozen=True)
class ChampionOutcome:
    score: ModelScore | None
    note: ChampionNote
    schema_change: SchemaChange | None  # None: no live model, not loadable, or no change
    rows: ScoredRows | None = None  # its outputs on the test split, when scored


def evaluate(
    state: PipelineState,
    *,
    store: ObjectStore,
    registry: ModelRegistry,
    clock: Callable[[], datetime],
) -> EvaluateResult:
    if state.training is None:
        raise EvaluationError("the pipeline state has no 'training' result to evaluate")
    onnx_bytes, card = read_model_archive(store, state.training.model_artifacts)
    if (card.dataset, card.dataset_version) != (state.dataset, state.dataset_version):
        raise ModelArtifactError(
            f"the model card is for {card.dataset}@{card.dataset_version}, but this run trains "
            f"{state.dataset}@{state.dataset_version}"
        )
    challenger = _load(onnx_bytes, card, card.onnx.sha256, what="the trained model")

    prefix = layout.model_prefix(state.dataset, state.training.job_name)
    bucket = state.artifacts_bucket
    store.put_bytes(bucket, prefix + MODEL_FILE, onnx_bytes, "application/octet-stream")
    store.put_bytes(bucket, prefix + MODEL_CARD_FILE, card.model_dump_json(indent=2).encode())

    split = read_test_split(store, state.test_uri)
    challenger_rows = score_rows(challenger, split, role="challenger")
    challenger_score = score_model(
        challenger,
        split,
        metric=state.metric,
        role="challenger",
        version=None,
        sensitive=state.sensitive,
        rows=challenger_rows,
    )

    champion = _score_champion(state, card, split, store=store, registry=registry)
    champion_score, note = champion.score, champion.note
    named, more = small_classes(_class_rows(challenger_score))
    evidence = GateEvidence(
        schema_change=champion.schema_change,
        champion_note=None if note.scored or note.version is None else note.reason,
        challenger_interval=challenger_score.interval,
        champion_interval=champion_score.interval if champion_score else None,
        test_rows=split.rows,
        small_classes=named,
        more_small_classes=more,
    )
    inputs = gate_inputs(
        state.metric,
        challenger_score.metric_value,
        champion_score.metric_value if champion_score else None,
        threshold=state.threshold,
        tolerance=state.tolerance,
        evidence=evidence,
    )
    decision = inputs.decide()
    report = EvaluationReport(
        dataset=state.dataset,
        dataset_version=state.dataset_version,
        run_name=state.run_name,
        task=card.task,
        metric=state.metric,
        test_rows=split.rows,
        challenger=challenger_score,
        champion=champion_score,
        champion_note=note,
        gate_inputs=inputs,
        decision=decision,
        created_at=clock(),
    )
    report_uri = s3_uri(bucket, prefix + EVALUATION_FILE)
    store.put_bytes(bucket, prefix + EVALUATION_FILE, report.model_dump_json(indent=2).encode())
    schema, profile = _dataset_profile(store, bucket, state)
    # Built before registration: a report that cannot be built fails the run, so no version
    # goes live that a person cannot inspect.
    model_report = build_model_report(
        ReportInputs(
            dataset=state.dataset,
            dataset_version=state.dataset_version,
            run_name=state.run_name,
            card=card,
            model=challenger,
            columns=split.columns,
            challenger=challenger_rows,
            challenger_score=challenger_score,
            champion=champion.rows,
            champion_score=champion_score,
            champion_note=note,
            gate=inputs,
            decision=decision,
            sensitive=state.sensitive,
            fairness_threshold=state.fairness_threshold,
            schema=schema,
            profile=profile,
        ),
        created_at=clock(),
    )

    registered = registry.register(
        NewModelVersion(
            dataset=state.dataset,
            run_name=state.run_name,
            dataset_version=state.dataset_version,
            model_uri=s3_uri(bucket, prefix + MODEL_FILE),
            card_uri=s3_uri(bucket, prefix + MODEL_CARD_FILE),
            report_uri=report_uri,
            artifact_uri=state.training.model_artifacts,
            sha256=card.onnx.sha256,
            metric=state.metric,
            metric_value=challenger_score.metric_value,
            summary=_summary(card, challenger_score),
            gate="passed" if decision.passed else "refused",
            gate_reasons=decision.reasons,
        ),
        actor=state.actor,
    )
    model_report_uri = write_model_report(
        store,
        bucket,
        layout.model_report_prefix(state.dataset, state.training.job_name),
        model_report.model_copy(update={"model_version": registered.version}),
    )
    return EvaluateResult(
        model_version=registered.version,
        champion_version=note.version,
        report_uri=report_uri,
        model_report_uri=model_report_uri,
        gate=inputs,
        passed=decision.passed,
        reasons=decision.reasons,
    )


def read_model_archive(store: ObjectStore, artifact_uri: str) -> tuple[bytes, ModelCard]:
    """``model.onnx`` and the validated card from SageMaker's ``model.tar.gz``.

    Only the two regular files are read, each with a size cap, so a hostile or broken archive
    (links, huge members, path tricks) cannot write anywhere or exhaust memory.
    """
    bucket, key = parse_s3_uri(artifact_uri)
    try:
        archive = store.get_bytes(bucket, key)
    except Exception as exc:  # the adapter's not-found error is the SDK's
        raise ModelArtifactError(f"cannot read the model archive {artifact_uri}: {exc}") from exc
    wanted = {MODEL_FILE: MAX_MODEL_BYTES, MODEL_CARD_FILE: MAX_CARD_BYTES}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name not in wanted or not member.isfile():
                    continue
                if member.size > wanted[name]:
                    raise ModelArtifactError(
                        f"{artifact_uri}: {name} is {member.size} bytes, over the "
                        f"{wanted[name]}-byte limit"
                    )
                extracted = tar.extractfile(member)
                if extracted is not None:
                    found[name] = extracted.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # truncated or corrupt
        raise ModelArtifactError(f"{artifact_uri} is not a readable tar archive: {exc}") from exc
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ModelArtifactError(f"{artifact_uri} lacks {', '.join(missing)}")
    try:
        card = ModelCard.model_validate_json(found[MODEL_CARD_FILE])
    except ValidationError as exc:
        raise ModelArtifactError(
            f"{artifact_uri}: invalid {MODEL_CARD_FILE}: {describe_validation_error(exc)}"
        ) from None
    return found[MODEL_FILE], card


def read_test_split(store: ObjectStore, test_uri: str) -> TestSplit:
    """The test split: a format-1 version's split folder (every Parquet file under the prefix),
    or a format-2 channel manifest (its Parquet files in file-name order, rows shared by parts
    kept once from the first file, without the ``__row_hash`` column)."""
    if is_manifest_uri(test_uri):
        table = _read_manifest_split(store, test_uri)
    else:
        bucket, prefix = parse_s3_uri(test_uri)
        keys = [o.key for o in store.list(bucket, prefix) if o.key.endswith(".parquet")]
        if not keys:
            raise EvaluationError(f"the test split {test_uri} holds no parquet file")
        tables = [pq.read_table(pa.BufferReader(store.get_bytes(bucket, k))) for k in keys]
        table = pa.concat_tables(tables, promote_options="default")
    if table.num_rows == 0:
        raise EvaluationError(f"the test split {test_uri} has no rows")
    columns = {
        name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
    }
    return TestSplit(columns=columns, rows=table.num_rows)


def _read_manifest_split(store: ObjectStore, test_uri: str) -> pa.Table:
    manifest_bucket, manifest_key = parse_s3_uri(test_uri)
    try:
        prefix, keys = read_channel_manifest(
            store.get_bytes(manifest_bucket, manifest_key), source=test_uri
        )
    except (ChannelManifestError, ObjectNotFoundError) as exc:
        raise EvaluationError(f"the test split cannot be read: {exc}") from None
    bucket, key_prefix = parse_s3_uri(prefix)
    files = sorted(
        (k for k in keys if k.endswith(".parquet")), key=lambda k: (k.rsplit("/")[-1], k)
    )
    if not files:
        raise EvaluationError(f"the test split {test_uri} lists no parquet file")
    tables = []
    for key in files:
        try:
            tables.append(pq.read_table(pa.BufferReader(store.get_bytes(bucket, key_prefix + key))))
        except ObjectNotFoundError as exc:
            raise EvaluationError(f"the test split {test_uri} lists {key}: {exc}") from None
    hashed = [ROW_HASH in t.column_names for t in tables]
    if any(hashed) and not all(hashed):
        plain = [k for k, h in zip(files, hashed, strict=True) if not h]
        raise EvaluationError(
            f"the test split {test_uri} mixes part files with {ROW_HASH} and without ({plain})"
        )
    if all(hashed):
        tables = kept_once(tables)
    return pa.concat_tables(tables, promote_options="default")


def score_rows(
    model: ScoringModel, split: TestSplit, *, role: Literal["challenger", "champion"]
) -> ScoredRows:
    """The model's outputs on every row of ``split``, with the truth they are measured against
    (class codes for classification): what the gate's metrics and the report both read."""
    card = model.card
    missing = [c for c in [*(f.name for f in card.features), card.target] if c not in split.columns]
    if missing:
        raise EvaluationError(f"the test split lacks the columns {missing} the {role} needs")
    scores = model.score(split.columns)
    truth = split.columns[card.target]
    if card.task == "classification":
        assert scores.probabilities is not None
        return ScoredRows(
            truth=_class_codes(truth, card.classes or []),
            proba=scores.probabilities.astype(np.float64),
            classes=tuple(card.classes or []),
        )
    assert scores.values is not None
    return ScoredRows(
        truth=np.asarray(truth, dtype=np.float64), values=scores.values.astype(np.float64)
    )


def score_model(
    model: ScoringModel,
    split: TestSplit,
    *,
    metric: str,
    role: Literal["challenger", "champion"],
    version: int | None,
    sensitive: Sequence[str] = (),
    rows: ScoredRows | None = None,
) -> ModelScore:
    """Score ``model`` on ``split``; ``metric`` is the run's contract metric, which may differ
    from the one the model's card recorded (a contract can change its metric; both models
    must then be measured by the new one). ``rows``: its outputs, when already computed."""
    card = model.card
    scored = score_rows(model, split, role=role) if rows is None else rows
    missing_groups = [c for c in sensitive if c not in split.columns]
    if missing_groups:
        raise EvaluationError(f"the test split lacks the sensitive columns {missing_groups}")
    if card.task == "classification":
        assert scored.proba is not None
        codes, proba = scored.truth, scored.proba
        interval = bootstrap_interval(metric, codes, proba=proba)

        def report_of(rows: NDArray[np.bool_] | slice) -> dict[str, JsonValue]:
            return _as_json(classification_report(codes[rows], proba[rows], card.classes or []))

    else:
        assert scored.values is not None
        y, values = scored.truth, scored.values
        interval = bootstrap_interval(metric, y, pred=values)

        def report_of(rows: NDArray[np.bool_] | slice) -> dict[str, JsonValue]:
            return _as_json(regression_report(y[rows], values[rows]))

    report = report_of(slice(None))
    groups = {
        column: _group_reports(split.columns[column], metric, report_of) for column in sensitive
    }
    return ModelScore(
        role=role,
        version=version,
        metric_value=_metric(report, metric),
        interval=None if interval is None else MetricInterval(**vars(interval)),
        report=report,
        groups=groups,
    )


def _score_champion(
    state: PipelineState,
    challenger: ModelCard,
    split: TestSplit,
    *,
    store: ObjectStore,
    registry: ModelRegistry,
) -> ChampionOutcome:
    pointer = registry.live(state.dataset)
    if pointer is None:
        note = ChampionNote(version=None, scored=False, reason="no live model yet")
        return ChampionOutcome(None, note, None)
    try:
        card = ModelCard.model_validate_json(store.get_bytes(*parse_s3_uri(pointer.card_uri)))
        model = _load(
            store.get_bytes(*parse_s3_uri(pointer.model_uri)),
            card,
            pointer.sha256,
            what=f"live version {pointer.version}",
        )
    except Exception as exc:  # missing, unreadable, invalid or tampered: never blocks the run
        return ChampionOutcome(
            None, _unscored(pointer.version, f"cannot load the champion: {exc}"), None
        )
    change = diff_schema(card, challenger, champion_version=pointer.version)
    if change is not None and change.blocking:
        change = change.model_copy(update={"accepted": state.accept_schema_change})
        accepted = " (accepted by the contract)" if change.accepted else ""
        reason = f"its features changed: {change.describe()}{accepted}"
        return ChampionOutcome(None, _unscored(pointer.version, reason), change)
    try:
        rows = score_rows(model, split, role="champion")
        score = score_model(
            model,
            split,
            metric=state.metric,
            role="champion",
            version=pointer.version,
            sensitive=state.sensitive,
            rows=rows,
        )
    except (EvaluationError, ValueError) as exc:
        return ChampionOutcome(
            None, _unscored(pointer.version, f"cannot score the champion: {exc}"), change
        )
    added = ", ".join(f.name for f in change.added) if change else ""
    ignored = f" (it ignores the added features {added})" if added else ""
    note = ChampionNote(
        version=pointer.version, scored=True, reason=f"scored on the same test split{ignored}"
    )
    return ChampionOutcome(score, note, change, rows)


def _dataset_profile(
    store: ObjectStore, bucket: str, state: PipelineState
) -> tuple[DatasetSchema | None, dict[str, Any] | None]:
    """The dataset version's schema (column roles) and train profile, for the report; (None,
    None) when either is missing or unreadable: the report says so instead of failing the run."""
    prefix = layout.version_prefix(state.dataset, state.dataset_version)
    try:
        schema = DatasetSchema.model_validate_json(store.get_bytes(bucket, f"{prefix}dataset.json"))
        profile = json.loads(store.get_bytes(bucket, f"{prefix}profile.json"))
    except Exception:  # the adapter's not-found error is the SDK's; a bad file is as absent
        return None, None
    return (schema, profile) if isinstance(profile, dict) else (None, None)


def write_model_report(store: ObjectStore, bucket: str, prefix: str, report: ModelReport) -> str:
    """The page, each figure as its own SVG file and the JSON twin; returns the page's URI."""
    drawn = draw_figures(report)
    for name, svg in drawn.items():
        store.put_bytes(bucket, f"{prefix}figures/{name}.svg", svg.encode(), "image/svg+xml")
    store.put_bytes(
        bucket,
        prefix + layout.MODEL_REPORT_JSON,
        report.model_dump_json(indent=2).encode(),
        "application/json",
    )
    page_key = prefix + layout.MODEL_REPORT_PAGE
    store.put_bytes(bucket, page_key, report_html(report, drawn), "text/html; charset=utf-8")
    return s3_uri(bucket, page_key)


def _unscored(version: int, reason: str) -> ChampionNote:
    return ChampionNote(version=version, scored=False, reason=reason)


def _class_rows(score: ModelScore) -> dict[str, int]:
    """Test rows per class, every class the model knows (0 where the split has none)."""
    per_class = score.report.get("per_class")
    if not isinstance(per_class, dict):
        return {}
    rows: dict[str, int] = {}
    for label, figures in per_class.items():
        support = figures.get("support") if isinstance(figures, dict) else None
        if isinstance(support, int):
            rows[label] = support
    return rows


def _load(onnx_bytes: bytes, card: ModelCard, sha256: str, *, what: str) -> ScoringModel:
    try:
        return ScoringModel(onnx_bytes, card, expected_sha256=sha256)
    except ModelIntegrityError as exc:
        raise ModelArtifactError(f"{what}: {exc}") from exc


def _class_codes(truth: NDArray[Any], classes: list[str]) -> NDArray[np.intp]:
    """Each true label's index into ``classes``, matched as preprocessing matched them
    (normalised: the split holds ``yes`` where the classes read ``Yes``)."""
    index = {normalise_category(label): i for i, label in enumerate(classes)}
    labels = [normalise_category(v) for v in truth]
    unknown = sorted({v for v in labels if v not in index})
    if unknown:
        raise EvaluationError(
            f"the test split has labels {unknown[:5]} that are not among the model's classes "
            f"{classes}"
        )
    return np.fromiter((index[v] for v in labels), dtype=np.intp, count=len(labels))


def _group_reports(
    values: NDArray[Any],
    metric: str,
    report_of: Callable[[NDArray[np.bool_]], dict[str, JsonValue]],
) -> dict[str, dict[str, JsonValue]]:
    """Per group of a sensitive column: its size, the contract metric and the headline figures,
    so a model that is good on average and bad for one group is visible in the report."""
    keys = np.array(["(missing)" if v is None else str(v) for v in values], dtype=object)
    groups: dict[str, dict[str, JsonValue]] = {}
    labels, counts = np.unique(keys, return_counts=True)
    for label, count in sorted(zip(labels, counts, strict=True), key=lambda lc: -lc[1])[
        :MAX_GROUPS
    ]:
        entry: dict[str, JsonValue] = {"rows": int(count)}
        if count >= MIN_GROUP_ROWS:
            report = report_of(keys == label)
            entry.update({k: v for k, v in report.items() if k in _HEADLINES or k == metric})
        groups[str(label)] = entry
    return groups


_HEADLINES = ("accuracy", "f1_macro", "roc_auc", "rmse", "mae", "r2")


def _metric(report: Mapping[str, JsonValue], metric: str) -> float | None:
    value = report.get(metric)
    return float(value) if isinstance(value, int | float) else None


def _as_json(report: Mapping[str, object]) -> dict[str, JsonValue]:
    loaded: dict[str, JsonValue] = json.loads(json.dumps(report))
    return loaded


def _summary(card: ModelCard, score: ModelScore) -> dict[str, JsonValue]:
    summary: dict[str, JsonValue] = {
        "chosen": card.chosen,
        "test_metric": score.metric_value,
        "features": len(card.features),
        "onnx_bytes": card.onnx.bytes,
    }
    if card.parity_fallback:  # promote and reject hand it on to the run's outcome
        summary["parity_fallback"] = card.parity_fallback
    return summary
