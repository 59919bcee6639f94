"""Names, prefixes and ports shared by the CDK app, the local stack and the tests.

One place to change a bucket name or a port; nothing else spells them out.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"  # moto's account id
LOCAL_AWS_PORT = 4566
LOCAL_API_PORT = 8080


@dataclass(frozen=True)
class Topology:
    stage: str = "dev"
    account: str = LOCAL_ACCOUNT
    region: str = LOCAL_REGION

    @property
    def raw_bucket(self) -> str:
        return f"sluice-raw-{self.stage}-{self.account}"

    @property
    def artifacts_bucket(self) -> str:
        return f"sluice-artifacts-{self.stage}-{self.account}"

    @property
    def state_machine_name(self) -> str:
        return f"sluice-pipeline-{self.stage}"

    @property
    def state_machine_arn(self) -> str:
        return f"arn:aws:states:{self.region}:{self.account}:stateMachine:{self.state_machine_name}"

    @property
    def pipeline_role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/sluice-pipeline-{self.stage}"

    def preprocess_environment(self) -> dict[str, str]:
        """The preprocess function's environment (functions/preprocess/handler.py Settings)."""
        return {
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "STATE_MACHINE_ARN": self.state_machine_arn,
            "POWERTOOLS_SERVICE_NAME": "sluice-preprocess",
        }
