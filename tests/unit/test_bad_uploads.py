"""Issue 8: a corpus of bad uploads, each refused with a report that names the rule and where,
nothing raised, the raw object untouched, no dataset version and no run (so the live model
stands); an upload too large to download, refused from its size with its header still checked;
and hypothesis, which throws arbitrary bytes and mangled CSV at preprocessing.

docs/reliability-parts/bad-uploads.md has the figures; docs/decisions.md the rules.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from functions.preprocess import reader
from functions.preprocess.logic import Policy, process_upload
from functions.preprocess.parts import GIB
from functions.preprocess.reader import HEADER_BYTES
from functions.shared import layout
from functions.shared.storage import S3ObjectStore
from tests.builders import (
    ARTIFACTS,
    RAW,
    World,
    assert_rejected,
    churn_frame,
    contract_bytes,
    csv_bytes,
    upload_of,
)

CSV_KEY = "churn/data/upload.csv"
PARQUET_KEY = "churn/data/upload.parquet"


# --- builders for the corpus ---------------------------------------------------------------


def good(rows: int = 300) -> bytes:
    return csv_bytes(churn_frame(rows))


def with_column(name: str, values: object, rows: int = 300) -> bytes:
    frame = churn_frame(rows).astype({"tenure": object, "monthly_charges": object})
    frame[name] = values
    return csv_bytes(frame)


def with_cells(column: str, value: object, count: int, rows: int = 300) -> bytes:
    frame = churn_frame(rows).astype({column: object})
    frame.loc[: count - 1, column] = value
    return csv_bytes(frame)


def declared_columns(data: bytes) -> bytes:
    """Only tenure, plan and churned: the columns of a contract that declares its features."""
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    return csv_bytes(frame[["tenure", "plan", "churned"]])


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def zip_bomb() -> bytes:
    """50 MB of zeros deflated to ~50 kB, inside a zip, renamed .csv: must never be expanded."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("churn.csv", b"0" * 50_000_000)
    return buffer.getvalue()


def gzip_bomb() -> bytes:
    return gzip.compress(b"0" * 50_000_000, compresslevel=9)


def binary_garbage() -> bytes:
    return np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8).tobytes()


# --- the corpus ----------------------------------------------------------------------------

ContractSpec = dict[str, Any] | bytes | None  # churn contract overrides, raw bytes, or none
# Every column of the churn sample but the id and the target, declared.
DECLARED = {
    "tenure": "numeric",
    "monthly_charges": "numeric",
    "plan": "categorical",
    "region": "categorical",
}


@dataclass(frozen=True)
class Bad:
    """One kind of bad upload and the rejection it must get."""

    id: str
    data: Callable[[], bytes]
    rule: str  # a violation with this rule must be in the report
    fragment: str  # ... and its message must contain this
    key: str = CSV_KEY
    contract: ContractSpec = None  # None: the default churn contract
    column: str | None = None  # the violation names this column
    names_file: bool = False  # the violation names the uploaded file
    row: int | None = None  # its first example row (1-based data row), for row rules
    no_contract: bool = False


