"""Names, prefixes and ports shared by the CDK app, the local stack and the tests.

One place to change a bucket name or a port; nothing else spells them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from functions.shared.layout import BATCH_PREFIX, DATA_PREFIX

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
        return f"sluice-raw-{self.stage}-{self._bucket_suffix}"

    @property
    def artifacts_bucket(self) -> str:
        return f"sluice-artifacts-{self.stage}-{self._bucket_suffix}"

    @property
    def _bucket_suffix(self) -> str:
        """Bucket names are global: a deployed stage's carry its account and region, so a second
        region of one account gets its own (≤ 63 characters: a 16-character stage and a
        14-character region make 61). The local stack (moto's account) is one region per
        machine, and its names, in saved state and the docs, stay as they were."""
        if self.account == LOCAL_ACCOUNT:
            return self.account
        return f"{self.account}-{self.region}"

    @property
    def state_machine_name(self) -> str:
        return f"sluice-pipeline-{self.stage}"

    @property
    def state_machine_arn(self) -> str:
        return f"arn:aws:states:{self.region}:{self.account}:stateMachine:{self.state_machine_name}"

    @property
    def builds_state_machine_name(self) -> str:
        """Parts past one Lambda: a processing job, then preprocess assembles the version."""
        return f"sluice-builds-{self.stage}"

    @property
    def builds_state_machine_arn(self) -> str:
        return (
            f"arn:aws:states:{self.region}:{self.account}:stateMachine:"
            f"{self.builds_state_machine_name}"
        )

    @property
    def batch_jobs_state_machine_name(self) -> str:
        """Batch files past one Lambda: a processing job scores the file."""
        return f"sluice-batch-jobs-{self.stage}"

    @property
    def batch_jobs_state_machine_arn(self) -> str:
        return (
            f"arn:aws:states:{self.region}:{self.account}:stateMachine:"
            f"{self.batch_jobs_state_machine_name}"
        )

    @property
    def processing_role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/sluice-processing-{self.stage}"

    @property
    def pipeline_role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/sluice-pipeline-{self.stage}"

    @property
    def registry_table(self) -> str:
        return f"sluice-registry-{self.stage}"

    @property
    def decisions_topic_name(self) -> str:
        return f"sluice-decisions-{self.stage}"

    @property
    def decisions_topic_arn(self) -> str:
        return f"arn:aws:sns:{self.region}:{self.account}:{self.decisions_topic_name}"

    @property
    def ops_topic_name(self) -> str:
        """The topic every operational alarm publishes to (infra/aws/monitoring.py)."""
        return f"sluice-ops-{self.stage}"

    @property
    def ops_topic_arn(self) -> str:
        return f"arn:aws:sns:{self.region}:{self.account}:{self.ops_topic_name}"

    def function_name(self, function: str) -> str:
        """Deployed name of one of the pipeline's functions (``evaluate``, ``promote``...)."""
        return f"sluice-{function}-{self.stage}"

    def function_arn(self, function: str) -> str:
        name = self.function_name(function)
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{name}"

    def preprocess_environment(self) -> dict[str, str]:
        """The preprocess function's environment (functions/preprocess/handler.py Settings)."""
        return {
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "STATE_MACHINE_ARN": self.state_machine_arn,
            "BUILDS_STATE_MACHINE_ARN": self.builds_state_machine_arn,
            "REGISTRY_TABLE": self.registry_table,  # retirements refuse uploads
            "POWERTOOLS_SERVICE_NAME": "sluice-preprocess",
        }

    def pipeline_environment(self) -> dict[str, str]:
        """Environment of the evaluate, promote and reject functions."""
        return {
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "REGISTRY_TABLE": self.registry_table,
            "DECISIONS_TOPIC_ARN": self.decisions_topic_arn,
            "STAGE": self.stage,  # promote puts the retraining alarms, named by stage
            "POWERTOOLS_SERVICE_NAME": "sluice-pipeline",
        }

    def batch_environment(self) -> dict[str, str]:
        """The batch predictions function's environment (functions/batch/handler.py Settings)."""
        return {
            "RAW_BUCKET": self.raw_bucket,
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "REGISTRY_TABLE": self.registry_table,
            "BATCH_JOBS_STATE_MACHINE_ARN": self.batch_jobs_state_machine_arn,
            "POWERTOOLS_SERVICE_NAME": "sluice-batch",
        }

    def drift_environment(self) -> dict[str, str]:
        """The drift job's environment (functions/drift/handler.py Settings)."""
        return {
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "REGISTRY_TABLE": self.registry_table,
            "POWERTOOLS_SERVICE_NAME": "sluice-drift",
        }

    def retrain_environment(self) -> dict[str, str]:
        """The retrain function's environment (functions/retrain/handler.py Settings)."""
        return {
            "RAW_BUCKET": self.raw_bucket,
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "REGISTRY_TABLE": self.registry_table,
            "STATE_MACHINE_ARN": self.state_machine_arn,
            "POWERTOOLS_SERVICE_NAME": "sluice-retrain",
        }

    def inference_environment(self) -> dict[str, str]:
        """The inference function's environment (functions/inference/api.py Settings)."""
        return {
            "REGISTRY_TABLE": self.registry_table,
            "POWERTOOLS_SERVICE_NAME": "sluice-inference",
            # a sample of requests for the drift job (functions/inference/capture.py)
            "CAPTURE_BUCKET": self.artifacts_bucket,
            "CAPTURE_SAMPLE_RATE": "0.1",
            # true labels and values for live quality (functions/inference/feedback.py)
            "FEEDBACK_BUCKET": self.artifacts_bucket,
        }


def upload_event_pattern(
    topology: Topology,
    prefix: str = DATA_PREFIX,
    detail_types: tuple[str, ...] = ("Object Created", "Object Deleted"),
) -> dict[str, Any]:
    """EventBridge pattern for uploads and deletes under any ``<dataset>/<prefix>`` of the raw
    bucket: the rules CDK deploys and the ones the local stack provisions. A deleted data file
    leaves the next dataset version (docs/decisions.md, "Per-file parts")."""
    return {
        "source": ["aws.s3"],
        "detail-type": list(detail_types),
        "detail": {
            "bucket": {"name": [topology.raw_bucket]},
            "object": {"key": [{"wildcard": f"*/{prefix}*"}]},
        },
    }


def batch_event_pattern(topology: Topology) -> dict[str, Any]:
    """Files to score with the live model: ``<dataset>/batch/`` (uploads only: deleting a
    batch file changes nothing)."""
    return upload_event_pattern(topology, BATCH_PREFIX, ("Object Created",))
