"""What a pipeline run is over, and its input: shared by preprocess (a run per upload) and the
retrain function (a run per guarded alarm), without pandas, so the retrain function stays small.

A dataset's *current data* is every CSV or Parquet object under ``<dataset>/data/``; with the
contract's digest it names a dataset version (``dataset_version_id``), which preprocess builds
once and marks complete by writing its manifest last. ``run_input`` turns a complete version
and the contract into the state machine's input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from functions.shared import layout
from functions.shared.contract import Contract, parse_contract
from functions.shared.manifest import Manifest
from functions.shared.orchestration import RunInput, StoppingCondition
from functions.shared.storage import ObjectInfo, ObjectStore, s3_uri


def data_sources(store: ObjectStore, raw_bucket: str, dataset: str) -> list[ObjectInfo]:
    """The dataset's current data files, sorted by key."""
    return [
        o
        for o in store.list(raw_bucket, layout.data_prefix(dataset))
        if layout.parse_data_key(o.key) is not None
    ]


def dataset_version_id(contract_sha: str, sources: list[ObjectInfo]) -> str:
    """Content address of a dataset version: the contract plus exactly which objects it read."""
    identity = json.dumps(
        [contract_sha, [[s.key, s.etag, s.version_id or ""] for s in sources]], sort_keys=True
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def manifest_key(dataset: str, dataset_version: str) -> str:
    """Written last by preprocess: a version without it is incomplete."""
    return f"{layout.version_prefix(dataset, dataset_version)}manifest.json"


@dataclass(frozen=True)
class CurrentData:
    """A dataset's current data as the retrain function sees it: which version it makes, and
    that version's manifest when preprocess has completed it (``None`` when not: the upload is
    still being preprocessed, or it was rejected)."""

    contract: Contract
    dataset_version: str
    sources: int
    manifest: Manifest | None


def current_data(
    store: ObjectStore, raw_bucket: str, artifacts_bucket: str, dataset: str
) -> CurrentData | None:
    """``None`` when the dataset has no contract or no data files. A contract that does not
    parse raises ``ContractError`` (preprocess rejects such uploads with a report)."""
    key = layout.contract_key(dataset)
    if store.head(raw_bucket, key) is None:
        return None
    raw = store.get_bytes(raw_bucket, key)
    contract = parse_contract(raw, source=key)
    sources = data_sources(store, raw_bucket, dataset)
    if not sources:
        return None
    version = dataset_version_id(hashlib.sha256(raw).hexdigest(), sources)
    found = manifest_key(dataset, version)
    manifest = (
        Manifest.model_validate_json(store.get_bytes(artifacts_bucket, found))
        if store.head(artifacts_bucket, found) is not None
        else None
    )
    return CurrentData(contract, version, len(sources), manifest)


def training_job_name(run_name: str) -> str:
    """SageMaker job names allow letters, digits and hyphens, 63 at most; run names may hold
    underscores and reach 80. The digest at the end keeps it unique."""
    return run_name.replace("_", "-")[-63:].lstrip("-")


def run_input(
    run_name: str, manifest: Manifest, contract: Contract, artifacts_bucket: str
) -> RunInput:
    """The state machine's input for a run named ``run_name`` over a complete dataset version."""
    dataset = manifest.dataset
    training = contract.training
    uris = _channel_uris(manifest, artifacts_bucket)
    return RunInput(
        run_name=run_name,
        training_job_name=training_job_name(run_name),
        dataset=dataset,
        dataset_version=manifest.dataset_version,
        rows=manifest.rows.accepted,
        artifacts_bucket=artifacts_bucket,
        train_uri=uris["train"],
        validation_uri=uris["validation"],
        test_uri=uris["test"],
        data_type="S3Prefix" if manifest.format == 1 else "ManifestFile",
        output_uri=s3_uri(artifacts_bucket, layout.models_prefix(dataset)),
        checkpoint_uri=s3_uri(artifacts_bucket, layout.checkpoint_prefix(dataset, run_name)),
        task=contract.task,
        metric=contract.metric,
        threshold=contract.threshold,
        tolerance=contract.tolerance,
        sensitive=list(contract.sensitive),
        fairness_threshold=contract.fairness_threshold,
        accept_schema_change=contract.accept_schema_change,
        instance_type=training.instance_type,
        spot=training.spot,
        stopping_condition=StoppingCondition(
            MaxRuntimeInSeconds=training.max_runtime_seconds,
            MaxWaitTimeInSeconds=(
                training.max_wait_seconds or 2 * training.max_runtime_seconds
                if training.spot
                else None
            ),
        ),
        hyperparameters={
            **{k: _hp(v) for k, v in training.hyperparameters.items()},
            "budget_seconds": _hp(training.budget_seconds),
            "refit": _hp(training.refit),
        },
    )


def _channel_uris(manifest: Manifest, bucket: str) -> dict[str, str]:
    """Each split's channel: format 1, the folder of its one Parquet file (S3Prefix); format 2,
    its channel manifest (ManifestFile), which lists the parts' files of that split."""
    splits = ("train", "validation", "test")
    if manifest.format == 1:
        return {split: _s3_prefix(bucket, manifest.split_keys[split]) for split in splits}
    if manifest.format == 2:
        return {split: s3_uri(bucket, manifest.channels[split]) for split in splits}
    raise ValueError(
        f"dataset version {manifest.dataset}/{manifest.dataset_version} has manifest format "
        f"{manifest.format}, which this code cannot read"
    )


def _s3_prefix(bucket: str, split_key: str) -> str:
    return s3_uri(bucket, f"{split_key.rsplit('/', 1)[0]}/")


def _hp(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)