CORPUS: list[Bad] = [
    # -- the file is not CSV text, or not the CSV sluice reads --------------------------------
    Bad("empty-file", lambda: b"", "unreadable_file", "empty file", names_file=True),
    Bad("whitespace-only", lambda: b"  \n\r\n \n", "unreadable_file", "empty file"),
    Bad("header-only", lambda: b"tenure,plan,churned\n", "empty_file", "header but no data rows"),
    Bad(
        "header-only-no-newline",
        lambda: lines(good())[0],
        "empty_file",
        "header but no data rows",
        names_file=True,
    ),
    Bad("blank-first-line", lambda: b"\n" + good(), "unreadable_file", "line 1 is blank"),
    Bad("binary-garbage", binary_garbage, "unreadable_file", "not UTF-8 text", names_file=True),
    Bad(
        "png-renamed-csv",
        lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
        "unreadable_file",
        "UTF-8",
    ),
    Bad(
        "semicolon-delimited",
        lambda: good().replace(b",", b";"),
        "unreadable_file",
        "looks ';'-separated",
    ),
    Bad(
        "tab-delimited",
        lambda: good().replace(b",", b"\t"),
        "unreadable_file",
        "looks tab-separated",
    ),
    Bad(
        "ragged-row",
        lambda: b"\n".join([*lines(good())[:4], b"7,8", *lines(good())[4:]]),
        "unreadable_file",
        "line 5 (data row 4): Expected 6 columns, got 2",
        names_file=True,
    ),
    Bad(
        "unterminated-quote",
        lambda: good() + b'C999999,"12,70.5,basic,north,no\n',
        "unreadable_file",
        "line 302 (data row 301)",
    ),
    Bad(
        "latin-1-cells",
        lambda: with_column("region", "Zürich").decode().encode("latin-1"),
        "unreadable_file",
        "not UTF-8 text at line 2 (data row 1), column 'region'",
    ),
    Bad(
        "latin-1-header",
        lambda: good().replace(b"region", "région".encode("latin-1")),
        "unreadable_file",
        "header (line 1) is not UTF-8 text: byte 0xe9",
    ),
    Bad(
        "utf-16-with-bom",
        lambda: good().decode().encode("utf-16"),
        "unreadable_file",
        "UTF-16 text (byte-order mark FF FE)",
    ),
    Bad(
        "utf-16-without-bom",
        lambda: good().decode().encode("utf-16-le"),
        "unreadable_file",
        "looks UTF-16 encoded",
    ),
    Bad(
        "utf-32",
        lambda: good().decode().encode("utf-32"),
        "unreadable_file",
        "UTF-32 text",
    ),
    Bad(
        "nul-bytes-in-rows",
        lambda: b"\n".join([*lines(good())[:6], b"C0\x00\x00\x00,1,2,basic,north,no"]) + b"\n",
        "unreadable_file",
        "NUL byte at line 7 (data row 6)",
    ),
    Bad(
        "nul-bytes-in-header",
        lambda: b"tenure\x00,plan,churned\n1,a,yes\n",
        "unreadable_file",
        "binary content where a CSV header was expected",
    ),
    Bad("gzip-bomb-renamed-csv", gzip_bomb, "unreadable_file", "gzip-compressed", names_file=True),
    Bad("zip-bomb-renamed-csv", zip_bomb, "unreadable_file", "a zip archive"),
    Bad(
        "bare-cr-line-ends",
        lambda: good().replace(b"\n", b"\r"),
        "unreadable_file",
        "bare CR",
    ),
    Bad(
        "header-longer-than-1-MiB",
        lambda: b"c," * (HEADER_BYTES // 2 + 10),
        "unreadable_file",
        "no end of the header line in the first 1024 KiB",
    ),
    Bad(
        "parquet-corrupt",
        lambda: b"PAR1" + b"\x07" * 800 + b"PAR1",
        "unreadable_file",
        "not a readable Parquet file",
        key=PARQUET_KEY,
        names_file=True,
    ),
    Bad(
        "parquet-truncated",
        lambda: parquet(churn_frame(300))[:2000],
        "unreadable_file",
        "not a readable Parquet file",
        key=PARQUET_KEY,
    ),
    Bad(
        "csv-named-parquet",
        good,
        "unreadable_file",
        "not a readable Parquet file",
        key=PARQUET_KEY,
    ),
    Bad(
        "parquet-nested-column",
        lambda: parquet(churn_frame(300).assign(tags=[[1, 2]] * 300)),
        "unreadable_file",
        "nested Parquet column(s) 'tags' (list<",
        key=PARQUET_KEY,
        names_file=True,
    ),
    # -- the header ---------------------------------------------------------------------------
    Bad(
        "empty-column-name",
        lambda: churn_frame(300).to_csv().encode(),  # a saved row index: an unnamed column 1
        "empty_column_name",
        "header column(s) [1] (1-based) have no name",
        names_file=True,
    ),
    Bad(
        "duplicated-column-names",
        lambda: b"tenure,plan,plan,churned\n" + b"1,a,b,yes\n" * 200,
        "duplicate_column",
        "duplicated column names ['plan']",
        column="plan",
        names_file=True,
    ),
    Bad(  # the CSV reader trims header names: this one is empty once read
        "whitespace-only-column-name",
        lambda: b"tenure,  ,plan,churned\n" + b"1,2,a,yes\n" * 200,
        "empty_column_name",
        "header column(s) [2] (1-based) have no name",
        names_file=True,
    ),
    Bad(  # ... and these two are one name once read
        "names-equal-once-trimmed",
        lambda: b"tenure, tenure ,plan,churned\n" + b"1,2,a,yes\n" * 200,
        "duplicate_column",
        "duplicated column names ['tenure']",
        column="tenure",
        names_file=True,
    ),
    Bad(  # Parquet keeps names as written
        "parquet-whitespace-only-column-name",
        lambda: parquet(churn_frame(300).assign(**{"  ": 1.0})),
        "empty_column_name",
        "have no name (empty or only whitespace)",
        key=PARQUET_KEY,
        names_file=True,
    ),
    Bad(
        "parquet-names-equal-once-trimmed",
        lambda: parquet(churn_frame(300).assign(**{"plan ": "x"})),
        "duplicate_column",
        "column names ['plan', 'plan '] differ only in surrounding whitespace",
        key=PARQUET_KEY,
        column="plan",
        names_file=True,
    ),
    Bad(
        "missing-target-column",
        lambda: csv_bytes(churn_frame(300).drop(columns="churned")),
        "target_missing",
        "required column 'churned' is missing",
        column="churned",
        names_file=True,
    ),
    Bad(
        "missing-declared-feature",
        good,
        "missing_column",
        "required column 'promo' is missing",
        contract={"features": {"tenure": "numeric", "promo": "categorical"}},
        column="promo",
    ),
    Bad(
        "extra-columns",
        good,
        "unexpected_column",
        "column 'region' is not in the contract's features",
        contract={
            "features": {"tenure": "numeric", "plan": "categorical"},
            "id_column": "customer_id",
            "sensitive": ["monthly_charges"],
        },
        column="region",
        names_file=True,
    ),
    # -- the values ---------------------------------------------------------------------------
    # A declared feature without values is refused; an inferred one is left out with a warning
    # (test_preprocess.py, column roles).
    Bad(
        "all-nan-literal-column",
        lambda: with_column("promo", "NaN"),
        "all_missing",
        "feature 'promo' has no values at all",
        contract={"features": {**DECLARED, "promo": "categorical"}, "id_column": "customer_id"},
        column="promo",
    ),
    Bad(
        "all-empty-numeric-column",
        lambda: with_column("monthly_charges", ""),
        "all_missing",
        "feature 'monthly_charges' has no values at all",
        contract={"features": DECLARED, "id_column": "customer_id"},
        column="monthly_charges",
    ),
    Bad(
        "inf-values",
        lambda: with_cells("monthly_charges", "inf", 30),
        "non_finite",
        "value is infinite",
        column="monthly_charges",
        row=1,
    ),
    Bad(
        "huge-float-1e400",
        lambda: with_cells("monthly_charges", "1e400", 40),
        "non_finite",
        "beyond float32",
        column="monthly_charges",
        row=1,
    ),
    Bad(
        "huge-float-beyond-float32",
        lambda: with_cells("monthly_charges", "1.7e308", 40),  # finite as float64, not float32
        "non_finite",
        "beyond float32 (±3.4e38)",
        column="monthly_charges",
        row=1,
    ),
    Bad(
        "huge-integer-400-digits",
        lambda: with_cells("tenure", "9" * 400, 40),
        "non_finite",
        "beyond float32",
        column="tenure",
        row=1,
    ),
    Bad(
        "too-many-type-mismatches",
        lambda: declared_columns(with_cells("tenure", "twelve", 30)),
        "too_many_rejected_rows",
        "30 of 300 rows broke a rule (more than 5%)",
        contract={"features": {"tenure": "numeric", "plan": "categorical"}},
    ),
    Bad(
        "missing-targets",
        lambda: with_cells("churned", "", 50),
        "target_null",
        "target value is missing",
        column="churned",
        row=1,
    ),
    Bad(
        "missing-ids",
        lambda: with_cells("customer_id", "", 40),
        "id_null",
        "id value is missing",
        contract={"id_column": "customer_id"},
        column="customer_id",
        row=1,
    ),
    Bad(
        "regression-target-not-numbers",
        lambda: with_cells("monthly_charges", "lots", 40),
        "type_mismatch",
        "target value is not a number",
        contract={"target": "monthly_charges", "task": "regression", "metric": "rmse"},
        column="monthly_charges",
        row=1,
    ),
    Bad(
        "one-class-target",
        lambda: csv_bytes(churn_frame(300).assign(churned="yes")),
        "too_few_classes",
        "has 1 class(es) ['yes']",
        column="churned",
    ),
    Bad(
        "class-too-small",
        lambda: with_cells("churned", "maybe", 4),
        "class_too_small",
        "'maybe': 4",
        column="churned",
    ),
    Bad(
        "only-duplicate-rows",
        lambda: b"\n".join([lines(good())[0], *[lines(good())[1]] * 300]) + b"\n",
        "too_few_rows",
        "299 exact duplicates dropped",
    ),
    Bad("too-few-rows", lambda: good(60), "too_few_rows", "60 usable rows after cleaning"),
    # -- the contract ---------------------------------------------------------------------------
    Bad(
        "contract-missing",
        good,
        "contract_missing",
        "churn/contract.json",
        no_contract=True,
    ),
    Bad("contract-not-json", good, "contract_invalid", "not valid JSON", contract=b"{target:"),
    Bad(
        "contract-not-an-object",
        good,
        "contract_invalid",
        "must be a JSON object, got list",
        contract=b"[]",
    ),
    Bad(
        "contract-unknown-key",
        good,
        "contract_invalid",
        "treshold: unknown key",
        contract={"treshold": 0.5},
    ),
    Bad(
        "contract-bad-metric",
        good,
        "contract_invalid",
        "unknown metric 'f2'",
        contract={"metric": "f2"},
    ),
    Bad(
        "contract-threshold-nan",
        good,
        "contract_invalid",
        "threshold: must be a finite number",
        contract=json.dumps(
            {
                "target": "churned",
                "task": "classification",
                "metric": "f1_macro",
                "threshold": math.nan,
            }
        ).encode(),
    ),
    Bad(
        "contract-metric-of-another-task",
        good,
        "contract_invalid",
        "metric 'rmse' is a regression metric",
        contract={"metric": "rmse"},
    ),
    Bad(
        "contract-target-is-a-feature",
        good,
        "contract_invalid",
        "target 'churned' cannot also be a feature",
        contract={"features": {"churned": "categorical", "tenure": "numeric"}},
    ),
]


def world_for(case: Bad) -> World:
    world = World()
    if case.no_contract:
        return world
    if isinstance(case.contract, bytes):
        world.store.put(RAW, layout.contract_key("churn"), case.contract)
    else:
        world.contract(**(case.contract or {}))
    return world


def test_the_corpus_has_at_least_25_distinct_kinds() -> None:
    assert len({c.id for c in CORPUS}) == len(CORPUS) >= 25
    assert len({c.rule for c in CORPUS}) >= 15


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_a_bad_upload_is_rejected_with_a_report_naming_the_rule_and_where(case: Bad) -> None:
    world = world_for(case)
    # When the bad upload arrives: rejected, nothing raised, the raw object untouched, no version
    # written, no run started (assert_rejected)
    report = assert_rejected(world, case.key, case.data())
    # Then the report names the rule, says what is wrong, and where
    found = [v for v in report["violations"] if v["rule"] == case.rule]
    assert found, f"no {case.rule} in {report['violations']}"
    violation = found[0]
    assert case.fragment in violation["message"], violation["message"]
    if case.names_file:
        assert violation["file"] == case.key
        assert violation["message"].startswith(f"{case.key}: ")
    if case.column is not None:
        assert violation["column"] == case.column
    if case.row is not None:
        assert violation["examples"][0] == {"file": case.key, "row": case.row}
    assert report["decision"] == "rejected" and "live model is unchanged" in report["note"]
    assert report["trigger"]["key"] == case.key


# --- what is not a bad upload --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("utf-8-bom", b"\xef\xbb\xbf" + good()),
        ("crlf-line-ends", good().replace(b"\n", b"\r\n")),
        ("no-final-newline", good().rstrip(b"\n")),
        ("a-few-huge-numbers", with_cells("monthly_charges", "1e400", 6)),
        # a quoted cell holding line breaks, as pandas and spreadsheets write multi-line text
        ("quoted-line-breaks", with_cells("region", "north\nby north-west", 5)),
    ],
)
def test_an_otherwise_valid_file_is_accepted(name: str, data: bytes) -> None:
    # A UTF-8 byte-order mark (what Excel writes for "CSV UTF-8") is text, not a problem; a few
    # out-of-range numbers are dropped rows, counted, under the 5 % limit.
    world = World()
    world.contract()
    outcome = world.upload(CSV_KEY, data)
    assert outcome.status == "started", outcome.reason
    assert world.store.get_bytes(RAW, CSV_KEY) == data
    schema = json.loads(
        world.store.get_bytes(ARTIFACTS, f"churn/versions/{outcome.dataset_version}/dataset.json")
    )
    # (customer_id, one distinct value per row, is left out as an identifier)
    features = {f["name"] for f in schema["features"]}
    assert features == {"tenure", "monthly_charges", "plan", "region"}
    assert outcome.rows is not None
    if name == "a-few-huge-numbers":
        assert outcome.rows.rejected == {"non_finite": 6}
    else:
        assert outcome.rows.read == 300 and outcome.rows.rejected == {}


