"""Deployment artifacts for the Lambda platform and the SageMaker training job.

* ``layer_zip(function)``: the function's dependency layer (``python/<packages>``), built for
  Python 3.12 / x86_64 / manylinux_2_28 from pyproject.toml's base dependencies plus the
  function's extra, every version pinned by constraints.txt, then trimmed (``TRIMS``).
* ``function_zip(function)``: the function's code (``functions/__init__.py``,
  ``functions/shared/``, ``functions/<package>/``) at the zip root.
* ``training_source_tarball()``: SageMaker's ``sourcedir.tar.gz`` (``train.py`` shim,
  ``requirements.txt``, ``functions/{__init__.py,shared,training}``).

Everything lands under ``.build/`` and is deterministic: sorted entries, fixed timestamps, fixed
permissions, so the same inputs give the same bytes on every machine with the same zlib. The CDK
asset hash can also be pinned with ``asset_hash``, which reads entries, not compressed bytes.

A layer is rebuilt only when its key changes: the resolved pins, the platform tags, the Python
version, the ``NO_DEPS`` policy or the trim rules. Resolving (which pins a layer needs) asks the
package index once and is cached per layer; the cache stays valid while constraints.txt pins
every resolved package to the same version, so an unrelated pin change costs nothing.

``python -m layers.build`` builds everything and prints the size table (``--trims`` adds what
each trim rule removed).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR_NAME = ".build"

# The Lambda platform: the python3.12 runtime (Amazon Linux 2023, glibc 2.34) on x86_64. Wheels
# are accepted up to manylinux_2_28. pip 23 does NOT widen one --platform to the older manylinux
# tags (checked: with only manylinux_2_28_x86_64, pydantic-core's manylinux_2_17 wheel is
# skipped), so every tag a glibc-2.28 system accepts is listed, newest first.
PYTHON_VERSION = "3.12"
IMPLEMENTATION = "cp"
PLATFORMS: tuple[str, ...] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)

MIB = 1024 * 1024
# Lambda counts its limit in MiB: "Unzipped size must be smaller than 262144000 bytes" (250 MiB)
# for the function's code plus all its layers. sluice keeps a 50 MiB margin below it.
LAMBDA_LIMIT_BYTES = 250 * MIB
BUDGET_BYTES = 200 * MIB

# Bump when the build procedure changes in a way the key does not otherwise see.
FORMAT = 1
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")


class BuildError(RuntimeError):
    """An artifact could not be built; the message says why."""


@dataclass(frozen=True)
class FunctionSpec:
    """One deployed Lambda function: its code package under ``functions/``, the pyproject.toml
    extras its layer installs on top of the base dependencies, and its handler string. Its
    code is ``functions/shared/`` and its package, nothing from another package."""

    name: str
    package: str
    extras: tuple[str, ...]
    handler: str
    # Ship the layer's bytecode, compiled by Lambda's Python version (``layer_bytecode``).
    bytecode: bool = False

    @property
    def handler_module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_function(self) -> str:
        return self.handler.rsplit(".", 1)[1]


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec(
            "preprocess",
            "preprocess",
            ("preprocess",),
            "functions.preprocess.handler.lambda_handler",
        ),
        FunctionSpec(
            "evaluate", "evaluate", ("evaluate",), "functions.evaluate.handler.lambda_handler"
        ),
        # promote and reject: one code package and one layer, two handler strings
        FunctionSpec(
            "promote", "promote", ("promote",), "functions.promote.handler.promote_handler"
        ),
        FunctionSpec("reject", "promote", ("promote",), "functions.promote.handler.reject_handler"),
        # the API's cold start: its layer ships .pyc (README.md, "bytecode")
        FunctionSpec(
            "inference",
            "inference",
            ("inference",),
            "functions.inference.handler.lambda_handler",
            bytecode=True,
        ),
        FunctionSpec("batch", "batch", ("batch",), "functions.batch.handler.lambda_handler"),
        FunctionSpec("drift", "drift", ("drift",), "functions.drift.handler.lambda_handler"),
        # retrain only talks to AWS (boto3, as promote)
        FunctionSpec(
            "retrain", "retrain", ("promote",), "functions.retrain.handler.lambda_handler"
        ),
    )
}

# Distributions installed without the dependencies they declare, with the ones kept anyway.
# onnxruntime 1.31.1 declares flatbuffers, numpy, packaging and protobuf (sympy and ml_dtypes
# only under its "symbolic"/"quantization" extras). `import onnxruntime` and an InferenceSession
# need none of them: flatbuffers, packaging and protobuf are used only by its offline tools
# (onnxruntime.tools, .transformers, .quantization, .backend), which import onnx, not shipped
# either. numpy is needed, and every layer already has it from the base dependencies.
# tests/infra/test_bundles.py runs sluice's real models through the layer to prove it.
NO_DEPS: dict[str, frozenset[str]] = {"onnxruntime": frozenset({"numpy"})}


@dataclass(frozen=True)
class TrimRule:
    """Paths removed from a layer after installation. Patterns are ``fnmatch`` patterns matched
    against the path relative to ``python/`` (``*`` also matches ``/``); a matching directory
    goes whole."""

    name: str
    patterns: tuple[str, ...]
    reason: str
    keep: tuple[str, ...] = ()  # exceptions: a path matching one of these stays

    def matches(self, relative: str) -> bool:
        return any(fnmatch.fnmatchcase(relative, p) for p in self.patterns) and not any(
            fnmatch.fnmatchcase(relative, p) for p in self.keep
        )


# The AWS services whose botocore models a layer keeps: those sluice's functions create clients
# for (tests/infra/test_bundles.py checks this against every boto3.client("...") in functions/),
# and "xray": aws-xray-sdk's sampler creates an X-Ray client when Powertools' Tracer is built,
# which is at import of functions.shared.observability, in every function.
AWS_SERVICES: tuple[str, ...] = (
    "cloudwatch",
    "dynamodb",
    "s3",
    "sns",
    "stepfunctions",
    "xray",
)


TRIMS: tuple[TrimRule, ...] = (
    TrimRule(
        "console scripts",
        ("bin",),
        "pip --target puts entry-point scripts in python/bin with this machine's interpreter in "
        "the shebang (machine-specific bytes); /opt/python/bin is not on Lambda's PATH anyway",
    ),
    TrimRule(
        "bytecode",
        ("__pycache__", "*/__pycache__", "*.pyc"),
        "pip runs with --no-compile; .pyc stamps would not match the mtimes Lambda gives the "
        "extracted files, so they would never be used",
    ),
    TrimRule(
        "test suites",
        ("*/tests", "pyarrow/_pyarrow_cpp_tests*"),
        "pandas, numpy and pyarrow ship their own test suites; nothing imports them at run time "
        "(only directories inside a package: no distribution here has a top-level 'tests')",
    ),
    TrimRule(
        "C/C++/Cython sources, headers, static libraries",
        ("*.h", "*.hpp", "*.c", "*.cc", "*.cpp", "*.pxd", "*.pyx", "*.pxi", "*.a"),
        "for compiling extensions against numpy/pyarrow, never read at run time",
    ),
    TrimRule(
        "pyarrow Flight",
        (
            "pyarrow/libarrow_flight.so*",
            "pyarrow/libarrow_python_flight.so*",
            "pyarrow/_flight.*.so",
        ),
        "Arrow Flight RPC: only pyarrow._flight links it and sluice never imports pyarrow.flight",
    ),
    TrimRule(
        "pyarrow S3 filesystem",
        ("pyarrow/libarrow_s3.so*", "pyarrow/_s3fs.*.so"),
        "sluice reads and writes S3 through boto3; only pyarrow._s3fs links libarrow_s3, and "
        "pyarrow.fs treats a missing _s3fs as 'S3FileSystem not built'",
    ),
    TrimRule(
        "pyarrow link-time copies",
        ("pyarrow/libarrow_python*.so", "pyarrow/libarrow_python*.so.*.*.*"),
        "the wheel carries libarrow_python*.so three times (no symlinks in a wheel); the loader "
        "only opens the soname, libarrow_python*.so.<major>",
    ),
    TrimRule(
        "onnxruntime C API library",
        ("onnxruntime/capi/libonnxruntime.so.*",),
        "the C/C++ API for native programs; the Python binding (onnxruntime_pybind11_state) "
        "links the runtime statically and neither needs nor opens it",
    ),
    TrimRule(
        "onnxruntime offline tools",
        (
            "onnxruntime/transformers",
            "onnxruntime/quantization",
            "onnxruntime/tools",
            "onnxruntime/backend",
        ),
        "model conversion, quantization and the ONNX backend API: they import onnx, sympy or "
        "protobuf, none of which is in a layer, and InferenceSession uses none of them",
    ),
    TrimRule(
        "botocore models of unused services",
        ("botocore/data/*",),
        "botocore ships ~400 service models; sluice's functions and aws-xray-sdk create "
        f"clients for {', '.join(AWS_SERVICES)} only. The partition, endpoint, retry and "
        "default-configuration files stay",
        keep=(
            "botocore/data/*.json",
            *(f"botocore/data/{service}" for service in AWS_SERVICES),
            *(f"botocore/data/{service}/*" for service in AWS_SERVICES),
        ),
    ),
)


# ---------------------------------------------------------------------------------------------
# pyproject.toml and constraints.txt


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return normalize(re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0])


def _pyproject(root: Path) -> dict[str, Any]:
    with (root / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def requirements(function: str, *, root: Path = ROOT) -> list[str]:
    """The top-level requirements of the function's layer: pyproject.toml's base dependencies
    plus its extras, as written there (sorted, each distribution once)."""
    spec = spec_for(function)
    project = _pyproject(root)["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    chosen: dict[str, str] = {}
    for group in ("", *spec.extras):
        if group and group not in optional:
            raise BuildError(f"pyproject.toml has no extra {group!r} (function {spec.name})")
        for requirement in project["dependencies"] if not group else optional[group]:
            name = _requirement_name(requirement)
            if name in chosen and chosen[name] != requirement:
                raise BuildError(f"{name} is required twice: {chosen[name]!r}, {requirement!r}")
            chosen[name] = requirement
    return [chosen[name] for name in sorted(chosen)]


def constraints(*, root: Path = ROOT) -> dict[str, str]:
    """constraints.txt as {normalized name: pinned version}."""
    pins: dict[str, str] = {}
    for raw in (root / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise BuildError(f"constraints.txt: not an exact pin: {raw!r}")
        pins[normalize(name.split("[")[0])] = version.strip()
    return pins


def spec_for(function: str) -> FunctionSpec:
    try:
        return FUNCTIONS[function]
    except KeyError:
        raise BuildError(f"unknown function {function!r}; known: {sorted(FUNCTIONS)}") from None


# ---------------------------------------------------------------------------------------------
# The interpreter that runs pip


def lambda_python() -> Path | None:
    """A CPython 3.12 (Lambda's runtime version): $SLUICE_PYTHON312, python3.12 on PATH, or one
    of pyenv's. None if there is none."""
    candidates = [
        os.environ.get("SLUICE_PYTHON312"),
        shutil.which(f"python{PYTHON_VERSION}"),
        *sorted(
            glob.glob(
                os.path.expanduser(
                    f"~/.pyenv/versions/{PYTHON_VERSION}.*/bin/python{PYTHON_VERSION}"
                )
            ),
            reverse=True,
        ),
    ]
    for candidate in candidates:
        if candidate and _runs_python(candidate):
            return Path(candidate)
    return None


@functools.cache
def _runs_python(candidate: str) -> bool:
    """Whether ``candidate`` runs and is Python 3.12 with pip (a pyenv shim may not run)."""
    wanted = tuple(int(part) for part in PYTHON_VERSION.split("."))
    check = f"import sys, pip; sys.exit(sys.version_info[:2] != {wanted})"
    try:
        done = subprocess.run(
            [candidate, "-c", check], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _pip_python() -> Path:
    """pip evaluates environment markers for the interpreter it runs in, whatever
    --python-version says (checked with pip 23.2), so resolve with a 3.12 where there is one."""
    found = lambda_python()
    if found is not None:
        return found
    print(
        f"layers: no python{PYTHON_VERSION} found (set SLUICE_PYTHON312); running pip with "
        f"Python {sys.version_info.major}.{sys.version_info.minor}, whose environment markers "
        "may differ from the Lambda runtime's",
        file=sys.stderr,
    )
    return Path(sys.executable)


def _platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--implementation", IMPLEMENTATION]
    args += ["--python-version", PYTHON_VERSION]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def _pip(python: Path, args: Sequence[str], *, what: str) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise BuildError(f"pip failed while {what} (exit {done.returncode}):\n{tail}")


# ---------------------------------------------------------------------------------------------
# Resolution: the exact set of distributions a layer installs


def _platform_identity() -> dict[str, Any]:
    return {
        "python": PYTHON_VERSION,
        "implementation": IMPLEMENTATION,
        "platforms": list(PLATFORMS),
        "no_deps": {name: sorted(kept) for name, kept in sorted(NO_DEPS.items())},
    }


def resolve(function: str, *, root: Path = ROOT, build_dir: Path | None = None) -> dict[str, str]:
    """{normalized name: version} of every distribution in the function's layer.

    pip resolves the requirements (minus ``NO_DEPS`` distributions) for the Lambda platform
    under constraints.txt; each ``NO_DEPS`` distribution is then added alone. Every resolved
    distribution must be pinned in constraints.txt. Cached in ``.build/layers/<package>
    .resolved.json`` while the requirements, the platform and those pins are unchanged."""
    spec = spec_for(function)
    top = requirements(function, root=root)
    pinned = constraints(root=root)
    cache = _build(root, build_dir) / "layers" / f"{spec.package}.resolved.json"
    identity = {"requirements": top, **_platform_identity()}
    if cache.is_file():
        stored = json.loads(cache.read_text())
        pins: dict[str, str] = stored.get("pins", {})
        if stored.get("identity") == identity and all(
            pinned.get(name) == version for name, version in pins.items()
        ):
            return pins
    pins = _resolve_with_pip(top, root)
    for name, version in pins.items():
        if pinned.get(name) != version:
            raise BuildError(
                f"{spec.package} layer: pip chose {name}=={version} but constraints.txt pins "
                f"{pinned.get(name, 'nothing')}; re-pin with `make lock`"
            )
    cache.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(cache, json.dumps({"identity": identity, "pins": pins}, indent=2) + "\n")
    return pins


def _resolve_with_pip(top: Sequence[str], root: Path) -> dict[str, str]:
    with_deps = [r for r in top if _requirement_name(r) not in NO_DEPS]
    alone = [r for r in top if _requirement_name(r) in NO_DEPS]
    pins: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        args = ["install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report)]
        args += ["--target", str(Path(tmp) / "target"), *_platform_args()]
        args += ["-c", str(root / "constraints.txt"), *with_deps]
        _pip(_pip_python(), args, what=f"resolving {' '.join(with_deps)}")
        for item in json.loads(report.read_text())["install"]:
            pins[normalize(item["metadata"]["name"])] = item["metadata"]["version"]
    pinned = constraints(root=root)
    for requirement in alone:
        name = _requirement_name(requirement)
        version = pinned.get(name)
        if version is None:
            raise BuildError(f"{name} is installed without dependencies but is not pinned")
        pins[name] = version
        missing = NO_DEPS[name] - pins.keys()
        if missing:
            raise BuildError(f"{name} keeps {sorted(missing)}, which nothing else installs")
    return dict(sorted(pins.items()))


# ---------------------------------------------------------------------------------------------
# Layers


def _trim_identity() -> list[list[object]]:
    return [[rule.name, list(rule.patterns), list(rule.keep)] for rule in TRIMS]


def layer_key(pins: Mapping[str, str], bytecode: str | None = None) -> str:
    """What a layer's bytes depend on, hashed: pins, platform, NO_DEPS, trim rules, FORMAT, and
    the Python release that compiled its bytecode, if it ships any."""
    identity = {
        "format": FORMAT,
        "pins": dict(sorted(pins.items())),
        **_platform_identity(),
        "trims": _trim_identity(),
        **({"bytecode": bytecode} if bytecode else {}),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def bytecode_compiler(spec: FunctionSpec) -> tuple[Path, str] | None:
    """The Python 3.12 that compiles the layer's bytecode and its exact release, when the
    function ships bytecode and there is one here; else None (the layer ships sources only and
    says so in its manifest)."""
    if not spec.bytecode:
        return None
    python = lambda_python()
    if python is None:
        print(
            f"layers: no python{PYTHON_VERSION} found (set SLUICE_PYTHON312); the "
            f"{spec.package} layer ships without bytecode and its cold start compiles it",
            file=sys.stderr,
        )
        return None
    return python, _release(python)


@functools.cache
def _release(python: Path) -> str:
    """``3.12.1``: asked once per interpreter, not at every ``layer_zip`` (synth asks per
    function)."""
    return subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def layer_bytecode(tree: Path, python: Path) -> None:
    """Compile every module of ``tree`` (a layer's ``python/``) with Lambda's Python into
    ``__pycache__/*.cpython-312.pyc``, checked by nothing at import (PEP 552
    ``unchecked-hash``): Lambda gives the extracted files mtimes the build cannot know, so a
    timestamp-checked .pyc would never be used. Paths inside the bytecode are the runtime's
    (``/opt/python/...``), so tracebacks read as on Lambda. The bytes are the same on every run
    with the same sources and release."""
    command = [
        str(python), "-m", "compileall", "-q", "-j", "0",
        "--invalidation-mode", "unchecked-hash", "-s", str(tree), "-p", "/opt/python", str(tree),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    # compileall exits 1 when a module does not compile (a vendored Python 2 file, a template):
    # such a module is compiled at import if anything imports it, as without bytecode.
    if done.returncode not in (0, 1):
        raise BuildError(f"compiling the layer's bytecode failed: {done.stderr[-2000:]}")


def layer_zip(function: str, *, root: Path = ROOT, build_dir: Path | None = None) -> Path:
    """The function's dependency layer, ``python/<packages>``; built if its key is new."""
    spec = spec_for(function)
    pins = resolve(function, root=root, build_dir=build_dir)
    layers = _build(root, build_dir) / "layers"
    compiler = bytecode_compiler(spec)
    release = compiler[1] if compiler else None
    stem = f"{spec.package}-{layer_key(pins, release)[:16]}"
    target = layers / f"{stem}.zip"
    if target.is_file() and (layers / f"{stem}.json").is_file():
        return target
    layers.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=layers) as tmp:
        tree = Path(tmp) / "python"
        requirements_txt = Path(tmp) / "requirements.txt"
        requirements_txt.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        args = ["install", "--quiet", "--no-deps", "--no-compile", "--target", str(tree)]
        args += [*_platform_args(), "-r", str(requirements_txt)]
        _pip(_pip_python(), args, what=f"installing the {spec.package} layer")
        _check_installed(tree, pins)
        before = _tree_size(tree)
        trimmed = trim(tree)
        sources = _tree_size(tree)
        if compiler is not None:
            layer_bytecode(tree, compiler[0])
        manifest = {
            "package": spec.package,
            "key": layer_key(pins, release),
            "pins": pins,
            "bytes_installed": before,
            "bytes_trimmed": trimmed,
            "bytecode": release,  # the Python release that compiled it; None: sources only
            "bytes_bytecode": _tree_size(tree) - sources,
            "bytes": _tree_size(tree),
        }
        zip_tree(tree, target, prefix="python")
        _write_atomic(layers / f"{stem}.json", json.dumps(manifest, indent=2) + "\n")
    _prune(layers, spec.package, keep=stem)
    return target


def layer_manifest(function: str, *, root: Path = ROOT, build_dir: Path | None = None) -> Any:
    """The build record next to the layer zip: pins, sizes before trimming, bytes per trim."""
    return json.loads(
        layer_zip(function, root=root, build_dir=build_dir).with_suffix(".json").read_text()
    )


def install_for_platform(
    requirements: Sequence[str],
    target: Path,
    *,
    deps: bool = True,
    bytecode: bool = False,
    root: Path = ROOT,
) -> dict[str, str]:
    """``pip install --target`` of ``requirements`` for the Lambda platform under
    constraints.txt, untrimmed; returns {normalized name: version} of what landed there.
    ``deps=False``: these distributions alone; ``bytecode=True``: the .pyc files pip compiles by
    default, as a plain ``pip install -t`` leaves them. For trees that are not a function's
    layer (bench/size.py's peer and floor)."""
    args = ["install", "--quiet", "--target", str(target), *_platform_args()]
    args += ["-c", str(root / "constraints.txt"), *([] if deps else ["--no-deps"])]
    args += [] if bytecode else ["--no-compile"]
    _pip(_pip_python(), [*args, *requirements], what=f"installing {' '.join(requirements)}")
    return installed_pins(target)


def installed_pins(tree: Path) -> dict[str, str]:
    """{normalized name: version} of the distributions installed in ``tree``."""
    installed = {}
    for info in tree.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        installed[normalize(name)] = version
    return dict(sorted(installed.items()))


def _check_installed(tree: Path, pins: Mapping[str, str]) -> None:
    installed = installed_pins(tree)
    if installed != dict(pins):
        raise BuildError(f"installed {installed} is not the resolved {dict(pins)}")


def trim(tree: Path) -> dict[str, int]:
    """Apply ``TRIMS`` to an installed tree; returns the bytes each rule removed."""
    saved = {rule.name: 0 for rule in TRIMS}
    for dirpath, dirnames, filenames in os.walk(tree):
        here = Path(dirpath)
        relative = PurePosixPath(here.relative_to(tree).as_posix())
        for name in sorted(dirnames):
            rule = _rule_for((relative / name).as_posix())
            if rule is not None:
                saved[rule.name] += _tree_size(here / name)
                shutil.rmtree(here / name)
                dirnames.remove(name)
        for name in filenames:
            rule = _rule_for((relative / name).as_posix())
            if rule is not None:
                saved[rule.name] += (here / name).lstat().st_size
                (here / name).unlink()
    return saved


def _rule_for(relative: str) -> TrimRule | None:
    return next((rule for rule in TRIMS if rule.matches(relative)), None)


# ---------------------------------------------------------------------------------------------
# Function code


def _code_files(root: Path, spec: FunctionSpec) -> list[tuple[str, Path]]:
    """(arcname, path) of a function's code: functions/__init__.py, shared/ and its package."""
    functions = root / "functions"
    files = [("functions/__init__.py", functions / "__init__.py")]
    for sub in ("shared", spec.package):
        files += [(f"functions/{sub}/{rel}", path) for rel, path in _source_tree(functions / sub)]
    return sorted(files)


def _source_tree(directory: Path) -> Iterator[tuple[str, Path]]:
    """Files under ``directory`` minus bytecode and hidden files (editor swap files, .DS_Store)."""
    if not directory.is_dir():
        raise BuildError(f"no such package: {directory}")
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in {".pyc", ".pyo"}:
            yield relative.as_posix(), path


def _hash_files(files: Iterable[tuple[str, Path]]) -> str:
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    for arcname, path in files:
        content = path.read_bytes()
        digest.update(f"{arcname}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def function_zip(function: str, *, root: Path = ROOT, build_dir: Path | None = None) -> Path:
    """The function's code zip (``functions/...`` at its root); rebuilt when a source changes."""
    spec = spec_for(function)
    files = _code_files(root, spec)
    out = _build(root, build_dir) / "functions"
    stem = f"{spec.package}-{_hash_files(files)[:16]}"
    target = out / f"{stem}.zip"
    if not target.is_file():
        _write_zip(target, files)
        _prune(out, spec.package, keep=stem)
    return target


# ---------------------------------------------------------------------------------------------
# SageMaker training source

TRAIN_SHIM = (
    '"""SageMaker runs `python train.py` here (sagemaker_program); the code is in functions/."""\n'
    "import sys\n"
    "from functions.training.train import main\n"
    "sys.exit(main())\n"
)


def training_source_tarball(*, root: Path = ROOT, build_dir: Path | None = None) -> Path:
    """``.build/training/sourcedir.tar.gz``: ``train.py`` (a shim running
    ``functions.training.train.main``), ``requirements.txt`` (functions/training's, installed by
    the training toolkit before it runs train.py), ``functions/{__init__.py,shared,training}``.
    Deterministic: sorted, mtime 0, uid/gid 0, no gzip name or timestamp."""
    functions = root / "functions"
    entries: list[tuple[str, bytes]] = [
        ("train.py", TRAIN_SHIM.encode()),
        ("requirements.txt", (functions / "training" / "requirements.txt").read_bytes()),
        ("functions/__init__.py", (functions / "__init__.py").read_bytes()),
    ]
    for sub in ("shared", "training"):
        entries += [
            (f"functions/{sub}/{rel}", path.read_bytes())
            for rel, path in _source_tree(functions / sub)
        ]
    entries.sort()
    directories = sorted(
        {str(parent) for name, _ in entries for parent in PurePosixPath(name).parents} - {"."}
    )
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name in directories:
            tar.addfile(_tarinfo(name, tarfile.DIRTYPE, 0o755, 0))
        for name, content in entries:
            tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(content)), io.BytesIO(content))
    target = _build(root, build_dir) / "training" / "sourcedir.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_bytes() != raw.getvalue():
        _write_atomic(target, raw.getvalue())
    return target


def _tarinfo(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# ---------------------------------------------------------------------------------------------
# Deterministic zips, sizes


def zip_tree(tree: Path, target: Path, *, prefix: str = "") -> Path:
    """Zip every file under ``tree`` as ``<prefix>/<relative path>``, deterministically."""
    files = []
    for path in tree.rglob("*"):
        if path.is_symlink():
            raise BuildError(f"symlink in a layer tree: {path}")
        if path.is_file():
            relative = path.relative_to(tree).as_posix()
            files.append((f"{prefix}/{relative}" if prefix else relative, path))
    _write_zip(target, sorted(files))
    return target


def _write_zip(target: Path, files: Sequence[tuple[str, Path]]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for arcname, path in sorted(files):
                info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
                info.create_system = 3  # unix, so external_attr carries the mode
                mode = 0o755 if _SHARED_LIBRARY.search(arcname) else 0o644
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes(), compresslevel=6)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unzipped_size(path: Path) -> int:
    """Bytes once extracted: a zip's or tarball's members, or a directory's files."""
    if path.is_dir():
        return _tree_size(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist() if not info.is_dir())
    with tarfile.open(path) as tar:
        return sum(member.size for member in tar.getmembers() if member.isfile())


def asset_hash(path: Path) -> str:
    """sha256 over a zip's entries (name, mode, content), not its compressed bytes: the same on
    any machine even where zlib compresses differently. For CDK's ``asset_hash``."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            digest.update(f"{info.filename}\0{info.external_attr >> 16:o}\0".encode())
            digest.update(hashlib.sha256(archive.read(info)).digest())
    return digest.hexdigest()


def _tree_size(tree: Path) -> int:
    if tree.is_file():
        return tree.stat().st_size
    return sum(p.lstat().st_size for p in tree.rglob("*") if p.is_file() or p.is_symlink())


def _build(root: Path, build_dir: Path | None) -> Path:
    return build_dir if build_dir is not None else root / BUILD_DIR_NAME


def _write_atomic(target: Path, content: str | bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode() if isinstance(content, str) else content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def _prune(directory: Path, package: str, *, keep: str) -> None:
    """Drop the superseded builds of one package (same name, another key)."""
    for stale in directory.glob(f"{package}-*"):
        if (
            stale.is_file()
            and stale.stem != keep
            and re.fullmatch(r"[0-9a-f]{16}", stale.stem[len(package) + 1 :])
        ):
            stale.unlink()


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class Sizes:
    function: str
    code_bytes: int
    layer_bytes: int
    zipped_bytes: int
    layer_installed_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.code_bytes + self.layer_bytes


def sizes(function: str, *, root: Path = ROOT, build_dir: Path | None = None) -> Sizes:
    """Build (or reuse) the function's code and layer zips and measure them."""
    code = function_zip(function, root=root, build_dir=build_dir)
    layer = layer_zip(function, root=root, build_dir=build_dir)
    manifest = json.loads(layer.with_suffix(".json").read_text())
    return Sizes(
        function=function,
        code_bytes=unzipped_size(code),
        layer_bytes=unzipped_size(layer),
        zipped_bytes=code.stat().st_size + layer.stat().st_size,
        layer_installed_bytes=int(manifest["bytes_installed"]),
    )


def _mb(size: int) -> str:
    return f"{size / MIB:.1f}"


def report(rows: Sequence[Sizes], tarball: Path | None = None) -> str:
    head = ("function", "code MB", "layer MB", "total MB", "zipped MB", "untrimmed MB", "limit")
    lines = [head]
    for row in rows:
        lines.append(
            (
                row.function,
                _mb(row.code_bytes),
                _mb(row.layer_bytes),
                _mb(row.total_bytes),
                _mb(row.zipped_bytes),
                _mb(row.code_bytes + row.layer_installed_bytes),
                f"{BUDGET_BYTES // MIB} ({LAMBDA_LIMIT_BYTES // MIB})",
            )
        )
    if tarball is not None:
        size = unzipped_size(tarball)
        lines.append(
            ("training src", _mb(size), "-", _mb(size), _mb(tarball.stat().st_size), "-", "-")
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.append(
        f"MB = 2^20 bytes, unzipped (as Lambda counts); limit: sluice's budget "
        f"({BUDGET_BYTES // MIB}) and Lambda's hard limit ({LAMBDA_LIMIT_BYTES // MIB}) for "
        "code + layers"
    )
    return "\n".join(text)


def trim_report(
    functions: Iterable[str], *, root: Path = ROOT, build_dir: Path | None = None
) -> str:
    lines = []
    seen: set[str] = set()
    for function in functions:
        package = spec_for(function).package
        if package in seen:
            continue
        seen.add(package)
        manifest = layer_manifest(function, root=root, build_dir=build_dir)
        lines.append(
            f"{package} layer: {_mb(manifest['bytes_installed'])} MB installed -> "
            f"{_mb(manifest['bytes'])} MB"
        )
        for rule, removed in manifest["bytes_trimmed"].items():
            lines.append(f"  {rule:<50} -{_mb(removed):>6} MB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m layers.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trims", action="store_true", help="also print what each trim removed")
    args = parser.parse_args(argv)
    try:
        rows = [sizes(function) for function in FUNCTIONS]
        tarball = training_source_tarball()
    except BuildError as exc:
        print(f"layers: {exc}", file=sys.stderr)
        return 1
    print(report(rows, tarball))
    if args.trims:
        print()
        print(trim_report(FUNCTIONS))
    over = [row for row in rows if row.total_bytes > BUDGET_BYTES]
    for row in over:
        print(
            f"layers: {row.function} is {_mb(row.total_bytes)} MB unzipped, over the "
            f"{BUDGET_BYTES // MIB} MB budget",
            file=sys.stderr,
        )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
