"""The SageMaker training image, resolved at synth time for the stack's region.

The AWS Deep Learning Container for PyTorch (GPU, Python 3.12): it has CUDA and the SageMaker
training toolkit (script mode: ``sagemaker_program``, ``sagemaker_submit_directory``,
``requirements.txt``), and Python ≥ 3.11, which ``functions/shared`` needs. The framework's own
libraries are unused; ``functions/training/requirements.txt`` installs the full ``xgboost``
wheel (CUDA-enabled), scikit-learn, onnx and the converters on top (docs/decisions.md).

DLC images live in a per-region AWS account. The mapping is generated from the SageMaker SDK's
own table (``infra/aws/image_accounts.py``, by ``python -m infra.aws.gen_images``) and synthesized
into the template (``Fn::FindInMap`` on the deploying region), so one template serves every listed
region. A stack whose region is known at synth (``cdk deploy`` with credentials:
CDK_DEFAULT_REGION) and missing from the mapping fails the synth, naming the region. An
environment-agnostic template (``make synth`` without credentials) carries a template rule
instead: CloudFormation refuses the change set in an unlisted region, naming the table and the
fix, before any resource is touched, rather than with a bare FindInMap error.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnMapping, CfnRule, CfnRuleAssertion, Fn, Stack, Token
from constructs import Construct

from infra.aws.image_accounts import DLC_ACCOUNTS

TRAINING_REPOSITORY = "pytorch-training"
FRAMEWORK_VERSION = "2.6.0"
PY_VERSION = "py312"
PROCESSOR = "gpu"
TRAINING_TAG = f"{FRAMEWORK_VERSION}-{PROCESSOR}-{PY_VERSION}-cu126-ubuntu22.04-sagemaker"
# The part builds' processing job (infra/aws/builds.py): the same image family on CPU
PROCESSING_TAG = f"{FRAMEWORK_VERSION}-cpu-{PY_VERSION}-ubuntu22.04-sagemaker"
DLC_REGIONS = tuple(DLC_ACCOUNTS)


def dlc_account(region: str) -> str:
    return DLC_ACCOUNTS[region]


def no_image_message(region: str, *, listing: bool = True) -> str:
    """What to do when ``region`` has no training image: the regions that have one (the synth
    error lists them; a template rule's description names the table instead), or a newer SDK."""
    where = f"one of: {', '.join(DLC_REGIONS)}" if listing else "a region it lists"
    return (
        f"region {region}: no {TRAINING_REPOSITORY} {FRAMEWORK_VERSION} image in the SageMaker "
        f"SDK's table (infra/aws/image_accounts.py); deploy to {where}, or regenerate the table "
        "from a newer SDK (`make images`)"
    )


class NoTrainingImageError(ValueError):
    """The stack's region has no training image in the mapping."""


class TrainingImage(Construct):
    """``.uri`` (the image) and ``.repository_arn`` (for the training role's ECR pull);
    ``uri_with(tag)``: another image of the repository (the part builds' CPU one), from the same
    mapping and region rule."""

    def uri_with(self, tag: str) -> str:
        return Fn.join(
            "",
            [
                self._account,
                ".dkr.ecr.",
                Aws.REGION,
                ".",
                Aws.URL_SUFFIX,
                f"/{TRAINING_REPOSITORY}:{tag}",
            ],
        )

    def __init__(self, scope: Construct, construct_id: str, *, tag: str = TRAINING_TAG) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        if not Token.is_unresolved(region) and region not in DLC_REGIONS:
            raise NoTrainingImageError(no_image_message(region))
        if Token.is_unresolved(region):
            CfnRule(
                self,
                "RegionHasImage",
                assertions=[
                    CfnRuleAssertion(
                        assert_=Fn.condition_contains(list(DLC_REGIONS), Aws.REGION),
                        assert_description=no_image_message("AWS::Region", listing=False),
                    )
                ],
            )
        mapping = CfnMapping(
            self,
            "DlcAccounts",
            mapping={region: {"account": account} for region, account in DLC_ACCOUNTS.items()},
        )
        account = mapping.find_in_map(Aws.REGION, "account")
        self._account = account
        self.uri = self.uri_with(tag)
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
