"""The Lambda and SageMaker deployment artifacts of layers/build.py.

Each function's code + layer fits the size budget; the layers hold what their extras say and
nothing heavier; every handler imports and does real work under Python 3.12 from its zips alone
(nothing from this virtualenv); the zips and the training tarball are byte-for-byte deterministic.

The first run builds the layers (pip downloads wheels for the Lambda platform: a minute or two);
later runs reuse .build/ and need no network.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions.evaluate import logic as evaluate_logic
from functions.shared.scoring import ScoringModel
from layers import build
from layers import resolve as resolving
from tests.models import TrainedModel

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted({spec.package for spec in build.FUNCTIONS.values()})
HEAVY = ("pandas", "sklearn", "scikit_learn", "scipy", "pyarrow")


@dataclass(frozen=True)
class Bundle:
    code_zip: Path
    layer_zip: Path
    code: Path  # code_zip extracted
    layer: Path  # layer_zip extracted (holds python/)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """Every code package's zips, built (or found in .build/) once, and extracted once."""
    found: dict[str, Bundle] = {}
    for package in PACKAGES:
        code_zip, layer_zip = build.function_zip(package), build.layer_zip(package)
        where = tmp_path_factory.mktemp(f"bundle-{package}")
        for archive, into in ((code_zip, where / "code"), (layer_zip, where / "layer")):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(into)
        found[package] = Bundle(code_zip, layer_zip, where / "code", where / "layer")
    return found


def bundle_of(bundles: dict[str, Bundle], function: str) -> Bundle:
    return bundles[build.FUNCTIONS[function].package]


# --- sizes and contents -----------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(build.FUNCTIONS))
def test_code_plus_layer_is_within_the_size_budget(
    function: str, bundles: dict[str, Bundle]
) -> None:
    sizes = build.sizes(function)
    mb = build.MIB
    print(
        f"\n{function}: code {sizes.code_bytes / mb:.1f} MB + layer {sizes.layer_bytes / mb:.1f}"
        f" MB = {sizes.total_bytes / mb:.1f} MB unzipped (untrimmed layer "
        f"{sizes.layer_installed_bytes / mb:.1f} MB), {sizes.zipped_bytes / mb:.1f} MB zipped"
    )
    assert sizes.total_bytes <= build.BUDGET_BYTES, (
        f"{function}: code + layer is {sizes.total_bytes / mb:.1f} MB unzipped, over the "
        f"{build.BUDGET_BYTES / mb:.0f} MB budget (Lambda refuses more than "
        f"{build.LAMBDA_LIMIT_BYTES / mb:.0f} MB)"
    )
    assert sizes.total_bytes == build.unzipped_size(bundle_of(bundles, function).layer) + (
        build.unzipped_size(bundle_of(bundles, function).code)
    )


def _top_level(layer_zip: Path) -> set[str]:
    with zipfile.ZipFile(layer_zip) as zf:
        names = zf.namelist()
    assert all(name.startswith("python/") for name in names), "a layer's files live in python/"
    return {name.split("/")[1] for name in names}


def test_the_inference_layer_has_no_dataframe_or_training_library(
    bundles: dict[str, Bundle],
) -> None:
    top = _top_level(bundles["inference"].layer_zip)
    found = {
        entry for entry in top for heavy in HEAVY if re.match(rf"{heavy}([-.]|$)", entry.lower())
    }
    assert not found, found
    assert {"onnxruntime", "numpy", "pydantic", "boto3"} <= top
    # ...and the check does see them where they are
    assert "pyarrow" in _top_level(bundles["evaluate"].layer_zip)
    assert {"pandas", "pyarrow"} <= _top_level(bundles["preprocess"].layer_zip)


def test_each_layer_installs_exactly_its_resolved_pins(bundles: dict[str, Bundle]) -> None:
    pinned = build.constraints()
    for package in PACKAGES:
        pins = build.resolve(package)
        dist_infos = [
            entry.removesuffix(".dist-info").split("-", 1)
            for entry in _top_level(bundles[package].layer_zip)
            if entry.endswith(".dist-info")
        ]
        installed = {build.normalize(name): version for name, version in dist_infos}
        assert installed == pins, package
        assert all(pinned[name] == version for name, version in pins.items()), package
        # onnxruntime comes without its declared dependencies (layers/README.md)
        if "onnxruntime" in pins:
            assert not {"protobuf", "flatbuffers", "packaging", "sympy", "coloredlogs"} & set(
                pins
            ), package


