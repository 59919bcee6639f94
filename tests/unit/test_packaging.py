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
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "functions/training/requirements.txt").read_text()
    pinned = {
        _name(line) for line in text.splitlines() if line.strip() and not line.startswith("#")
    }
    assert {"skl2onnx", "onnxmltools", "onnx", "onnxruntime"} <= pinned
    assert "xgboost-cpu" not in pinned  # the framework container brings its own GPU build
