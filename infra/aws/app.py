"""``cdk synth`` / ``cdk deploy`` entry point (cdk.json: ``python -m infra.aws.app``).

Context: ``stage`` (default ``dev``; the stack is ``sluice-<stage>``, so stages coexist) and
``api_auth`` (``api_key``, the default, or ``iam``). Account and region come from the CLI's
environment (``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION``) when set; otherwise the template
is environment-agnostic. cdk-nag's AwsSolutions pack validates every synth: an unacknowledged
finding fails it.
"""

from __future__ import annotations

import os
import re

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.aws.stack import SluiceStack

# Behaviour this app relies on, set here so `cdk synth` and the tests' App() agree.
FEATURE_FLAGS = {
    # access logs delivered under a bucket policy, not the legacy LogDeliveryWrite ACL
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}
STAGE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")


def build(app: App | None = None) -> tuple[App, SluiceStack]:
    app = app or App()
    for flag, value in FEATURE_FLAGS.items():
        app.node.set_context(flag, value)
    stage = str(app.node.try_get_context("stage") or "dev")
    if not STAGE.match(stage):
        raise ValueError(f"stage '{stage}' must match {STAGE.pattern} (it names buckets)")
    auth = str(app.node.try_get_context("api_auth") or "api_key")
    if auth not in ("api_key", "iam"):
        raise ValueError(f"api_auth '{auth}' must be 'api_key' or 'iam'")
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    env = Environment(account=account, region=region) if account and region else None
    stack = SluiceStack(app, stage=stage, api_auth=auth, env=env)  # type: ignore[arg-type]
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main() -> None:
    app, _ = build()
    app.synth()


if __name__ == "__main__":
    main()
