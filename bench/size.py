"""Deployment size: the inference function's code + layer, unzipped as Lambda counts it, against
what a user would deploy instead and the smallest layer that can serve an ONNX model at all.

``python -m bench.size`` (``--quick`` changes nothing: a size has no smaller input). All sizes
are MiB (2^20 bytes, written "MB" as layers/build.py does), Lambda's unit: its hard limit is 250
MiB unzipped for a function's code plus all its layers.

* sluice: ``layers.build.sizes("inference")``, the code zip plus the trimmed layer (built, or
  reused from ``.build/layers/``). The other functions' totals are listed in the details.
* peer: scikit-learn, pandas, joblib, numpy and scipy (pinned by constraints.txt, with the
  dependencies they declare) installed with ``pip install --target`` for the same platform
  (CPython 3.12, manylinux x86_64 wheels), untrimmed, as a user's ``pip install -t`` leaves it:
  with the ``__pycache__`` pip compiles by default (the details give the size without it too,
  and whether that would fit), plus its handler module (bench/peer.py).
* floor: onnxruntime and numpy alone (what onnxruntime's ``NO_DEPS`` entry keeps) for the
  platform, trimmed by the same ``TRIMS`` as sluice's layers: trimming is open to anyone, so
  this is the least any ONNX-serving layer can weigh. No code counted.

The peer and floor trees are built once and their measurements cached in
``.build/bench/size/<name>-<key>.json``, the key being the requirements, their pins, the
platform (and for the floor the trim rules); a cached measurement stands while constraints.txt
pins every installed distribution to the version it was built with. A cached run takes under
a second; the first one downloads some 100 MB of wheels, installs and zips the trees (about 35 s
on 2 cores with pip's cache warm, more on a cold one), and building sluice's layers from an
empty ``.build/`` takes about 3 minutes more: over the suite's 60 s for this module, once.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.report import Figure, Section, run_cli
from layers import build
from layers.archive import _tree_size, _write_atomic
from layers.trim import _trim_identity

FUNCTION = "inference"
OTHERS = ("preprocess", "evaluate", "promote", "batch", "drift", "retrain")
PEER_DISTRIBUTIONS = ("scikit-learn", "pandas", "joblib", "numpy", "scipy")
PEER_CODE = (Path(__file__).with_name("peer.py"),)
FLOOR_DISTRIBUTION = "onnxruntime"
TARGET_MIB = 150.0
TOP = 8
CACHE_FORMAT = 1  # bump when what is measured changes in a way the key does not see
MIB = build.MIB


def measure(quick: bool = False) -> Section:
    """The size section (``quick`` is accepted for the suite and changes nothing)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    sluice = build.sizes(FUNCTION)
    layer = build.layer_zip(FUNCTION)
    sluice_top = _largest(_zip_files(layer, prefix="python/"))
    timings["sluice"] = time.perf_counter() - started

    started = time.perf_counter()
    peer = _cached_tree("peer", _peer_requirements(), deps=True, bytecode=True, trimmed=False)
    code_bytes = sum(path.stat().st_size for path in PEER_CODE)
    timings["peer"] = time.perf_counter() - started

    started = time.perf_counter()
    floor = _cached_tree("floor", _floor_requirements(), deps=False, bytecode=False, trimmed=True)
    timings["floor"] = time.perf_counter() - started

    started = time.perf_counter()
    others = {name: build.sizes(name) for name in OTHERS}
    timings["others"] = time.perf_counter() - started

    return _section(sluice, sluice_top, peer, code_bytes, floor, others, timings)


def _section(
    sluice: build.Sizes,
    sluice_top: dict[str, float],
    peer: dict[str, Any],
    peer_code_bytes: int,
    floor: dict[str, Any],
    others: Mapping[str, build.Sizes],
    timings: Mapping[str, float],
) -> Section:
    limit_mib = build.LAMBDA_LIMIT_BYTES / MIB
    total = sluice.total_bytes / MIB
    peer_total = (peer["bytes"] + peer_code_bytes) / MIB
    peer_zipped = (peer["zipped_bytes"] + peer_code_bytes) / MIB  # the code, as stored
    floor_total = floor["bytes"] / MIB
    peer_fits = peer_total <= limit_mib
    peer_no_bytecode = peer_total - peer["bytecode_bytes"] / MIB
    section = Section(
        "size",
        f"Deployment size: the {FUNCTION} function's code + layers for Lambda "
        "(py3.12, manylinux x86_64), MB = MiB",
    )
    section.add(
        Figure(
            "inference function + layers, unzipped",
            "MB",
            total,
            peer_total,
            floor_total,
            target=f"≤ {TARGET_MIB:g} MB",
            met=total <= TARGET_MIB,
            note=(
                f"Lambda's limit {limit_mib:g} MB: the peer (scikit-learn+pandas+scipy, pip -t, "
                f"untrimmed) {'fits' if peer_fits else 'does NOT fit'} "
                f"({peer_no_bytecode:.0f} MB without its bytecode); "
                "floor: onnxruntime+numpy, trimmed"
            ),
        )
    )
    section.add(
        Figure(
            "inference function + layers, zipped",
            "MB",
            sluice.zipped_bytes / MIB,
            peer_zipped,
            floor["zipped_bytes"] / MIB,
            note="deflate level 6 (layers/build.py's zips); Lambda's 50 MB zipped limit is "
            "for direct uploads only, layers go through S3",
        )
    )
    section.details = {
        "unit": "MB = MiB = 2^20 bytes, as Lambda counts its limits",
        "lambda_limit_mb": limit_mib,
        "sluice_budget_mb": build.BUDGET_BYTES / MIB,
        "sluice": {
            "code_mb": _mb(sluice.code_bytes),
            "layer_mb": _mb(sluice.layer_bytes),
            "layer_untrimmed_mb": _mb(sluice.layer_installed_bytes),
            "largest_distributions_mb": sluice_top,
        },
        "functions": {
            name: {
                "total_mb": _mb(row.total_bytes),
                "zipped_mb": _mb(row.zipped_bytes),
                "fits_lambda_limit": row.total_bytes <= build.LAMBDA_LIMIT_BYTES,
            }
            for name, row in {FUNCTION: sluice, **others}.items()
        },
        "peer": {
            "what": "pip install --target of "
            + ", ".join(PEER_DISTRIBUTIONS)
            + " with their dependencies, untrimmed (bytecode included, pip's default), plus "
            "bench/peer.py",
            "pins": peer["pins"],
            "fits_lambda_limit": peer_fits,
            "over_limit_mb": round(max(0.0, peer_total - limit_mib), 1),
            "bytecode_mb": _mb(peer["bytecode_bytes"]),
            "without_bytecode_mb": round(peer_no_bytecode, 1),
            "fits_lambda_limit_without_bytecode": peer_no_bytecode <= limit_mib,
            "largest_distributions_mb": peer["largest"],
            "cached": peer["cached"],
        },
        "floor": {
            "what": "onnxruntime + numpy alone, trimmed with layers/build.py's TRIMS, no code",
            "pins": floor["pins"],
            "untrimmed_mb": _mb(floor["bytes_installed"]),
            "cached": floor["cached"],
        },
        "seconds": {name: round(value, 1) for name, value in timings.items()},
    }
    return section