def test_quoted_line_breaks_across_read_blocks_are_cells_not_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given multi-line text in many rows (as pandas writes it), read in blocks far smaller than
    # the file, so block boundaries fall inside quoted cells
    monkeypatch.setattr(reader, "BLOCK_BYTES", 2048)
    frame = churn_frame(300).astype({"region": object})
    frame["region"] = [f"{r}\nline two of row {i}" for i, r in enumerate(frame["region"])]
    world = World()
    world.contract()
    # When it is uploaded, Then every row is read as one row
    outcome = world.upload(CSV_KEY, csv_bytes(frame))
    assert outcome.status == "started", outcome.reason
    assert outcome.rows is not None and outcome.rows.read == 300


# --- too large to download -----------------------------------------------------------------


def test_a_2_gib_upload_is_refused_from_its_size_without_downloading_it() -> None:
    # Given an object S3 reports as 2 GiB (the fake holds only its first rows)
    world = World()
    world.contract()
    report = assert_rejected(world, "churn/data/big.csv", good(50), size=2 * GIB)
    # Then it is refused from its size, its header checked with a ranged read, never downloaded
    violation = next(v for v in report["violations"] if v["rule"] == "file_too_large")
    assert violation["file"] == "churn/data/big.csv"
    assert "2.0 GiB (2147483648 bytes) is over the 1.0 GiB limit" in violation["message"]
    assert "its header has the contract's columns" in violation["message"]
    assert [v["rule"] for v in report["violations"]] == ["file_too_large"]
    assert world.store.downloads == []
    assert world.store.head_reads == [(RAW, "churn/data/big.csv", HEADER_BYTES + 1)]


