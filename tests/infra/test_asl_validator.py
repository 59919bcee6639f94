"""The pipeline's ASL file checked as Step Functions would check it, by a second reader.

``infra/local/asl/`` refuses ASL it cannot run, but that is our reading of the language.
``asl-validator`` (npm, pinned in package.json; ``make test`` installs it with ``npm ci``)
checks the file against the States Language's JSON schema and its rules (every target exists,
every state reachable, paths well formed), as CreateStateMachine would refuse it. It checks the
file as committed (CDK's placeholders in it) and as the local stack fills it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.local.pipeline import (
    BATCH_DEFINITION,
    BUILDS_DEFINITION,
    DEFINITION,
    batch_substitutions,
    builds_substitutions,
    substitutions,
)
from infra.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "node_modules" / ".bin" / "asl-validator"


def asl_validator(definition: Path) -> subprocess.CompletedProcess[str]:
    """``asl-validator --json-path FILE``: exit 0 and a ✓ line when valid."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: install Node 20 (asl-validator and the CDK CLI need it)")
    if not VALIDATOR.is_file():
        pytest.fail("node_modules/.bin/asl-validator is missing: run `npm ci` in the repo root")
    return subprocess.run(
        [str(VALIDATOR), "--json-path", str(definition)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def filled(tmp_path: Path, name: str, definition: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(definition, indent=2), encoding="utf-8")
    return path


# Each definition with the local stack's values for its placeholders
DEFINITIONS = pytest.mark.parametrize(
    ("definition", "values"),
    [
        (DEFINITION, substitutions),
        (BUILDS_DEFINITION, builds_substitutions),
        (BATCH_DEFINITION, batch_substitutions),
    ],
    ids=["pipeline", "builds", "batch"],
)


@DEFINITIONS
def test_the_committed_definition_is_valid_asl(definition: Path, values: Any) -> None:
    result = asl_validator(definition)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


@DEFINITIONS
def test_the_definition_as_the_local_stack_fills_it_is_valid_asl(
    tmp_path: Path, definition: Path, values: Any
) -> None:
    # Given the file with every placeholder filled (ARNs, URIs), as a deployed machine has them
    text = definition.read_text(encoding="utf-8")
    for name, value in values(Topology(stage="dev")).items():
        text = text.replace(f"${{{name}}}", value)
    assert "${" not in text

    # Then asl-validator accepts it too
    result = asl_validator(filled(tmp_path, "filled.asl.json", json.loads(text)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("breakage", "finding"),
    [
        (lambda d: d["States"]["Train"].update(Next="Nowhere"), "MISSING_TRANSITION_TARGET"),
        (lambda d: d["States"]["Gate"].update(Default="Nowhere"), "MISSING_TRANSITION_TARGET"),
        (lambda d: d["States"]["PrepareTraining"].update(ResultPath="script"), "ResultPath"),
        (lambda d: d["States"]["Refused"].update(Type="Sucede"), "Type"),
    ],
    ids=["unknown-next", "unknown-default", "bad-result-path", "unknown-type"],
)
def test_the_validator_refuses_a_broken_copy_of_the_definition(
    tmp_path: Path, breakage: Any, finding: str
) -> None:
    # Given the pipeline with one mistake Step Functions would refuse
    definition = json.loads(DEFINITION.read_text(encoding="utf-8"))
    breakage(definition)

    # Then asl-validator exits non-zero and names it (so the test above can fail)
    result = asl_validator(filled(tmp_path, "broken.asl.json", definition))
    assert result.returncode != 0, result.stdout
    assert finding in result.stdout + result.stderr, result.stdout + result.stderr
