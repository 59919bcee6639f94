"""What ``sluice doctor`` assumes about the stack, read off the synthesized template: the oldest
bootstrap version it accepts, the reservations it makes, the ops topic's name."""

from __future__ import annotations

from infra.concurrency import reserved_concurrency
from infra.doctor import BOOTSTRAP_QUALIFIER, MIN_BOOTSTRAP_VERSION
from infra.topology import Topology
from tests.infra.conftest import RESERVED, Synthesized


def test_the_template_refuses_exactly_the_bootstraps_the_doctor_refuses(
    synthesized: Synthesized,
) -> None:
    # Then: CDK's rule lists the versions it refuses; the doctor's minimum is the first it allows
    assertion = synthesized.template["Rules"]["CheckBootstrapVersion"]["Assertions"][0]["Assert"]
    refused = assertion["Fn::Not"][0]["Fn::Contains"][0]
    assert refused == [str(v) for v in range(1, MIN_BOOTSTRAP_VERSION)]
    parameter = synthesized.template["Parameters"]["BootstrapVersion"]["Default"]
    assert parameter == f"/cdk-bootstrap/{BOOTSTRAP_QUALIFIER}/version"


def test_the_template_reserves_what_the_doctor_counts(
    synthesized: Synthesized, synthesized_defaults: Synthesized
) -> None:
    def reserved(template: Synthesized) -> dict[str, int]:
        return {
            resource["Properties"]["FunctionName"]: resource["Properties"][
                "ReservedConcurrentExecutions"
            ]
            for resource in template.resources("AWS::Lambda::Function").values()
            if "ReservedConcurrentExecutions" in resource["Properties"]
        }

    topology = Topology(stage="dev")
    expected = {topology.function_name(n): c for n, c in reserved_concurrency(RESERVED).items()}
    assert reserved(synthesized) == expected
    assert reserved(synthesized_defaults) == {}


def test_the_ops_topic_is_the_one_the_doctor_looks_for(synthesized: Synthesized) -> None:
    topics = [
        p["Properties"].get("TopicName") for p in synthesized.resources("AWS::SNS::Topic").values()
    ]
    assert Topology(stage="dev").ops_topic_name in topics
