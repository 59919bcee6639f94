"""Each Lambda ships only its own dependency group: inference never carries pandas or sklearn."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from packaging.requirements import Requirement

HEAVY = {"pandas", "scikit-learn", "scipy", "pyarrow", "xgboost", "xgboost-cpu", "moto"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def closure(extras: set[str]) -> set[str]:
    """Every distribution installing ``sluice[extras]`` pulls in, read from installed metadata."""
    seen: set[str] = set()
    queue = [
        r
        for r in (distribution("sluice").requires or [])
        if (req := Requirement(r)).marker is None
        or any(req.marker.evaluate({"extra": e}) for e in extras)
    ]
    while queue:
        req = Requirement(queue.pop())
        name = req.name.lower().replace("_", "-")
        if name in seen or name == "sluice":
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # an optional dependency of a dependency that is not installed here
        active = set(req.extras)
        queue.extend(
            r
            for r in requires
            if (sub := Requirement(r)).marker is None
            or (active and any(sub.marker.evaluate({"extra": e}) for e in active))
        )
    return seen


@pytest.mark.parametrize("extras", [set(), {"inference"}])
def test_the_inference_bundle_has_no_dataframe_or_training_libraries(extras: set[str]) -> None:
    bundle = closure(extras)
    assert "pydantic" in bundle
    assert bundle.isdisjoint(HEAVY), bundle & HEAVY
    if extras:
        assert "onnxruntime" in bundle


def test_the_closure_walk_does_find_heavy_libraries_where_they_are() -> None:
    # the check above could pass vacuously if the walk found nothing; it must see these
    assert {"pandas", "scikit-learn", "scipy"} <= closure({"training"})


def test_training_requirements_match_the_training_group() -> None:
    """functions/training/requirements.in is what the SageMaker PyTorch GPU container's
    requirements.txt resolves: the training set at exactly the versions pyproject.toml pins for
    ``sluice[training]`` (its base dependencies included), with the full xgboost wheel (CUDA) in
    place of xgboost-cpu."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    expected: dict[str, str] = {}
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["training"]]:
        req = Requirement(requirement)
        (spec,) = req.specifier  # every dependency in pyproject.toml is an exact pin
        assert spec.operator == "==", requirement
        expected[req.name.lower().replace("_", "-")] = spec.version

    text = (root / "functions/training/requirements.in").read_text()
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"not an exact pin: {line}"
        name = req.name.lower().replace("_", "-")
        assert name not in pins, f"{name} pinned twice"
        pins[name] = spec.version

    assert "xgboost-cpu" not in pins  # the CPU-only wheel; the container gets the CUDA build
    assert "xgboost" in pins
    for name, version in pins.items():
        group_name = "xgboost-cpu" if name == "xgboost" else name  # the one allowed rename
        assert group_name in expected, f"{name} is not in the training group"
        assert version == expected[group_name], (name, version, expected[group_name])
    # the whole training extra is there (xgboost-cpu as xgboost)
    training = {_name(r) for r in project["optional-dependencies"]["training"]}
    assert {"xgboost" if n == "xgboost-cpu" else n for n in training} <= pins.keys()
    assert {"skl2onnx", "onnxmltools", "onnx", "onnxruntime", "numpy", "pydantic"} <= pins.keys()


def _hashed_requirements(text: str) -> dict[str, tuple[str, list[str]]]:
    """name → (exact version, hashes) of a pip requirements file in hash-checking form."""
    logical = re.sub(r"\\\n", " ", text)  # a requirement continues over backslashed lines
    pinned: dict[str, tuple[str, list[str]]] = {}
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split(" --hash=")
        req = Requirement(requirement.strip())
        (spec,) = req.specifier
        assert spec.operator == "==", f"not an exact pin: {requirement}"
        name = req.name.lower().replace("_", "-")
        assert name not in pinned, f"{name} pinned twice"
        pinned[name] = (spec.version, [option.strip() for option in options])
    return pinned


def test_the_training_container_installs_every_package_pinned_hashed_and_as_tested() -> None:
    """requirements.txt (``make training-requirements``) pins the whole closure with hashes, so
    pip in the container runs in hash-checking mode and resolves nothing itself; every package it
    shares with constraints.txt is at the version the tests run (a cp312 resolve once picked
    scipy 1.18.1 where constraints.txt had 1.17.1)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pinned = _hashed_requirements((root / "functions/training/requirements.txt").read_text())
    for name, (_, hashes) in pinned.items():
        assert hashes, f"{name} has no --hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), (name, hashes)
    constraints = {
        name.lower().replace("_", "-"): version
        for name, _, version in (
            line.partition("==") for line in (root / "constraints.txt").read_text().split()
        )
    }
    shared = pinned.keys() & constraints.keys()
    assert {"numpy", "scipy", "pandas", "scikit-learn", "onnx", "protobuf"} <= shared
    for name in shared:
        assert pinned[name][0] == constraints[name], (name, pinned[name][0], constraints[name])
    # the only packages not in constraints.txt are the CUDA xgboost and what it alone brings
    assert pinned.keys() - constraints.keys() <= {"xgboost", "nvidia-nccl-cu12"}
    # and every top-level pin of requirements.in is there, at its version
    for line in (root / "functions/training/requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            name = req.name.lower().replace("_", "-")
            assert pinned[name][0] == next(iter(req.specifier)).version, name
