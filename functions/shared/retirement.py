"""Retiring a dataset, and purging a retired one: the operator's ``sluice retire``.

Retiring is one registry write (``ModelRegistry.retire_dataset``): from then on the API answers
410, the drift job and the retraining alarms leave the dataset out, and an upload is refused with
a report naming the retirement. Nothing is deleted.

A purge deletes, for good, exactly:

- every object version and delete marker under ``<dataset>/`` in the raw bucket (the contract,
  the data files, batch inputs);
- every object version under ``<dataset>/`` in the artifacts bucket (dataset versions and parts,
  models and their cards and reports, rejection reports, batch predictions, capture, feedback,
  drift and quality reports), and its training checkpoints under ``_checkpoints/<dataset>/``;
- every registry record of the dataset (versions, live pointer, counter, runs, audit trail,
  retirement, retraining guard state and decisions), leaving one ``dataset_purged`` audit entry.

Objects go first and the registry last, so a purge that fails midway leaves the dataset retired
(still refused everywhere) and can simply be run again.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from functions.shared.layout import CHECKPOINTS_PREFIX
from functions.shared.registry import InvalidTransitionError, ModelRegistry
from functions.shared.storage import ObjectStore


class PurgeReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset: str
    raw_objects: int  # object versions and delete markers deleted from the raw bucket
    artifact_objects: int  # from the artifacts bucket
    registry_records: int


def dataset_prefix(dataset: str) -> str:
    """``churn/``: the trailing slash keeps ``churn2/`` out of a purge of ``churn``."""
    return f"{dataset}/"


def purge_dataset(
    store: ObjectStore,
    registry: ModelRegistry,
    *,
    dataset: str,
    raw_bucket: str,
    artifacts_bucket: str,
    actor: str,
    reason: str,
) -> PurgeReport:
    """Delete everything of a retired dataset (see the module's docstring for the scope).

    Raises
    ------
    InvalidTransitionError
        The dataset is not retired: a dataset in service is never purged.
    """
    if registry.retirement(dataset) is None:
        raise InvalidTransitionError(
            f"dataset '{dataset}' is not retired; retire it before purging it"
        )
    raw = store.purge_prefix(raw_bucket, dataset_prefix(dataset))
    artifacts = store.purge_prefix(artifacts_bucket, dataset_prefix(dataset))
    artifacts += store.purge_prefix(artifacts_bucket, f"{CHECKPOINTS_PREFIX}{dataset}/")
    records = registry.purge(
        dataset,
        actor=actor,
        reason=f"{reason}; {raw} raw and {artifacts} artifact object versions deleted",
    )
    return PurgeReport(
        dataset=dataset, raw_objects=raw, artifact_objects=artifacts, registry_records=records
    )
