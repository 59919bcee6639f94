"""The demo's helpers that shape what it sends (sample rows, the shuffled-label upload) and what
it shows of a failed run."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from functions.shared.pipeline_state import StepFailure
from infra.local.demo import _sample_rows, _shuffled_labels, render
from infra.local.pipeline import FAILURE_TEXT_LIMIT, FAILURE_TEXT_WIDTH, failure_lines
from tests.models import TrainedModel


def test_sample_rows_skip_rows_a_client_could_not_send(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given an upload whose first row has text in a numeric column (preprocess drops it)
    card = trained_models["binary"].card
    names = [f.name for f in card.features]
    lines = [",".join(names), ",".join(["abc"] + ["1"] * (len(names) - 1))]
    lines += [",".join([str(i)] + [""] * (len(names) - 1)) for i in range(5)]
    # When the demo picks rows to predict, then the bad row is skipped, gaps become null
    rows = _sample_rows("\n".join(lines).encode(), card)
    assert [r[names[0]] for r in rows] == [0.0, 1.0, 2.0]
    assert all(r[n] is None for r in rows for n in names[1:])


def test_shuffled_labels_keep_every_row_and_the_label_counts() -> None:
    data = b"x,y\n1,a\n2,a\n3,b\n4,c\n"
    shuffled = list(csv.reader(io.StringIO(_shuffled_labels(data, "y").decode())))
    assert [row[0] for row in shuffled] == ["x", "1", "2", "3", "4"]
    assert sorted(row[1] for row in shuffled[1:]) == ["a", "a", "b", "c"]


# -- a failed run, as a person reads it -----------------------------------------------------------

LAMBDA_CAUSE = json.dumps(
    {
        "errorMessage": "the test split s3://artifacts/churn/v1/test/ holds no parquet file",
        "errorType": "EvaluationError",
        "requestId": "4f7c",
        "stackTrace": ['  File "/var/task/functions/evaluate/logic.py", line 201, in read'],
    }
)


@pytest.mark.parametrize(
    ("error", "cause", "message"),
    [
        (
            "EvaluationError",
            LAMBDA_CAUSE,
            "the test split s3://artifacts/churn/v1/test/ holds no parquet file",
        ),
        (
            "Lambda.Unknown",
            LAMBDA_CAUSE,
            "EvaluationError: the test split s3://artifacts/churn/v1/test/ holds no parquet file",
        ),
        (
            "States.TaskFailed",
            json.dumps({"TrainingJobStatus": "Failed", "FailureReason": "AlgorithmError: boom"}),
            "AlgorithmError: boom",
        ),
        ("States.Timeout", "plain text, not JSON", "plain text, not JSON"),
        ("States.TaskFailed", "[1, 2]", "[1, 2]"),
    ],
    ids=["lambda-error", "lambda-error-under-another-name", "sagemaker", "text", "json-not-object"],
)
def test_a_catchs_cause_is_unwrapped_into_its_readable_message(
    error: str, cause: str, message: str
) -> None:
    assert StepFailure(Error=error, Cause=cause).message == message


def test_a_long_failure_is_wrapped_at_words_and_cut_with_what_is_left() -> None:
    # Given a cause of 700 words (about 4 900 characters) with a line break and a long URI
    words = " ".join(f"word{i:03d}" for i in range(700))
    uri = "s3://artifacts/" + "x" * 150
    message = f"first line {uri}\n{words}"
    failure = {"state": "Train", "error": "States.TaskFailed", "message": message}

    # When it is shown
    lines = failure_lines(failure, indent="  ", full_text_in="`sluice status --json`")

    # Then the state and error head it, each line is indented, words and the URI stay whole
    assert lines[0] == "  failed at Train: States.TaskFailed"
    body = lines[1:-1]
    assert all(line.startswith("    ") for line in body)
    assert body[:2] == ["    first line", f"    {uri}"]  # the long token is not broken
    assert all(len(line) <= FAILURE_TEXT_WIDTH for line in body[2:])
    shown = " ".join(" ".join(line.split()) for line in body)
    assert all(re.fullmatch(r"word\d{3}", w) for w in shown.split()[3:])
    # and the cut says how many characters are left, and where to read them
    kept = len("\n".join(line.strip() for line in body))
    left = int(re.search(r"\(… (\d+) more characters", lines[-1]).group(1))  # type: ignore[union-attr]
    assert lines[-1].endswith("more characters in `sluice status --json`)")
    assert kept + left == len(message)
    assert kept <= FAILURE_TEXT_LIMIT


def test_a_short_failure_is_shown_whole() -> None:
    failure = {"state": "Evaluate", "error": "EvaluationError", "message": "no rows"}
    assert failure_lines(failure, indent="", full_text_in="x") == [
        "failed at Evaluate: EvaluationError",
        "  no rows",
    ]


def test_the_demo_text_shows_a_failed_runs_state_error_and_cause() -> None:
    failure = {
        "state": "Train",
        "error": "States.TaskFailed",
        "cause": json.dumps({"FailureReason": "AlgorithmError: unknown hyperparameter 'bogus'"}),
        "message": "AlgorithmError: unknown hyperparameter 'bogus'",
    }
    step = {
        "upload": "s3://raw/churn/data/churn.csv",
        "preprocess": {
            "status": "started",
            "reason": "run started",
            "dataset_version": "v1",
            "rows": {
                "read": 10,
                "duplicates_dropped": 0,
                "rejected": {},
                "accepted": 10,
                "per_split": {"train": 7, "validation": 2, "test": 1},
            },
        },
        "run": {
            "name": "churn-1",
            "status": "FAILED",
            "path": ["PrepareTraining", "Train", "RecordFailure", "RunFailed"],
            "error": "Sluice.RunFailed",
            "cause": "A pipeline step failed; the live model was not changed.",
            "failure": failure,
        },
        "live_version": None,
    }
    text = render(
        {"dataset": "churn", "stack": {"aws_endpoint_url": "e", "api_url": "a"}, "first": step}
    )
    assert "    failed at Train: States.TaskFailed" in text.splitlines()
    assert "      AlgorithmError: unknown hyperparameter 'bogus'" in text.splitlines()


def test_the_demo_text_ends_with_the_report_files_and_how_to_open_the_console() -> None:
    # Given a demo whose first version went live, its report copied to a file
    step = {
        "upload": "s3://raw/churn/data/churn.csv",
        "preprocess": {"status": "rejected", "reason": "no rows"},
        "model_version": 1,
        "model_report": {
            "uri": "s3://a/churn/models/j/report/index.html",
            "file": "/r/churn-v1.html",
        },
    }
    # When it is told to a person
    lines = render(
        {"dataset": "churn", "stack": {"aws_endpoint_url": "e", "api_url": "a"}, "first": step}
    ).splitlines()
    # Then the last lines say where the report page is and where the console is served
    assert "  version 1: /r/churn-v1.html" in lines[-6:]
    assert lines[-3].startswith("console: ") and "http://127.0.0.1:8090/" in lines[-3]
    assert "`sluice demo --serve`" in lines[-2] and "`sluice up`" in lines[-1]
    # And a demo that serves its console (--serve) does not say its stack has stopped
    serving = render(
        {"dataset": "churn", "stack": {"aws_endpoint_url": "e", "api_url": "a"}, "first": step},
        stopped=False,
    ).splitlines()
    assert serving[-1] == "  version 1: /r/churn-v1.html"


def test_the_demo_text_names_a_file_its_upload_left_out() -> None:
    step = {
        "upload": "s3://raw/churn/data/mar.csv",
        "preprocess": {
            "status": "started",
            "reason": "run started",
            "dataset_version": "v2",
            "rows": {
                "read": 10,
                "duplicates_dropped": 0,
                "rejected": {},
                "accepted": 10,
                "per_split": {"train": 7, "validation": 2, "test": 1},
            },
            "excluded": [
                {"key": "churn/data/feb.csv", "rule": "empty_file", "report_key": "churn/r.json"}
            ],
        },
        "run": {"name": "churn-2", "status": "SUCCEEDED", "path": ["Train"], "error": None},
        "live_version": 2,
    }
    text = render(
        {"dataset": "churn", "stack": {"aws_endpoint_url": "e", "api_url": "a"}, "first": step}
    )
    assert (
        "    ! left out churn/data/feb.csv (empty_file), report churn/r.json" in text.splitlines()
    )
