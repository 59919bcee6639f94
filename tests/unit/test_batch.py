"""Batch predictions: a file under ``<dataset>/batch/`` scored by the live model, in chunks."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from functions.batch.logic import ROW_COLUMN, score_batch
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, publish_live

RAW = "raw-bucket"


class World:
    def __init__(self) -> None:
        self.store = InMemoryObjectStore()
        self.registry = InMemoryRegistry()

    def publish(self, model: TrainedModel, *, onnx: bytes | None = None) -> int:
        return publish_live(self.store, self.registry, model, onnx=onnx)

    def score(self, key: str, chunk_rows: int = 50_000) -> dict[str, object]:
        outcome = score_batch(
            self.store,
            self.registry,
            raw_bucket=RAW,
            artifacts_bucket=ARTIFACTS,
            key=key,
            chunk_rows=chunk_rows,
        )
        return json.loads(outcome.model_dump_json())  # type: ignore[no-any-return]

    def predictions(self, prefix: str) -> pd.DataFrame:
        parts = sorted(k for k in self.store.keys(ARTIFACTS, prefix) if k.endswith(".parquet"))
        return pd.concat(
            [
                pq.read_table(io.BytesIO(self.store.get_bytes(ARTIFACTS, k))).to_pandas()
                for k in parts
            ],
            ignore_index=True,
        )


def _features(model: TrainedModel, rows: int) -> pd.DataFrame:
    frame = model.split("test").head(rows)
    return frame[[f.name for f in model.card.features]]


def test_a_csv_is_scored_in_chunks_exactly_as_the_model_scores_it(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given the multiclass model live and a CSV of 130 rows dropped under batch/
    model = trained_models["multiclass"]
    world = World()
    version = world.publish(model)
    frame = _features(model, 130)
    raw = frame.to_csv(index=False).encode()
    dataset = model.card.dataset
    world.store.put(RAW, f"{dataset}/batch/may.csv", raw)

    # When it is scored 50 rows at a time
    outcome = world.score(f"{dataset}/batch/may.csv", chunk_rows=50)

    # Then three parts and a manifest hold one prediction per row, in file order
    assert outcome["status"] == "scored" and outcome["rows"] == 130
    assert outcome["model_version"] == version and len(outcome["parts"]) == 3  # type: ignore[arg-type]
    prefix = f"{dataset}/predictions/may.csv/v{version}/"
    manifest = json.loads(world.store.get_bytes(ARTIFACTS, prefix + "_manifest.json"))
    assert manifest["rows"] == 130 and manifest["model_sha256"] == model.card.onnx.sha256
    written = world.predictions(prefix)
    assert written[ROW_COLUMN].tolist() == list(range(130))
    # and they are the model's own answers for those rows
    from functions.shared.scoring import ScoringModel

    direct = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256).score(
        {c: frame[c].to_numpy() for c in frame.columns}
    )
    assert written["label"].tolist() == direct.labels
    assert direct.probabilities is not None
    for i, name in enumerate(model.card.classes or []):
        assert np.allclose(written[f"p_{name}"], direct.probabilities[:, i], atol=1e-6)
    # and the raw file is untouched
    assert world.store.get_bytes(RAW, f"{dataset}/batch/may.csv") == raw


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_the_file_is_read_from_the_store_as_it_is_scored_never_downloaded(
    trained_models: dict[str, TrainedModel], suffix: str
) -> None:
    # Given a live model and a 130-row file under batch/
    model = trained_models["binary"]
    world = World()
    world.publish(model)
    frame = _features(model, 130)
    buffer = io.BytesIO()
    frame.to_csv(buffer, index=False) if suffix == "csv" else frame.to_parquet(buffer)
    key = f"{model.card.dataset}/batch/stream.{suffix}"
    world.store.put(RAW, key, buffer.getvalue())

    # When it is scored 50 rows at a time
    assert world.score(key, chunk_rows=50)["rows"] == 130

    # Then it was never downloaded (a CSV is read as a stream, Parquet by ranged reads), and
    # every part was staged, then committed
    assert world.store.downloads == []
    assert world.store.streams == ([(RAW, key)] * 2 if suffix == "csv" else [])
    assert world.store.staged == {}
    assert len([k for k in world.store.keys(ARTIFACTS) if k.endswith(".parquet")]) == 3


def test_a_parquet_file_and_a_regression_model(trained_models: dict[str, TrainedModel]) -> None:
    model = trained_models["regression"]
    world = World()
    version = world.publish(model)
    frame = _features(model, 40)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    dataset = model.card.dataset
    world.store.put(RAW, f"{dataset}/batch/prices.parquet", buffer.getvalue())

    outcome = world.score(f"{dataset}/batch/prices.parquet")

    assert outcome["status"] == "scored" and outcome["rows"] == 40
    written = world.predictions(f"{dataset}/predictions/prices.parquet/v{version}/")
    assert np.isfinite(written["value"]).all() and len(written) == 40


def test_the_contract_id_column_is_carried_into_the_predictions(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["binary"]
    world = World()
    version = world.publish(model)
    dataset = model.card.dataset
    contract = {
        "target": model.card.target,
        "task": "classification",
        "metric": model.card.metric,
        "threshold": 0.5,
        "id_column": "customer",
    }
    world.store.put(RAW, f"{dataset}/contract.json", json.dumps(contract).encode())
    frame = _features(model, 5).assign(customer=[f"C{i}" for i in range(5)])
    world.store.put(RAW, f"{dataset}/batch/ids.csv", frame.to_csv(index=False).encode())

    assert world.score(f"{dataset}/batch/ids.csv")["status"] == "scored"

    written = world.predictions(f"{dataset}/predictions/ids.csv/v{version}/")
    assert written["customer"].tolist() == [f"C{i}" for i in range(5)]


def _contract(model: TrainedModel, **extra: object) -> bytes:
    return json.dumps(
        {
            "target": model.card.target,
            "task": model.card.task,
            "metric": model.card.metric,
            "threshold": 0.5,
            **extra,
        }
    ).encode()


def test_predictions_join_back_to_the_input_by_id_with_passthrough_columns_as_written(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given the multiclass model live, a contract with an id column and a passthrough list in the
    # user's spellings, and a CSV whose rows are shuffled, some with missing feature values
    model = trained_models["multiclass"]
    world = World()
    version = world.publish(model)
    dataset = model.card.dataset
    world.store.put(
        RAW,
        f"{dataset}/contract.json",
        _contract(model, id_column="customer_id", passthrough=["Nom du client", "zip", "region"]),
    )
    features = [f.name for f in model.card.features]
    frame = model.split("test").head(40).sample(frac=1.0, random_state=3).reset_index(drop=True)
    frame = frame[[*features, "customer_id", "region"]].assign(
        **{
            "Nom du client": [f"Zoë {i}" for i in range(40)],
            "zip": [None if i % 9 == 0 else f"{i:05d}" for i in range(40)],  # "00007" stays text
        }
    )
    frame.loc[[2, 5], "num_0"] = np.nan
    frame.loc[[3], "cat_1"] = None
    world.store.put(RAW, f"{dataset}/batch/join.csv", frame.to_csv(index=False).encode())

    # When it is scored 7 rows at a time
    assert world.score(f"{dataset}/batch/join.csv", chunk_rows=7)["status"] == "scored"

    # Then the output carries row, the id and the passthrough columns, then the predictions
    written = world.predictions(f"{dataset}/predictions/join.csv/v{version}/")
    classes = [f"p_{name}" for name in model.card.classes or []]
    assert list(written.columns) == [
        ROW_COLUMN, "customer_id", "Nom du client", "zip", "region", "label", *classes
    ]  # fmt: skip
    # and joined on the id, every input row meets exactly its own prediction
    from functions.shared.scoring import ScoringModel

    scoring = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256)
    direct = scoring.score({c: frame[c].to_numpy() for c in features})
    joined = frame.assign(expected=direct.labels).merge(
        written[["customer_id", "label"]], on="customer_id", how="outer", validate="one_to_one"
    )
    assert len(joined) == 40 and joined["label"].notna().all()
    assert joined["label"].tolist() == joined["expected"].tolist()
    assert written[ROW_COLUMN].tolist() == list(range(40))
    assert written["customer_id"].tolist() == frame["customer_id"].tolist()
    # and the passthrough columns are the input's text, unchanged; missing stays missing
    assert written["Nom du client"].tolist() == frame["Nom du client"].tolist()
    assert written["zip"].tolist() == frame["zip"].tolist()
    assert written["zip"].isna().tolist() == [i % 9 == 0 for i in range(40)]
    assert written["zip"][7] == "00007"
    assert written["region"].tolist() == frame["region"].tolist()


def test_parquet_passthrough_columns_keep_their_types_and_nulls(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["regression"]
    world = World()
    version = world.publish(model)
    dataset = model.card.dataset
    world.store.put(
        RAW, f"{dataset}/contract.json", _contract(model, id_column="id", passthrough=["when"])
    )
    frame = _features(model, 6).assign(
        id=pa.array([10, 11, 12, 13, 14, 15], pa.int64()).to_pandas(),
        when=pd.to_datetime(["2026-01-01", None, "2026-01-03", "2026-01-04", None, "2026-01-06"]),
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    world.store.put(RAW, f"{dataset}/batch/typed.parquet", buffer.getvalue())

    assert world.score(f"{dataset}/batch/typed.parquet")["status"] == "scored"

    parts = world.store.keys(ARTIFACTS, f"{dataset}/predictions/typed.parquet/v{version}/")
    [part] = [k for k in parts if k.endswith(".parquet")]
    table = pq.read_table(io.BytesIO(world.store.get_bytes(ARTIFACTS, part)))
    assert table.column_names == [ROW_COLUMN, "id", "when", "value"]
    assert table.schema.field("id").type == pa.int64()
    assert table.column("id").to_pylist() == [10, 11, 12, 13, 14, 15]
    assert pa.types.is_timestamp(table.schema.field("when").type)
    assert table.column("when").null_count == 2


def test_columns_the_batch_does_not_use_may_hold_anything(
    trained_models: dict[str, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A column outside the features and the carried ones that reads as numbers in the first
    # block and as text later must not make the file unreadable
    from functions.batch import logic

    monkeypatch.setattr(logic, "CSV_BLOCK_BYTES", 4096)
    model = trained_models["binary"]
    world = World()
    version = world.publish(model)
    dataset = model.card.dataset
    frame = _features(model, 300).assign(notes=["12"] * 299 + ["call back on Monday"])
    world.store.put(RAW, f"{dataset}/batch/notes.csv", frame.to_csv(index=False).encode())

    outcome = world.score(f"{dataset}/batch/notes.csv")

    assert outcome["status"] == "scored" and outcome["rows"] == 300, outcome
    written = world.predictions(f"{dataset}/predictions/notes.csv/v{version}/")
    assert "notes" not in written.columns


@pytest.mark.parametrize(
    ("contract", "drop", "message"),
    [
        (
            {"id_column": "customer_id", "passthrough": ["segment"]},
            None,
            "bad.csv: the contract's passthrough columns ['segment'] are not in the file; "
            "the file has ['num_0',",
        ),
        (
            {"id_column": "customer_id"},
            "customer_id",
            "bad.csv: the contract's id_column 'customer_id' is not in the file, so its "
            "predictions could not be joined back; the file has ['num_0',",
        ),
        (
            {"passthrough": ["label"]},
            None,
            "contract.json: passthrough column 'label' has the name of a prediction column; the "
            "predictions hold ['row', 'label', 'p_bronze', 'p_gold', 'p_silver']",
        ),
        (
            {"passthrough": ["p_gold"]},
            None,
            "passthrough column 'p_gold' has the name of a prediction column",
        ),
        ({"id_column": "row"}, None, "contract.json: id_column 'row' has the name of a prediction"),
        (
            {"passthrough": "region"},
            None,
            "the dataset's contract is invalid, so nothing is scored: "
            "multiclass/contract.json: passthrough: Input should be a valid list",
        ),
    ],
    ids=["unknown passthrough", "id absent", "label", "probability", "id is row", "invalid"],
)
def test_carried_columns_that_cannot_be_carried_reject_the_file_naming_them(
    trained_models: dict[str, TrainedModel],
    contract: dict[str, object],
    drop: str | None,
    message: str,
) -> None:
    model = trained_models["multiclass"]
    world = World()
    world.publish(model)
    dataset = model.card.dataset
    world.store.put(RAW, f"{dataset}/contract.json", _contract(model, **contract))
    features = [f.name for f in model.card.features]
    frame = model.split("test").head(10)[[*features, "customer_id", "label", "region"]]
    if drop:
        frame = frame.drop(columns=[drop])
    world.store.put(RAW, f"{dataset}/batch/bad.csv", frame.to_csv(index=False).encode())

    outcome = world.score(f"{dataset}/batch/bad.csv")

    assert outcome["status"] == "rejected", outcome
    assert message in str(outcome["reason"]), outcome["reason"]
    assert not [k for k in world.store.keys(ARTIFACTS, "") if k.endswith(".parquet")]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no live model", "has no live model"),
        ("missing column", "the model needs the columns"),
        ("text in a numeric column", "cannot read the file"),
        ("empty file", "no rows"),
        ("tampered model", "is refused"),
    ],
)
def test_a_file_that_cannot_be_scored_is_rejected_with_the_reason(
    trained_models: dict[str, TrainedModel], case: str, message: str
) -> None:
    model = trained_models["binary"]
    world = World()
    if case != "no live model":
        world.publish(model, onnx=model.onnx + b"\x00" if case == "tampered model" else None)
    frame = _features(model, 10)
    numeric = next(f.name for f in model.card.features if f.kind.value == "numeric")
    if case == "missing column":
        frame = frame.drop(columns=[numeric])
    if case == "text in a numeric column":
        frame[numeric] = frame[numeric].astype(object)
        frame.loc[3, numeric] = "twelve"
    if case == "empty file":
        frame = frame.head(0)
    dataset = model.card.dataset
    world.store.put(RAW, f"{dataset}/batch/bad.csv", frame.to_csv(index=False).encode())

    outcome = world.score(f"{dataset}/batch/bad.csv")

    assert outcome["status"] == "rejected", outcome
    assert message in str(outcome["reason"])
    error = json.loads(
        world.store.get_bytes(ARTIFACTS, f"{dataset}/predictions/bad.csv/_error.json")
    )
    assert error["reason"] == outcome["reason"]
    assert not [k for k in world.store.keys(ARTIFACTS, "") if k.endswith(".parquet")]


@pytest.mark.parametrize(
    "key", ["churn/data/x.csv", "churn/batch/", "../batch/x.csv", "churn/batch/x.txt"]
)
def test_keys_that_are_not_batch_files_are_ignored(key: str) -> None:
    world = World()
    assert world.score(key)["status"] == "ignored"


def test_a_file_over_the_size_cap_is_refused_before_anything_is_downloaded(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a live model and a batch file bigger than the cap (the function's /tmp holds it whole)
    model = trained_models["multiclass"]
    world = World()
    world.publish(model)
    dataset = model.card.dataset
    raw = _features(model, 20).to_csv(index=False).encode()
    world.store.put(RAW, f"{dataset}/batch/huge.csv", raw)

    # When it is scored under a cap smaller than the file
    outcome = score_batch(
        world.store,
        world.registry,
        raw_bucket=RAW,
        artifacts_bucket=ARTIFACTS,
        key=f"{dataset}/batch/huge.csv",
        max_file_bytes=len(raw) - 1,
    )

    # Then it is refused with the size and the cap named, and nothing is predicted
    assert outcome.status == "rejected"
    assert f"{len(raw)} bytes is over the batch file cap of {len(raw) - 1} bytes" in outcome.reason
    errors = world.store.get_bytes(ARTIFACTS, f"{dataset}/predictions/huge.csv/_error.json")
    assert json.loads(errors)["status"] == "rejected"
    assert not [k for k in world.store.keys(ARTIFACTS, f"{dataset}/predictions/") if "part-" in k]