def test_a_too_large_upload_with_the_wrong_columns_says_both() -> None:
    world = World()
    world.contract()
    data = csv_bytes(churn_frame(50).drop(columns="churned"))
    report = assert_rejected(world, "churn/data/big.csv", data, size=3 * GIB)
    rules = [v["rule"] for v in report["violations"]]
    assert rules == ["file_too_large", "target_missing"]
    assert "its header also breaks the rules below" in report["violations"][0]["message"]
    assert world.store.downloads == []


def test_a_too_large_zip_renamed_csv_is_refused_unread() -> None:
    world = World()
    world.contract()
    report = assert_rejected(world, "churn/data/big.csv", zip_bomb(), size=5 * GIB)
    assert [v["rule"] for v in report["violations"]] == ["file_too_large", "unreadable_file"]
    assert "a zip archive" in report["violations"][1]["message"]
    assert world.store.downloads == []


def test_a_too_large_parquet_file_is_refused_without_any_read() -> None:
    world = World()
    world.contract()
    report = assert_rejected(world, PARQUET_KEY, parquet(churn_frame(50)), size=2 * GIB)
    assert "columns were not checked" in report["violations"][0]["message"]
    assert world.store.downloads == [] and world.store.head_reads == []


def test_an_older_oversized_file_is_left_out_of_the_next_upload_unread() -> None:
    # Every upload rebuilds the dataset from all its files: a large one among them is left out
    # (issue 20), never downloaded, and the next upload runs on the others.
    world = World()
    world.contract()
    world.store.put(RAW, "churn/data/a-big.csv", good(50), size=2 * GIB)
    outcome = world.upload("churn/data/b.csv", good())
    assert outcome.status == "started", outcome.reason
    assert [(f.key, f.rule) for f in outcome.excluded] == [
        ("churn/data/a-big.csv", "file_too_large")
    ]
    assert world.store.downloads == [(RAW, "churn/data/b.csv")]


