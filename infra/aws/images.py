"""The SageMaker training image, resolved at synth time for the stack's region.

The AWS Deep Learning Container for PyTorch (GPU, Python 3.12): it has CUDA and the SageMaker
training toolkit (script mode: ``sagemaker_program``, ``sagemaker_submit_directory``,
``requirements.txt``), and Python ≥ 3.11, which ``functions/shared`` needs. The framework's own
libraries are unused; ``functions/training/requirements.txt`` installs the full ``xgboost``
wheel (CUDA-enabled), scikit-learn, onnx and the converters on top (docs/decisions.md).

DLC images live in a per-region AWS account; the mapping below is synthesized into the template
(``Fn::FindInMap`` on the deploying region), so one template serves every listed region. A stack
whose region is known at synth (``cdk deploy`` with credentials: CDK_DEFAULT_REGION) and missing
from the mapping fails the synth, naming the region, instead of failing the deploy on FindInMap.
The mapping is still kept by hand (checked against the SageMaker SDK's
``image_uri_config/pytorch.json``); generating it from the SDK is issue 19's image-generator part.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnMapping, Fn, Stack, Token
from constructs import Construct

TRAINING_REPOSITORY = "pytorch-training"
TRAINING_TAG = "2.6.0-gpu-py312-cu126-ubuntu22.04-sagemaker"
DEFAULT_DLC_ACCOUNT = "763104351884"
# Regions whose Deep Learning Containers are published from another account.
DLC_ACCOUNTS_ELSEWHERE = {
    "af-south-1": "626614931356",
    "ap-northeast-3": "364406365360",
    "ap-east-1": "871362719292",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ca-west-1": "204538143572",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
}
DLC_REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "sa-east-1",
    *DLC_ACCOUNTS_ELSEWHERE,
)


def dlc_account(region: str) -> str:
    return DLC_ACCOUNTS_ELSEWHERE.get(region, DEFAULT_DLC_ACCOUNT)


class NoTrainingImageError(ValueError):
    """The stack's region has no training image in the mapping."""


class TrainingImage(Construct):
    """``.uri`` (the image) and ``.repository_arn`` (for the training role's ECR pull)."""

    def __init__(self, scope: Construct, construct_id: str, *, tag: str = TRAINING_TAG) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        if not Token.is_unresolved(region) and region not in DLC_REGIONS:
            raise NoTrainingImageError(
                f"region {region}: no {TRAINING_REPOSITORY} image account in infra/aws/images.py "
                f"(the SageMaker SDK's image_uri_config/pytorch.json lists the regions that have "
                f"one); deploy to one of: {', '.join(sorted(DLC_REGIONS))}"
            )
        mapping = CfnMapping(
            self,
            "DlcAccounts",
            mapping={region: {"account": dlc_account(region)} for region in DLC_REGIONS},
        )
        account = mapping.find_in_map(Aws.REGION, "account")
        self.uri = Fn.join(
            "",
            [
                account,
                ".dkr.ecr.",
                Aws.REGION,
                ".",
                Aws.URL_SUFFIX,
                f"/{TRAINING_REPOSITORY}:{tag}",
            ],
        )
        self.repository_arn = Fn.join(
            "",
            [
                "arn:",
                Aws.PARTITION,
                ":ecr:",
                Aws.REGION,
                ":",
                account,
                f":repository/{TRAINING_REPOSITORY}",
            ],
        )
