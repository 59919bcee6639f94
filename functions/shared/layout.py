"""Where things live in the buckets: the product's key layout, in one place.

The raw bucket is the user's: ``<dataset>/contract.json`` declares a dataset and objects under
``<dataset>/data/`` are its data. Everything the system writes goes to the artifacts bucket, so no
output can ever trigger another run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

CONTRACT_FILE = "contract.json"
DATA_PREFIX = "data/"
BATCH_PREFIX = "batch/"
DATA_SUFFIXES = (".csv", ".parquet")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Spot checkpoints of every dataset: no dataset name starts with "_", so no dataset's prefix
CHECKPOINTS_PREFIX = "_checkpoints/"


@dataclass(frozen=True)
class DataKey:
    """A raw-bucket key that names one data file of a dataset."""

    dataset: str
    key: str


def parse_data_key(key: str) -> DataKey | None:
    """Return the dataset a key belongs to, or None when the key is not a data file.

    Folders, keys outside ``<dataset>/data/``, unsupported file types and dataset names that are
    not plain identifiers (``..``, slashes, URL escapes) are not data files.
    """
    return _file_under(key, DATA_PREFIX)


def parse_batch_key(key: str) -> DataKey | None:
    """The same for files to score with the live model: ``<dataset>/batch/<name>.csv``."""
    return _file_under(key, BATCH_PREFIX)


def _file_under(key: str, prefix: str) -> DataKey | None:
    dataset, sep, rest = key.partition("/")
    if not sep or not DATASET_NAME.match(dataset) or not rest.startswith(prefix):
        return None
    name = rest[len(prefix) :]
    if not name or name.endswith("/") or not name.lower().endswith(DATA_SUFFIXES):
        return None
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    return DataKey(dataset=dataset, key=key)


def contract_key(dataset: str) -> str:
    return f"{dataset}/{CONTRACT_FILE}"


def data_prefix(dataset: str) -> str:
    return f"{dataset}/{DATA_PREFIX}"


def version_prefix(dataset: str, dataset_version: str) -> str:
    """Artifacts-bucket prefix of one dataset version (parquet splits, profile, manifest)."""
    return f"{dataset}/versions/{dataset_version}/"


def split_key(dataset: str, dataset_version: str, split: str) -> str:
    return f"{version_prefix(dataset, dataset_version)}{split}/part-0.parquet"


def parts_prefix(dataset: str) -> str:
    """Artifacts-bucket prefix of a dataset's parts: one per accepted data object, built once
    (docs/decisions.md, "Per-file parts")."""
    return f"{dataset}/parts/"


def part_prefix(dataset: str, part_id: str) -> str:
    return f"{parts_prefix(dataset)}{part_id}/"


def part_split_key(dataset: str, part_id: str, split: str) -> str:
    """A part's rows of one split; the file name is unique across parts, so a channel that
    flattens its objects' folders cannot collide."""
    return f"{part_prefix(dataset, part_id)}{split}-{part_id}.parquet"


def part_index_key(dataset: str, part_id: str) -> str:
    """The part's sorted row hashes (NPY, uint64): global deduplication reads only these."""
    return f"{part_prefix(dataset, part_id)}rows.u64.npy"


def part_record_key(dataset: str, part_id: str) -> str:
    """Written last: a part without it is incomplete and is built again."""
    return f"{part_prefix(dataset, part_id)}part.json"


def part_rejected_key(dataset: str, part_id: str) -> str:
    """Instead of the part: the object was refused, and is never read again."""
    return f"{part_prefix(dataset, part_id)}rejected.json"


def roles_key(dataset: str, object_id: str) -> str:
    """What one data object's first rows say each column is (the pin's candidates)."""
    return f"{parts_prefix(dataset)}roles/{object_id}.json"


def channel_key(dataset: str, dataset_version: str, split: str) -> str:
    """A version's split as a SageMaker ManifestFile: its parts' files of that split."""
    return f"{version_prefix(dataset, dataset_version)}channels/{split}.manifest"


def build_plan_key(dataset: str, run_name: str) -> str:
    """What a processing job past one Lambda builds: the listing, the contract, the trigger;
    named by the run, so a redelivered event writes the same plan."""
    return f"{parts_prefix(dataset)}plans/{run_name}.json"


def build_report_prefix(dataset: str, run_name: str) -> str:
    """Where a processing job's instances leave their reports (``<host>.json``)."""
    return f"{parts_prefix(dataset)}builds/{run_name}/"


def version_state_key(dataset: str, dataset_version: str) -> str:
    """A version's mergeable totals, the base the next upload adds its part to; written before
    the dataset rules run (a refused version is still a base), so beside the versions."""
    return f"{parts_prefix(dataset)}states/{dataset_version}.json"