def test_the_cap_is_a_policy_setting_and_at_the_cap_a_file_is_read() -> None:
    data = good()
    at_cap = World(policy=Policy(max_upload_bytes=len(data)))
    at_cap.contract()
    assert at_cap.upload(CSV_KEY, data).status == "started"
    below = World(policy=Policy(max_upload_bytes=len(data) - 1))
    below.contract()
    report = assert_rejected(below, CSV_KEY, data)
    assert report["violations"][0]["rule"] == "file_too_large"


def test_the_s3_adapter_reads_the_head_with_a_ranged_get() -> None:
    # Given the real adapter over moto's S3, and a cap below the object's size
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in (RAW, ARTIFACTS):
            client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=RAW, VersioningConfiguration={"Status": "Enabled"})
        client.put_object(Bucket=RAW, Key="churn/contract.json", Body=contract_bytes())
        data = good()
        put = client.put_object(Bucket=RAW, Key=CSV_KEY, Body=data)

        downloads: list[str] = []

        class Recording(S3ObjectStore):
            def download(
                self,
                bucket: str,
                key: str,
                dest: Path,
                version_id: str | None = None,
                if_match: str | None = None,
            ) -> str:
                downloads.append(key)
                return super().download(bucket, key, dest, version_id, if_match)

        store = Recording(client)
        assert store.read_head(RAW, CSV_KEY, 10) == data[:10]
        assert store.read_head(RAW, CSV_KEY, 10, version_id=put["VersionId"]) == data[:10]
        assert store.read_head(RAW, CSV_KEY, len(data) + 100) == data

        info = store.head(RAW, CSV_KEY)
        assert info is not None
        outcome = process_upload(
            upload_of(info),
            store=store,
            orchestrator=World().pipeline,
            artifacts_bucket=ARTIFACTS,
            policy=Policy(max_upload_bytes=len(data) // 2),
        )
        assert outcome.status == "rejected"
        assert "is over the" in outcome.reason and downloads == []
        assert client.get_object(Bucket=RAW, Key=CSV_KEY)["Body"].read() == data


# --- hypothesis ----------------------------------------------------------------------------

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_outcome(world: World, key: str, data: bytes) -> None:
    """Whatever the bytes: a run started or a rejection with a report; the raw object as sent."""
    outcome = world.upload(key, data)
    assert outcome.status in ("started", "rejected"), outcome
    event(outcome.status)
    assert world.store.get_bytes(RAW, key) == data
    assert len(world.store.objects[(RAW, key)]) == 1
    if outcome.status == "rejected":
        report = world.report(outcome)
        assert report["violations"] and all(v["message"] for v in report["violations"])
        assert world.pipeline.runs == {}
        assert world.store.keys(ARTIFACTS, "churn/versions/") == []
    else:
        assert list(world.pipeline.runs) == [outcome.run_name]


def fresh_world() -> World:
    world = World()
    world.contract()
    return world


@FAST
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".csv", ".parquet", ".CSV"]))
def test_any_bytes_are_a_run_or_a_report(data: bytes, suffix: str) -> None:
    check_outcome(fresh_world(), f"churn/data/upload{suffix}", data)


