"""Which distributions each function's layer installs, for the Lambda platform: the deployed
functions and their pyproject.toml extras, constraints.txt's pins, the Python that runs pip,
and the resolution (cached per layer under ``.build/layers/``).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layers.archive import ROOT, BuildError, _build, _write_atomic

# The Lambda platform: the python3.12 runtime (Amazon Linux 2023, glibc 2.34) on x86_64. Wheels
# are accepted up to manylinux_2_28. pip 23 does NOT widen one --platform to the older manylinux
# tags (checked: with only manylinux_2_28_x86_64, pydantic-core's manylinux_2_17 wheel is
# skipped), so every tag a glibc-2.28 system accepts is listed, newest first.
# (uv's --python-platform would do without the list: measured, not adopted, see
# docs/decisions/2026-12-04-layers-keep-pip-platform-tags.md.)
PYTHON_VERSION = "3.12"
IMPLEMENTATION = "cp"
PLATFORMS: tuple[str, ...] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)


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
