"""``cdk synth`` / ``cdk deploy`` entry point (cdk.json: ``python -m infra.aws.app``).

Context: ``stage`` (default ``dev``; the stack is ``sluice-<stage>``, so stages coexist),
``api_auth`` (``api_key``, the default, or ``iam``), ``datasets`` (the datasets whose retraining
alarms the stack deploys; none by default), ``retrain_guard`` (the retraining guards' limits
for the stage; GuardPolicy's defaults otherwise), ``reserved_concurrency`` (function → reserved
concurrency; none by default, so a new account's quota of 10 deploys) and ``opsEmail`` (the
address the ops topic mails every operational alarm to; none by default). Account and region
come from the CLI's environment (``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION``) when set;
otherwise the template is environment-agnostic. cdk-nag's AwsSolutions pack validates every
synth: an unacknowledged finding fails it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks
from pydantic import ValidationError

from functions.retrain.guard import GuardPolicy
from functions.shared.layout import DATASET_NAME
from infra.aws.account import AccountSettings
from infra.aws.stack import SluiceStack
from infra.concurrency import reserved_concurrency

# Behaviour this app relies on, set here so `cdk synth` and the tests' App() agree.
FEATURE_FLAGS = {
    # access logs delivered under a bucket policy, not the legacy LogDeliveryWrite ACL
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # a layer's content is part of a function's version hash: a dependency fix publishes a new
    # version, so the live alias moves (by canary) instead of keeping the old layer
    "@aws-cdk/aws-lambda:recognizeLayerVersion": True,
}
STAGE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


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
    stack = SluiceStack(
        app,
        stage=stage,
        api_auth=auth,  # type: ignore[arg-type]
        datasets=datasets(app.node.try_get_context("datasets")),
        guard_overrides=guard_overrides(app.node.try_get_context("retrain_guard")),
        reserved_concurrency=reserved_concurrency(app.node.try_get_context("reserved_concurrency")),
        ops_email=ops_email(app.node.try_get_context("opsEmail")),
        env=env,
    )
    # account-wide settings in their own stack, deployed before any stage's
    stack.add_stack_dependency(AccountSettings(app, env=env))
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def datasets(value: Any) -> tuple[str, ...]:
    """The ``datasets`` context: a list (cdk.json) or a string, comma-separated or a JSON list
    (``-c datasets=churn,housing``); each name as the raw bucket's ``<dataset>/`` prefix has it."""
    if value is None:
        return ()
    names = value
    if isinstance(value, str):
        text = value.strip()
        try:
            names = json.loads(text) if text.startswith("[") else text.split(",")
        except ValueError as error:
            raise ValueError(f"context datasets: {value!r} is not a JSON list: {error}") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"context datasets: {value!r} is neither a list of names nor 'name,name'")
    chosen = [name.strip() for name in names if name.strip()]
    bad = [name for name in chosen if not DATASET_NAME.match(name)]
    if bad:
        raise ValueError(
            f"context datasets: {', '.join(repr(name) for name in bad)} is not a dataset name "
            f"(the <dataset>/ prefix in the raw bucket: {DATASET_NAME.pattern})"
        )
    return tuple(dict.fromkeys(chosen))


def guard_overrides(value: Any) -> dict[str, str]:
    """The ``retrain_guard`` context, a JSON object of GuardPolicy limits
    (``{"max_runs_per_day": 1}``, in cdk.json or as a string with ``-c``), validated here and
    handed to the retrain function as its ``RETRAIN_<LIMIT>`` environment variables."""
    if value is None:
        return {}
    try:
        limits = json.loads(value) if isinstance(value, str) else value
    except ValueError as error:
        raise ValueError(f"context retrain_guard: {value!r} is not JSON: {error}") from None
    if not isinstance(limits, dict) or None in limits.values():
        raise ValueError(
            f"context retrain_guard: {value!r} must be an object of limits, each a number "
            f"(known: {', '.join(GuardPolicy.model_fields)})"
        )
    try:
        policy = GuardPolicy.model_validate(limits).model_dump()
    except ValidationError as error:
        raise ValueError(f"context retrain_guard: {error}") from None
    return {f"RETRAIN_{name.upper()}": str(policy[name]) for name in sorted(limits)}


def ops_email(value: Any) -> str | None:
    """The ``opsEmail`` context: the address subscribed to the ops topic (AWS mails it a
    confirmation link first); absent, the topic has no subscription."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not EMAIL.match(value.strip()):
        raise ValueError(f"context opsEmail: {value!r} is not an email address")
    return value.strip()


def main() -> None:
    app, _ = build()
    app.synth()


if __name__ == "__main__":
    main()