COLUMNS = ["customer_id", "tenure", "monthly_charges", "plan", "region", "churned"]
CELLS = st.one_of(
    st.sampled_from(["", "NA", "nan", "NaN", "inf", "-inf", "1e400", "9" * 400, "yes", "no"]),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)


@st.composite
def csv_ish(draw: st.DrawFn) -> bytes:
    """Random CSV-like text: names from the contract and not, any delimiter, quotes or not,
    rows of any length, in one of several encodings."""
    names = draw(st.lists(st.one_of(st.sampled_from(COLUMNS), st.text(max_size=6)), max_size=8))
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t", "|"]))
    quote = draw(st.booleans())
    rows = draw(st.lists(st.lists(CELLS, max_size=len(names) + 2), max_size=30))
    line_end = draw(st.sampled_from(["\n", "\r\n", "\r"]))

    def fmt(cells: list[str]) -> str:
        if quote:
            cells = ['"' + c.replace('"', '""') + '"' for c in cells]
        return delimiter.join(cells)

    text = line_end.join(fmt(r) for r in [names, *rows]) + draw(st.sampled_from(["", line_end]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@st.composite
def mangled_churn(draw: st.DrawFn) -> bytes:
    """A valid churn file, mostly big enough to start a run, with a few things broken."""
    rows = draw(st.one_of(st.integers(1, 99), st.integers(150, 260)))
    frame = churn_frame(rows, seed=draw(st.integers(0, 3))).astype(object)
    for _ in range(draw(st.integers(0, 4))):
        if not rows:
            break
        column = draw(st.sampled_from(COLUMNS))
        where = draw(st.lists(st.integers(0, rows - 1), max_size=20))
        frame.loc[where, column] = draw(CELLS)
    if draw(st.integers(0, 3)) == 0:
        frame = frame.drop(columns=draw(st.sampled_from(COLUMNS)))
    data = csv_bytes(frame)
    mutation = draw(
        st.sampled_from([*["none"] * 5, "truncate", "insert", "delimiter", "encoding", "bom"])
    )
    if mutation == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif mutation == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    elif mutation == "delimiter":
        data = data.replace(b",", draw(st.sampled_from([b";", b"\t", b"|", b",,"])))
    elif mutation == "encoding":
        data = data.decode().encode(
            draw(st.sampled_from(["utf-16", "utf-32", "cp500"])), errors="replace"
        )
    elif mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    return data


@settings(FAST, max_examples=100)
@given(data=csv_ish())
def test_any_csv_ish_text_is_a_run_or_a_report(data: bytes) -> None:
    check_outcome(fresh_world(), CSV_KEY, data)


@settings(FAST, max_examples=100)
@given(data=mangled_churn())
def test_a_mangled_churn_file_is_a_run_or_a_report(data: bytes) -> None:
    check_outcome(fresh_world(), CSV_KEY, data)


def test_a_nul_byte_is_found_past_the_first_scan_block_and_its_line_named(tmp_path: Any) -> None:
    from functions.preprocess.reader import SCAN_BYTES, UnreadableFileError, _refuse_nul_bytes

    rows = SCAN_BYTES // 4 + 10  # "1,2\n" is 4 bytes: the NUL lies in the second block
    path = tmp_path / "late.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * rows + b"3,\x004\n")
    with pytest.raises(UnreadableFileError, match=f"NUL byte at line {rows + 2} "):
        _refuse_nul_bytes(path)
    (tmp_path / "empty.csv").write_bytes(b"")
    _refuse_nul_bytes(tmp_path / "empty.csv")  # nothing to map, nothing refused
