"""cdk-nag acknowledgements: each names one finding and says why it is accepted."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import Construct, IConstruct


def acknowledge(construct: IConstruct, *, id: str, reason: str) -> None:
    """``id`` is cdk-nag's finding id (``AwsSolutions-IAM5[Resource::…]``); ``reason`` is kept
    in the cloud assembly as the audit trail, so it must say why."""
    assert len(reason) >= 40, f"acknowledging {id} needs a real reason, not {reason!r}"
    Validations.of(construct).acknowledge(Acknowledgment(id=id, reason=reason))


def logical_id(construct: Construct) -> str:
    """The CloudFormation logical id cdk-nag names a resource by (``<Id.Arn>`` in findings)."""
    child = construct.node.default_child
    assert child is not None, f"{construct.node.path} has no CloudFormation resource"
    return str(Stack.of(construct).get_logical_id(child))  # type: ignore[arg-type]
