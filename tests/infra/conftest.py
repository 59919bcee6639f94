"""One real synth of the app per session (layers built for the Lambda platform, cdk-nag on), shared
by the template assertions, cfn-lint and the bundle checks: stage dev, one declared dataset
(``churn``, so its retraining alarms are there), one retraining guard limit, one reserved
concurrency and an ops email. A second one,
with IAM auth and no context beyond the stage, checks the options and the defaults."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@dataclass(frozen=True)
class Synthesized:
    outdir: Path
    template: dict[str, Any]
    stack_name: str

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack_name}.template.json"

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == kind}

    def one(self, kind: str, under: str = "") -> dict[str, Any]:
        """The one resource of ``kind`` whose logical id starts with ``under`` (the construct
        it belongs to: the pipeline's state machine is ``Pipeline...``, the builds'
        ``Builds...``)."""
        found = [r for k, r in self.resources(kind).items() if k.startswith(under)]
        assert len(found) == 1, f"expected one {kind} under {under!r}, found {len(found)}"
        return found[0]["Properties"]  # type: ignore[no-any-return]


DATASETS = ["churn"]
GUARD = {"max_runs_per_day": 2}
RESERVED = {"retrain": 1}
OPS_EMAIL = "ops@example.com"


def synthesize(outdir: Path, **context: Any) -> Synthesized:
    """``cdk synth`` in-process: raises if cdk-nag reports an unacknowledged finding. Context
    values as cdk.json holds them (strings, lists, objects)."""
    from aws_cdk import App

    from infra.aws.app import build

    app, stack = build(App(outdir=str(outdir), context=context))
    app.synth()
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return Synthesized(outdir=outdir, template=template, stack_name=stack.stack_name)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(
        tmp_path_factory.mktemp("cdk.out"),
        stage="dev",
        datasets=DATASETS,
        retrain_guard=GUARD,
        reserved_concurrency=RESERVED,
        opsEmail=OPS_EMAIL,
    )


@pytest.fixture(scope="session")
def synthesized_defaults(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """IAM auth, and none of ``datasets``, ``retrain_guard``, ``reserved_concurrency``,
    ``opsEmail``."""
    return synthesize(tmp_path_factory.mktemp("cdk.out.iam"), stage="dev", api_auth="iam")