def test_code_zips_hold_functions_shared_and_the_package_only(
    bundles: dict[str, Bundle],
) -> None:
    for package in PACKAGES:
        with zipfile.ZipFile(bundles[package].code_zip) as zf:
            names = zf.namelist()
        assert "functions/__init__.py" in names
        assert f"functions/{package}/handler.py" in names
        assert "functions/shared/__init__.py" in names
        assert {n.split("/")[1] for n in names if n.count("/") > 1} == {"shared", package}
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        expected = sorted(
            p.relative_to(ROOT).as_posix()
            for sub in ("shared", package)
            for p in (ROOT / "functions" / sub).rglob("*")
            if p.is_file() and p.suffix != ".pyc" and "__pycache__" not in p.parts
        )
        assert sorted(n for n in names if n != "functions/__init__.py") == expected
    # the retrain function reads a dataset version's manifest with functions/shared's model
    with zipfile.ZipFile(bundles["retrain"].code_zip) as zf:
        assert "functions/shared/manifest.py" in zf.namelist()
        assert not [n for n in zf.namelist() if n.startswith("functions/preprocess/")]


def test_every_aws_client_the_functions_create_has_its_botocore_model() -> None:
    # the layers keep the botocore models of build.AWS_SERVICES only
    pattern = re.compile(r"""\bclient\(\s*["']([a-z0-9-]+)["']""")
    used = {
        service
        for path in (ROOT / "functions").rglob("*.py")
        if "training" not in path.parts
        for service in pattern.findall(path.read_text())
    }
    assert used, "the scan found no boto3.client(...) call at all"
    assert used <= set(build.AWS_SERVICES), used - set(build.AWS_SERVICES)


def test_the_spec_matches_pyproject_and_the_handlers() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name, spec in build.FUNCTIONS.items():
        assert set(spec.extras) <= extras.keys(), name
        source = (ROOT / "functions" / spec.package / "handler.py").read_text()
        assert spec.handler_module == f"functions.{spec.package}.handler", name
        assert f"def {spec.handler_function}(" in source, name
    assert build.FUNCTIONS["reject"].package == build.FUNCTIONS["promote"].package
    assert build.layer_zip("reject") == build.layer_zip("promote")
    assert build.function_zip("reject") == build.function_zip("promote")


def test_a_cached_resolution_survives_unrelated_pin_changes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pip (no network) while the pins a layer resolved to are unchanged; pip again when one
    of them moves."""

    class PipCalledError(Exception):
        pass

    def no_pip(*args: object, **kwargs: object) -> None:
        raise PipCalledError

    pins = build.resolve("promote")  # resolved (and cached) with pip if it is not yet
    monkeypatch.setattr(resolving, "_pip", no_pip)  # what build.resolve runs pip with
    root, cache = tmp_path / "checkout", tmp_path / "build" / "layers"
    root.mkdir()
    cache.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", root)
    shutil.copy(ROOT / ".build" / "layers" / "promote.resolved.json", cache)
    lines = (ROOT / "constraints.txt").read_text().splitlines()

    def constraints_with(name: str, version: str) -> None:
        edited = [
            f"{name}=={version}" if build.normalize(line.split("==")[0]) == name else line
            for line in lines
        ]
        (root / "constraints.txt").write_text("\n".join(edited) + "\n")

    constraints_with("pytest", "0.0.1")  # not in the promote layer
    assert build.resolve("promote", root=root, build_dir=tmp_path / "build") == pins
    assert "botocore" in pins
    constraints_with("botocore", "0.0.1")  # in it: resolve again
    with pytest.raises(PipCalledError):
        build.resolve("promote", root=root, build_dir=tmp_path / "build")


# --- Python 3.12, the layer and the code zip, nothing else ------------------------------------

SMOKE = r"""
import importlib, json, os, sys, sysconfig
from pathlib import Path

job = json.loads(Path(sys.argv[1]).read_text())
result = {"python": list(sys.version_info[:2])}

module = importlib.import_module(job["module"])
assert callable(getattr(module, job["function"])), job["function"]

import boto3
for service in job["services"]:
    boto3.client(service, region_name="us-east-1")
# the function's own dependencies: Settings from the environment, its boto3 clients
factory_module, _, factory = job["dependencies"].rpartition(".")
getattr(importlib.import_module(factory_module), factory)()

