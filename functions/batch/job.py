"""The processing job that scores a batch file past the Lambda (docs/decisions.md, "Batch files
past one Lambda"): ``python3 -m functions.batch.job_boot`` in a SageMaker Processing container,
the batch function's code zip on ``PYTHONPATH``. It runs the code the Lambda runs
(``logic.score_with``), with the model the request pins, and writes the same outputs: the
predictions' parts, staged and committed together, then ``_manifest.json``; or ``_error.json``.

SageMaker Processing's container contract, which the local runner
(infra/local/processing_runner.py) honours under another root (``SLUICE_OPT_ML``):

- ``/opt/ml/processing/input/request/request.json``: the ``BatchJobRequest``, the one
  ``ProcessingInput`` besides the code;
- ``/opt/ml/output/message``: why the job failed (DescribeProcessingJob's ExitMessage), which
  the state machine's Catch hands the batch function for the file's ``_error.json``.

A file that cannot be scored (a missing column, an unreadable row) is a result, written as the
Lambda writes it, and the job succeeds; only a fault of the job (S3, the instance) fails it.
Every read is of the object the request names (its ETag, a dropped connection resumed where it
broke); a file replaced before or while it is scored is left to its own event.
"""

from __future__ import annotations

import sys
import time

from functions.batch.logic import (
    REQUEST_FILE,
    BatchError,
    BatchOutcome,
    VersionedModel,
    if_replaced,
    load_scoring,
    reject,
    score_with,
)
from functions.batch.route import BatchJobRequest
from functions.shared.model_card import ModelCard
from functions.shared.processing_job import failed, peak_rss_bytes, under_opt_ml
from functions.shared.storage import ObjectStore, S3ObjectStore, parse_s3_uri, s3_uri

REQUEST_LOCAL_PATH = "/opt/ml/processing/input/request"


def run_request(request: BatchJobRequest, store: ObjectStore) -> BatchOutcome:
    """Score the request's file with its pinned model, unless the file changed since: then the
    replacement's own event scores it, and nothing is written."""
    started = time.perf_counter()
    source = s3_uri(request.raw_bucket, request.key)
    replaced = if_replaced(store, request)
    if replaced is not None:
        return replaced
    card = ModelCard.model_validate_json(store.get_bytes(*parse_s3_uri(request.card_uri)))
    try:
        scoring = load_scoring(
            store, request.model_uri, card, request.model_sha256, request.model_version
        )
    except BatchError as error:  # the pinned model is refused (its sha256)
        where = (request.artifacts_bucket, source, request.key)
        return reject(store, *where, str(error), started, request.job_name)
    return score_with(
        store,
        VersionedModel(request.model_version, scoring),
        raw_bucket=request.raw_bucket,
        artifacts_bucket=request.artifacts_bucket,
        key=request.key,
        chunk_rows=request.chunk_rows,
        started=started,
        etag=request.etag,
        job_name=request.job_name,
    )


def read_request() -> BatchJobRequest:
    path = under_opt_ml(REQUEST_LOCAL_PATH) / REQUEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no batch job request at {REQUEST_LOCAL_PATH}/{REQUEST_FILE}")
    return BatchJobRequest.model_validate_json(path.read_bytes())


def main(store: ObjectStore | None = None) -> int:
    """The container's entry point: 0 when the file was scored or refused (both are results,
    written where the Lambda writes them), 1 with the reason in ``/opt/ml/output/message``."""
    try:
        request = read_request()
        if store is None:
            import boto3

            store = S3ObjectStore(boto3.client("s3"))
        outcome = run_request(request, store)
        print(outcome.model_dump_json())
        print(f'{{"peak_rss_bytes": {peak_rss_bytes()}}}')
        return 0
    except Exception as exc:
        return failed(exc)


if __name__ == "__main__":
    sys.exit(main())