# -- the peer and the floor: built once, measured, cached -----------------------------------------


def _peer_requirements() -> list[str]:
    return _pinned(PEER_DISTRIBUTIONS)


def _floor_requirements() -> list[str]:
    return _pinned((FLOOR_DISTRIBUTION, *sorted(build.NO_DEPS[FLOOR_DISTRIBUTION])))


def _pinned(names: Sequence[str]) -> list[str]:
    """Each name at its constraints.txt pin where there is one, else as it is."""
    pins = build.constraints()
    out = []
    for name in names:
        version = pins.get(build.normalize(name))
        out.append(f"{name}=={version}" if version else name)
    return sorted(out)


def _cached_tree(
    name: str, requirements: Sequence[str], *, deps: bool, bytecode: bool, trimmed: bool
) -> dict[str, Any]:
    """Sizes of ``requirements`` installed for the platform (and trimmed if asked): unzipped
    and zipped bytes, installed pins, largest distributions. Built when no cached measurement
    matches; the tree itself is not kept."""
    identity = {
        "format": CACHE_FORMAT,
        "requirements": list(requirements),
        "deps": deps,
        "bytecode": bytecode,
        "python": build.PYTHON_VERSION,
        "implementation": build.IMPLEMENTATION,
        "platforms": list(build.PLATFORMS),
        "trims": _trim_identity() if trimmed else None,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = build.ROOT / build.BUILD_DIR_NAME / "bench" / "size"
    cache = cache_dir / f"{name}-{key}.json"
    pinned = build.constraints()
    if cache.is_file():
        stored: dict[str, Any] = json.loads(cache.read_text())
        if all(pinned.get(dist, version) == version for dist, version in stored["pins"].items()):
            return {**stored, "cached": True}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=cache_dir) as tmp:
        tree = Path(tmp) / "python"
        pins = build.install_for_platform(requirements, tree, deps=deps, bytecode=bytecode)
        installed = _tree_size(tree)
        if trimmed:
            build.trim(tree)
        archive = build.zip_tree(tree, Path(tmp) / f"{name}.zip", prefix="python")
        measured = {
            "identity": identity,
            "pins": pins,
            "bytes_installed": installed,
            "bytes": _tree_size(tree),
            "bytecode_bytes": sum(p.stat().st_size for p in tree.rglob("*.pyc")),
            "zipped_bytes": archive.stat().st_size,
            "largest": _largest(_zip_files(archive, prefix="python/")),
        }
    for stale in cache_dir.glob(f"{name}-*.json"):
        if stale != cache:
            stale.unlink()
    _write_atomic(cache, json.dumps(measured, indent=2) + "\n")
    return {**measured, "cached": False}


# -- what weighs what ------------------------------------------------------------------------------


def _zip_files(archive: Path, *, prefix: str) -> dict[str, tuple[int, bytes | None]]:
    """{path under ``prefix``: (unzipped size, content if it is a dist-info RECORD)}."""
    files: dict[str, tuple[int, bytes | None]] = {}
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            relative = info.filename[len(prefix) :]
            record = relative.endswith(".dist-info/RECORD") and relative.count("/") == 1
            files[relative] = (info.file_size, zf.read(info) if record else None)
    return files


def _largest(files: Mapping[str, tuple[int, bytes | None]], top: int = TOP) -> dict[str, float]:
    """The ``top`` heaviest distributions in MiB, each file counted for the distribution whose
    RECORD lists it (so numpy.libs/ counts for numpy); a file no RECORD lists counts under its
    top-level name."""
    owner: dict[str, str] = {}
    for path, (_, record) in files.items():
        if record is None:
            continue
        dist = build.normalize(path.split("/", 1)[0][: -len(".dist-info")].partition("-")[0])
        for line in record.decode("utf-8", "replace").splitlines():
            owner.setdefault(line.split(",", 1)[0], dist)
    weights: Counter[str] = Counter()
    for path, (size, _) in files.items():
        weights[owner.get(path, path.split("/", 1)[0])] += size
    return {dist: _mb(size) for dist, size in weights.most_common(top)}


def _mb(size: int) -> float:
    return round(size / MIB, 1)


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(measure, argv)


if __name__ == "__main__":
    main()