if job["tables"]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from functions.preprocess.reader import iter_batches, read_header

    tmp = Path(job["tmp"])
    csv = tmp / "upload.csv"
    csv.write_text("id,city,price\n1,Oslo,3.5\n2,,4\n3,Rome,NA\n")
    header = read_header(csv)
    frame = pd.concat([batch.frame for batch in iter_batches(csv, header)])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(tmp / "part-0.parquet", table.schema) as writer:
        writer.write_table(table)
    assert pq.read_table(tmp / "part-0.parquet").equals(table)
    written = tmp / "part-0.parquet"
    again = [b.frame for b in iter_batches(written, read_header(written))]
    assert pc.all(pc.equal(pq.read_table(tmp / "part-0.parquet")["id"], table["id"])).as_py()
    pd.read_csv(csv).to_parquet(tmp / "pandas.parquet")
    result["tables"] = {
        "header": header,
        "rows": len(frame),
        "nulls": int(frame["city"].isna().sum() + frame["price"].isna().sum()),
        "parquet_rows": sum(len(f) for f in again),
        "pandas_rows": len(pd.read_parquet(tmp / "pandas.parquet")),
    }

if job["models"]:
    from functions.shared.model_card import ModelCard
    from functions.shared.scoring import ScoringModel

    result["scores"] = []
    for entry in job["models"]:
        card = ModelCard.model_validate_json(Path(entry["card"]).read_text())
        onnx = Path(entry["onnx"]).read_bytes()
        model = ScoringModel(onnx, card, expected_sha256=card.onnx.sha256)
        if "parquet" in entry:  # evaluate: the test split through evaluate's own reader
            from functions.evaluate.logic import read_test_split, score_model
            from functions.shared.storage import ObjectInfo, ObjectStore

            class Folder(ObjectStore):
                def __init__(self, root):
                    self.root = Path(root)
                def list(self, bucket, prefix):
                    files = sorted(self.root.iterdir())
                    return [ObjectInfo(bucket, p.name, p.stat().st_size, "") for p in files]
                def get_bytes(self, bucket, key):
                    return (self.root / key).read_bytes()
                head = put_bytes = download = upload = purge_prefix = None

            split = read_test_split(Folder(entry["parquet"]), "s3://bucket/test/")
            score = score_model(model, split, metric=card.metric, role="challenger", version=1)
            # the model report's numbers from the bundle alone (logic imports its drawing)
            from functions.evaluate import model_report
            from functions.evaluate.logic import score_rows

            rows = score_rows(model, split, role="challenger")
            if card.task == "classification":
                model_report.classification_figures(rows, card.classes)
            else:
                model_report.regression_figures(rows)
            importance = model_report.permutation_importance(
                model, split.columns, rows.truth, metric=card.metric, repeats=2
            )
            result["scores"].append({"metric": score.metric_value,
                                     "importance": importance.baseline})
        else:  # inference: a request's columns
            scores = model.score(json.loads(Path(entry["columns"]).read_text()))
            proba, values = scores.probabilities, scores.values
            result["scores"].append({
                "labels": scores.labels,
                "probabilities": None if proba is None else proba.tolist(),
                "values": None if values is None else values.tolist(),
            })

if job["pyarrow_extensions"]:  # every extension left loads: no trim removed a library it needs
    import pyarrow
    here = Path(pyarrow.__file__).parent
    names = sorted(p.name.split(".")[0] for p in here.glob("*.cpython-*.so"))
    for name in names:
        importlib.import_module("pyarrow." + name)
    result["pyarrow_extensions"] = names

paths = sysconfig.get_paths()
allowed = [os.path.realpath(p) for p in (job["code"], job["layer"], paths["stdlib"])]
denied = [os.path.realpath(paths["purelib"]), os.path.realpath(paths["platlib"])]
def inside(path, roots):
    return any(path == r or path.startswith(r + os.sep) for r in roots)
