"""A stored dataset version read back whole, for the tools that want one table per split
(benchmarks, tests, a person looking at the data): a format-2 version's parts in file-name
order, a row several parts hold kept once (the first file's copy, as training keeps it), or a
format-1 version's one file per split."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from functions.shared import layout
from functions.shared.manifest import Manifest
from functions.shared.row_tables import kept_once
from functions.shared.runs import manifest_key
from functions.shared.storage import ObjectStore

SPLITS = ("train", "validation", "test")


def read_manifest(store: ObjectStore, bucket: str, dataset: str, version: str) -> Manifest:
    return Manifest.model_validate_json(store.get_bytes(bucket, manifest_key(dataset, version)))


def split_table(store: ObjectStore, bucket: str, manifest: Manifest, split: str) -> pa.Table:
    """One split of a version, rows shared by parts kept once, without the row hash."""
    if manifest.format == 1:
        key = layout.split_key(manifest.dataset, manifest.dataset_version, split)
        return pq.read_table(io.BytesIO(store.get_bytes(bucket, key)))
    keys = sorted(
        (part.split_keys[split] for part in manifest.parts if split in part.split_keys),
        key=lambda key: key.rsplit("/", 1)[-1],
    )
    tables = [pq.read_table(io.BytesIO(store.get_bytes(bucket, key))) for key in keys]
    if not tables:
        raise ValueError(f"version {manifest.dataset_version} has no {split} rows")
    return pa.concat_tables(kept_once(tables))


def split_frame(store: ObjectStore, bucket: str, manifest: Manifest, split: str) -> pd.DataFrame:
    frame: pd.DataFrame = split_table(store, bucket, manifest, split).to_pandas()
    return frame


def materialise(store: ObjectStore, bucket: str, manifest: Manifest, target: Path) -> Path:
    """The version under ``target`` as one folder per split (``<split>/part-0.parquet``, the
    schema in ``dataset.json`` and ``train/dataset.json``): the layout SageMaker gives a
    format-1 version's channels, which every reader takes."""
    schema = store.get_bytes(bucket, manifest.schema_key)
    for split in SPLITS:
        folder = target / split
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(split_table(store, bucket, manifest, split), folder / "part-0.parquet")
    (target / "dataset.json").write_bytes(schema)
    (target / "train" / "dataset.json").write_bytes(schema)
    (target / "profile.json").write_bytes(store.get_bytes(bucket, manifest.profile_key))
    (target / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return target