def latest_state_key(dataset: str) -> str:
    """Names the last version whose state was written (a hint: any valid state is a base)."""
    return f"{parts_prefix(dataset)}latest.json"


def rejected_key(dataset: str, run_name: str) -> str:
    return f"{dataset}/rejected/{run_name}.json"


def models_prefix(dataset: str) -> str:
    return f"{dataset}/models/"


def model_prefix(dataset: str, training_job_name: str) -> str:
    """Where one trained model's files live: SageMaker's ``output/model.tar.gz`` and, next to
    it, the ``model.onnx``, ``model_card.json`` and ``evaluation.json`` that evaluate writes."""
    return f"{models_prefix(dataset)}{training_job_name}/"


MODEL_REPORT_PAGE = "index.html"
MODEL_REPORT_JSON = "report.json"


def model_report_prefix(dataset: str, training_job_name: str) -> str:
    """Where one model version's report lives, beside its model: ``index.html`` (the page),
    ``report.json`` (its numbers) and ``figures/<name>.svg`` (each figure on its own)."""
    return f"{model_prefix(dataset, training_job_name)}report/"


def model_report_page_of(model_key: str) -> str:
    """The report page beside a model file: ``churn/models/<job>/model.onnx`` ->
    ``churn/models/<job>/report/index.html`` (readers that hold a registry record)."""
    return f"{model_key.rsplit('/', 1)[0]}/report/{MODEL_REPORT_PAGE}"


def predictions_prefix(dataset: str, batch_key: str, model_version: int) -> str:
    """Where the predictions for one batch file land (artifacts bucket): per source file and per
    model version, so re-scoring with a new model never overwrites earlier results."""
    name = batch_key.split("/", 2)[2]
    return f"{dataset}/predictions/{name}/v{model_version}/"


def predictions_error_key(dataset: str, batch_key: str) -> str:
    """The report of a batch file that was not scored (the model version is not known then)."""
    return f"{dataset}/predictions/{batch_key.split('/', 2)[2]}/_error.json"


def batch_job_prefix(dataset: str, batch_key: str, job_name: str) -> str:
    """A processing job's request for one batch file past the Lambda (functions/batch/job.py):
    beside the file's predictions, named by the job, so a redelivered event writes the same."""
    return f"{dataset}/predictions/{batch_key.split('/', 2)[2]}/_jobs/{job_name}/"


CAPTURE_PREFIX_TEMPLATE = "{dataset}/capture/"
# Captured requests and feedback are written with this object tag, and the artifacts bucket's
# lifecycle rule expires what carries it (infra/aws/storage.py): their keys are under each
# dataset's prefix, and S3 lifecycle prefixes are literal, so a tag is what one rule can match.
TELEMETRY_TAGS = {"sluice:retention": "telemetry"}


def capture_prefix(dataset: str, template: str = CAPTURE_PREFIX_TEMPLATE) -> str:
    """Where one dataset's captured prediction requests live (artifacts bucket):
    ``churn/capture/`` by default (functions/inference/capture.py writes them)."""
    if not DATASET_NAME.match(dataset):
        raise ValueError(f"not a dataset name: {dataset!r}")
    return template.format(dataset=dataset)


def capture_hour_prefix(
    dataset: str, moment: datetime, template: str = CAPTURE_PREFIX_TEMPLATE
) -> str:
    """The partition of one UTC hour, for readers: ``churn/capture/dt=2026-11-22/hr=10/``."""
    utc = moment.astimezone(UTC)
    return f"{capture_prefix(dataset, template)}dt={utc:%Y-%m-%d}/hr={utc:%H}/"


def feedback_prefix(dataset: str) -> str:
    """Where one dataset's feedback (true labels or values for earlier predictions) lives
    (artifacts bucket): ``churn/feedback/`` (functions/inference/feedback.py writes it)."""
    if not DATASET_NAME.match(dataset):
        raise ValueError(f"not a dataset name: {dataset!r}")
    return f"{dataset}/feedback/"


def feedback_hour_prefix(dataset: str, moment: datetime) -> str:
    """The partition of one UTC hour, for readers: ``churn/feedback/dt=2026-11-22/hr=10/``."""
    utc = moment.astimezone(UTC)
    return f"{feedback_prefix(dataset)}dt={utc:%Y-%m-%d}/hr={utc:%H}/"


def quality_prefix(dataset: str) -> str:
    """Where the drift job writes its live-quality reports (functions/drift/quality.py)."""
    return f"{dataset}/quality/"


def checkpoint_prefix(dataset: str, run_name: str) -> str:
    """A run's SageMaker spot checkpoints: under one top-level prefix (not ``<dataset>/``) so
    one S3 lifecycle rule, whose prefix is literal, expires every dataset's."""
    return f"{CHECKPOINTS_PREFIX}{dataset}/{run_name}/"