modules = list(sys.modules.values())
files = {os.path.realpath(m.__file__) for m in modules if getattr(m, "__file__", None)}
result["outside"] = sorted(f for f in files if not inside(f, allowed) or inside(f, denied))
result["from_layer"] = len([f for f in files if inside(f, [allowed[1]])])
print(json.dumps(result))
"""

ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": "sluice",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "SluiceTest",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    # every Settings field without a default (functions/*/handler.py, inference/api.py,
    # shared/pipeline_deps.py)
    "ARTIFACTS_BUCKET": "sluice-artifacts",
    "RAW_BUCKET": "sluice-raw",
    "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:sluice",
    "REGISTRY_TABLE": "sluice-registry",
    "DECISIONS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:sluice-decisions",
    "STAGE": "test",
}
# The cached factory that builds each function's Settings and boto3 clients.
DEPENDENCIES = {
    "preprocess": "functions.preprocess.handler._deps",
    "evaluate": "functions.shared.pipeline_deps.pipeline_deps",
    "promote": "functions.shared.pipeline_deps.pipeline_deps",
    "reject": "functions.shared.pipeline_deps.pipeline_deps",
    "inference": "functions.inference.api.dependencies",
    "batch": "functions.batch.handler._deps",
    "drift": "functions.drift.handler._deps",
    "retrain": "functions.retrain.handler._deps",
}


@pytest.fixture(scope="session")
def python312() -> Path:
    found = build.lambda_python()
    if found is None:
        pytest.skip("no python3.12 (Lambda's runtime) here; set SLUICE_PYTHON312")
    return found


def _run_smoke(python: Path, bundle: Bundle, job: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    job = {**job, "code": str(bundle.code), "layer": str(bundle.layer / "python")}
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    home = tmp_path / "home"  # no ~/.aws of this machine
    home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": f"{bundle.code}{os.pathsep}{bundle.layer / 'python'}",
        **ENVIRONMENT,
    }
    # -S: no site (so no site-packages); -B: write no bytecode. cwd is empty: nothing from the
    # repository can be imported by accident.
    done = subprocess.run(
        [str(python), "-S", "-B", "-c", SMOKE, str(job_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["python"] == [3, 12]
    assert result["outside"] == [], "modules loaded from outside the zips and the stdlib"
    assert result["from_layer"] > 50
    return result


def _model_files(model: TrainedModel, where: Path) -> dict[str, str]:
    where.mkdir(parents=True)
    (where / "model.onnx").write_bytes(model.onnx)
    (where / "model_card.json").write_bytes(model.card_json)
    return {"onnx": str(where / "model.onnx"), "card": str(where / "model_card.json")}


def _request_columns(model: TrainedModel) -> dict[str, list[Any]]:
    frame = model.split("test").head(25)
    columns: dict[str, list[Any]] = {}
    for feature in model.card.features:
        values = frame[feature.name].tolist()
        columns[feature.name] = [
            None if isinstance(v, float) and math.isnan(v) else v for v in values
        ]
    return columns


@pytest.mark.parametrize("function", sorted(build.FUNCTIONS))
def test_the_handler_runs_under_python312_from_its_zips_alone(
    function: str,
    bundles: dict[str, Bundle],
    python312: Path,
    trained_models: dict[str, TrainedModel],
    tmp_path: Path,
) -> None:
    spec = build.FUNCTIONS[function]
    job: dict[str, Any] = {
        "module": spec.handler_module,
        "function": spec.handler_function,
        "dependencies": DEPENDENCIES[function],
        "services": list(build.AWS_SERVICES),
        "tmp": str(tmp_path),
        "tables": function == "preprocess",
        "models": [],
        "pyarrow_extensions": function in {"preprocess", "evaluate"},
    }
    expected: list[dict[str, Any]] = []
    if function in {"evaluate", "inference"}:
        for kind, model in sorted(trained_models.items()):
            files = _model_files(model, tmp_path / kind)
            if function == "evaluate":
                files["parquet"] = str(model.version_dir / "test")
                test = model.split("test")
                split = evaluate_logic.TestSplit(
                    columns={c: test[c].to_numpy() for c in test.columns}, rows=len(test)
                )
                dev = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256)
                score = evaluate_logic.score_model(
                    dev, split, metric=model.card.metric, role="challenger", version=1
                )
                expected.append({"metric": score.metric_value})
            else:
                columns = _request_columns(model)
                (tmp_path / kind / "columns.json").write_text(json.dumps(columns))
                files["columns"] = str(tmp_path / kind / "columns.json")
                dev = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256)
                scores = dev.score(columns)
                expected.append(
                    {
                        "labels": scores.labels,
                        "probabilities": None
                        if scores.probabilities is None
                        else scores.probabilities.tolist(),
                        "values": None if scores.values is None else scores.values.tolist(),
                    }
                )
            job["models"].append(files)

    result = _run_smoke(python312, bundle_of(bundles, function), job, tmp_path)

    if function == "preprocess":
        assert result["tables"] == {
            "header": ["id", "city", "price"],
            "rows": 3,
            "nulls": 2,
            "parquet_rows": 3,
            "pandas_rows": 3,
        }
    if job["pyarrow_extensions"]:
        loaded = set(result["pyarrow_extensions"])
        assert {"lib", "_parquet", "_csv", "_compute", "_dataset", "_fs"} <= loaded
        assert not {"_flight", "_s3fs"} & loaded  # trimmed
    if expected:
        assert len(result["scores"]) == len(expected) == 3
        for got, want in zip(result["scores"], expected, strict=True):
            if "metric" in want:
                assert got["metric"] == pytest.approx(want["metric"], rel=1e-6)
                assert got["importance"] == pytest.approx(want["metric"], rel=1e-6)
                continue
            assert got["labels"] == want["labels"]
            for key in ("probabilities", "values"):
                if want[key] is None:
                    assert got[key] is None
                else:
                    assert _flat(got[key]) == pytest.approx(_flat(want[key]), abs=1e-6)


def _flat(values: list[Any]) -> list[float]:
    return [x for v in values for x in (_flat(v) if isinstance(v, list) else [v])]


# --- bytecode ---------------------------------------------------------------------------------


def _pyc_flags(data: bytes) -> int:
    return int.from_bytes(data[4:8], "little")  # PEP 552: after the 4-byte magic number


def test_the_inference_layer_ships_unchecked_bytecode_and_only_it(
    bundles: dict[str, Bundle], python312: Path
) -> None:
    magic = subprocess.run(
        [str(python312), "-c", "import importlib.util, sys; "
         "sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    with zipfile.ZipFile(bundles["inference"].layer_zip) as zf:
        compiled = {n: zf.read(n) for n in zf.namelist() if n.endswith(".pyc")}
        sources = [n for n in zf.namelist() if n.endswith(".py")]
    assert "python/numpy/__pycache__/__init__.cpython-312.pyc" in compiled
    assert len(compiled) >= 0.95 * len(sources)  # all but the odd module that does not compile
    for name, data in compiled.items():
        assert data[:4].hex() == magic, name  # Lambda's Python reads them
        assert _pyc_flags(data) == 0b01, name  # hash-based, unchecked: whatever the mtimes
    manifest = build.layer_manifest("inference")
    assert manifest["bytecode"].startswith("3.12.") and manifest["bytes_bytecode"] > 0
    for package, bundle in bundles.items():
        if not build.FUNCTIONS[package].bytecode:
            with zipfile.ZipFile(bundle.layer_zip) as zf:
                assert not [n for n in zf.namelist() if n.endswith(".pyc")], package


def test_layer_bytecode_is_the_same_bytes_on_every_build(
    bundles: dict[str, Bundle], python312: Path, tmp_path: Path
) -> None:
    source = bundles["inference"].layer / "python" / "pydantic"
    trees = []
    for attempt in ("one", "two"):
        tree = tmp_path / attempt / "python"
        shutil.copytree(source, tree / "pydantic", ignore=shutil.ignore_patterns("__pycache__"))
        build.layer_bytecode(tree, python312)
        trees.append({p.relative_to(tree): p.read_bytes() for p in tree.rglob("*.pyc")})
    assert trees[0] and trees[0] == trees[1]
    with zipfile.ZipFile(bundles["inference"].layer_zip) as zf:
        shipped = zf.read("python/pydantic/__pycache__/main.cpython-312.pyc")
    assert trees[0][Path("pydantic/__pycache__/main.cpython-312.pyc")] == shipped


# --- determinism ------------------------------------------------------------------------------


def _copy_sources(tmp_path: Path) -> Path:
    """The repository's functions/ elsewhere, with other mtimes and modes and some bytecode."""
    root = tmp_path / "checkout"
    shutil.copytree(
        ROOT / "functions", root / "functions", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in sorted((root / "functions").rglob("*")):
        if path.is_file():
            os.utime(path, (1_700_000_000, 1_700_000_000))
            path.chmod(0o600)
    (root / "functions" / "shared" / "__pycache__").mkdir()
    (root / "functions" / "shared" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    return root


def test_function_zips_are_deterministic(bundles: dict[str, Bundle], tmp_path: Path) -> None:
    root = _copy_sources(tmp_path)
    for package in PACKAGES:
        again = build.function_zip(package, root=root, build_dir=tmp_path / "build")
        assert again.name == bundles[package].code_zip.name
        assert again.read_bytes() == bundles[package].code_zip.read_bytes(), package
        with zipfile.ZipFile(again) as zf:
            for info in zf.infolist():
                assert info.date_time == (1980, 1, 1, 0, 0, 0)
                assert info.external_attr >> 16 == 0o100644


def test_a_layer_zip_is_rebuilt_to_the_same_bytes(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    # the extracted tree has other mtimes and modes, and lives elsewhere
    original = bundles["promote"].layer_zip
    again = build.zip_tree(
        bundles["promote"].layer / "python", tmp_path / "again.zip", prefix="python"
    )
    assert again.read_bytes() == original.read_bytes()
    assert build.asset_hash(again) == build.asset_hash(original)


def test_the_training_tarball_is_deterministic(tmp_path: Path) -> None:
    first = build.training_source_tarball(build_dir=tmp_path / "one")
    root = _copy_sources(tmp_path)
    second = build.training_source_tarball(root=root, build_dir=tmp_path / "two")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime
    with tarfile.open(first) as tar:
        for member in tar.getmembers():
            assert (member.mtime, member.uid, member.gid, member.uname) == (0, 0, 0, ""), member
            assert member.mode == (0o755 if member.isdir() else 0o644), member.name


# --- the SageMaker training source ------------------------------------------------------------


def _members(tarball: Path) -> list[str]:
    with tarfile.open(tarball) as tar:
        return [m.name for m in tar.getmembers()]


def test_the_training_tarball_layout(tmp_path: Path) -> None:
    tarball = build.training_source_tarball()
    assert tarball == ROOT / ".build" / "training" / "sourcedir.tar.gz"
    names = _members(tarball)
    files = [n for n in names if not n.endswith("/")]
    assert {"train.py", "requirements.txt", "functions/__init__.py"} <= set(files)
    assert "functions/shared/__init__.py" in files
    assert "functions/training/train.py" in files
    tops = {n.split("/")[0] for n in names}
    assert tops == {"train.py", "requirements.txt", "functions"}
    assert {n.split("/")[1] for n in names if n.count("/") >= 1} == {
        "__init__.py",
        "shared",
        "training",
    }
    assert not [n for n in names if "tests" in n.split("/") or "__pycache__" in n]
    with tarfile.open(tarball) as tar:
        requirements = tar.extractfile("requirements.txt")
        assert requirements is not None
        assert requirements.read() == (ROOT / "functions/training/requirements.txt").read_bytes()


def test_the_training_tarball_runs_the_way_sagemaker_runs_it(tmp_path: Path) -> None:
    """Extracted, ``python train.py`` from its root (SageMaker's sagemaker_program) trains."""
    from functions.training.script_mode import SageMakerPaths
    from tests import datasets

    code = tmp_path / "code"
    with tarfile.open(build.training_source_tarball()) as tar:
        tar.extractall(code, filter="data")
    datasets.binary_numeric(tmp_path / "version", rows=400)
    paths = SageMakerPaths.for_version(tmp_path / "version", tmp_path / "job")
    paths.config.mkdir(parents=True)
    paths.hyperparameters_file.write_text(
        json.dumps({"n_estimators": "20", "early_stopping_rounds": "5"})
    )
    env = {
        **os.environ,
        "SM_CHANNEL_TRAIN": str(paths.train),
        "SM_CHANNEL_VALIDATION": str(paths.validation),
        "SM_MODEL_DIR": str(paths.model),
        "SM_OUTPUT_DIR": str(paths.output),
        "SM_INPUT_CONFIG_DIR": str(paths.config),
    }
    where = subprocess.run(
        [sys.executable, "-c", "import functions; print(functions.__file__)"],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(code)  # the tarball's, not this checkout's
    done = subprocess.run(
        [sys.executable, "train.py", "--n_estimators", "20"],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (paths.model / "model.onnx").is_file()
    assert (paths.model / "model_card.json").is_file()


def test_gzip_member_has_no_name(tmp_path: Path) -> None:
    with gzip.open(build.training_source_tarball()) as fh:
        fh.read(1)
    raw = build.training_source_tarball().read_bytes()
    assert raw[3] & 0x08 == 0  # FNAME flag clear: no file name in the gzip header
