"""An upload to a retired dataset is refused with a report naming the retirement; the file is
kept, nothing runs, and the dataset takes uploads again once un-retired."""

from __future__ import annotations

import json

from functions.preprocess.logic import process_upload
from functions.preprocess.models import PreprocessOutcome
from functions.shared import layout
from tests.builders import ARTIFACTS, RAW, churn_frame, contract_bytes, csv_bytes, upload_of
from tests.fakes import InMemoryObjectStore, InMemoryRegistry, RecordingOrchestrator


def test_an_upload_to_a_retired_dataset_is_rejected_naming_the_retirement() -> None:
    # Given a retired dataset
    store, pipeline, registry = InMemoryObjectStore(), RecordingOrchestrator(), InMemoryRegistry()
    registry.retire_dataset("churn", actor="cli:ana", reason="product closed")
    store.put(RAW, layout.contract_key("churn"), contract_bytes())
    info = store.put(RAW, "churn/data/part-1.csv", csv_bytes(churn_frame(200)))

    # When a file lands under its data/
    def upload() -> PreprocessOutcome:
        return process_upload(
            upload_of(info),
            store=store,
            orchestrator=pipeline,
            artifacts_bucket=ARTIFACTS,
            registry=registry,
        )

    outcome = upload()

    # Then nothing runs, the report names the retirement, and the file stays
    assert outcome.status == "rejected"
    assert pipeline.runs == {}
    report = json.loads(store.get_bytes(ARTIFACTS, outcome.report_key))
    [violation] = report["violations"]
    assert violation["rule"] == "dataset_retired"
    assert "cli:ana" in violation["message"] and "product closed" in violation["message"]
    assert "--undo" in violation["message"]
    assert store.head(RAW, "churn/data/part-1.csv") is not None

    # And once un-retired, the next upload runs
    registry.unretire_dataset("churn", actor="cli:ana", reason="back")
    info = store.put(RAW, "churn/data/part-2.csv", csv_bytes(churn_frame(200, start_id=200)))
    assert upload().status == "started"
