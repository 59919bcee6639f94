"""What is removed from a layer after installation (``TRIMS``: test suites, headers, unused
botocore models...), each rule with its reason, and the trimming itself.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from layers.archive import _tree_size


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


def _trim_identity() -> list[list[object]]:
    return [[rule.name, list(rule.patterns), list(rule.keep)] for rule in TRIMS]


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
