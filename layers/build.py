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

The code is split along its seams: :mod:`layers.resolve` (the functions, the platform, which
pins a layer installs), :mod:`layers.trim` (what is removed from a layer) and
:mod:`layers.archive` (deterministic zips and tarballs, sizes, the ``.build/`` tree). This
module puts them together per function and keeps every name importable from
``layers.build``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layers.archive import (
    BUILD_DIR_NAME,
    FORMAT,
    ROOT,
    TRAIN_SHIM,
    ZIP_DATE,
    BuildError,
    _build,
    _prune,
    _source_tree,
    _tree_size,
    _write_atomic,
    _write_zip,
    asset_hash,
    training_source_tarball,
    unzipped_size,
    zip_tree,
)
from layers.resolve import (
    FUNCTIONS,
    IMPLEMENTATION,
    NO_DEPS,
    PLATFORMS,
    PYTHON_VERSION,
    FunctionSpec,
    _check_installed,
    _pip,
    _pip_python,
    _platform_args,
    _platform_identity,
    constraints,
    install_for_platform,
    installed_pins,
    lambda_python,
    normalize,
    requirements,
    resolve,
    spec_for,
)
from layers.trim import AWS_SERVICES, TRIMS, TrimRule, _trim_identity, trim

__all__ = [
    "AWS_SERVICES",
    "BUDGET_BYTES",
    "BUILD_DIR_NAME",
    "FORMAT",
    "FUNCTIONS",
    "IMPLEMENTATION",
    "LAMBDA_LIMIT_BYTES",
    "MIB",
    "NO_DEPS",
    "PLATFORMS",
    "PYTHON_VERSION",
    "ROOT",
    "TRAIN_SHIM",
    "TRIMS",
    "ZIP_DATE",
    "BuildError",
    "FunctionSpec",
    "Sizes",
    "TrimRule",
    "asset_hash",
    "bytecode_compiler",
    "constraints",
    "function_zip",
    "install_for_platform",
    "installed_pins",
    "lambda_python",
    "layer_bytecode",
    "layer_key",
    "layer_manifest",
    "layer_zip",
    "main",
    "normalize",
    "report",
    "requirements",
    "resolve",
    "sizes",
    "spec_for",
    "training_source_tarball",
    "trim",
    "trim_report",
    "unzipped_size",
    "zip_tree",
]

MIB = 1024 * 1024
# Lambda counts its limit in MiB: "Unzipped size must be smaller than 262144000 bytes" (250 MiB)
# for the function's code plus all its layers. sluice keeps a 50 MiB margin below it.
LAMBDA_LIMIT_BYTES = 250 * MIB
BUDGET_BYTES = 200 * MIB


# ---------------------------------------------------------------------------------------------
# Layers


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


# ---------------------------------------------------------------------------------------------
# Function code


def _code_files(root: Path, spec: FunctionSpec) -> list[tuple[str, Path]]:
    """(arcname, path) of a function's code: functions/__init__.py, shared/ and its package."""
    functions = root / "functions"
    files = [("functions/__init__.py", functions / "__init__.py")]
    for sub in ("shared", spec.package):
        files += [(f"functions/{sub}/{rel}", path) for rel, path in _source_tree(functions / sub)]
    return sorted(files)


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
