"""The scaler construct in a bare stack: its role may act on the two worker groups only, every minute."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCOPED = {"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
          "autoscaling:SetInstanceProtection"}


@pytest.fixture(scope="module")
def statements() -> list[dict[str, Any]]:
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template

    from stacks.scaler import ScalerSchedule

    stack = cdk.Stack(cdk.App(), "Test", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    function = lambda_.Function(stack, "Scaler", runtime=lambda_.Runtime.PYTHON_3_12, handler="index.handler",
                                code=lambda_.Code.from_inline("def handler(event, context): pass"))
    ScalerSchedule(stack, "Schedule", function=function, group_names=["cpu-group", "gpu-group"])
    template: Any = Template.from_stack(stack)
    [policy] = template.find_resources("AWS::IAM::Policy").values()
    found: list[dict[str, Any]] = policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def test_the_scaler_may_protect_size_and_terminate_only_in_its_groups(statements: list[dict[str, Any]]) -> None:
    scoped = [s for s in statements if SCOPED & set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])]
    assert len(scoped) == 1
    [statement] = scoped
    assert set(statement["Action"]) == SCOPED   # the handler calls set_instance_protection on busy workers
    resources = [json.dumps(r) for r in statement["Resource"]]   # Fn::Join with the partition
    assert len(resources) == 2
    for arn, group in zip(sorted(resources), ("cpu-group", "gpu-group"), strict=True):
        assert ":autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/" + group in arn


def test_only_describe_calls_are_on_every_resource(statements: list[dict[str, Any]]) -> None:
    for s in statements:
        if s["Resource"] == "*":
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert all(":Describe" in a for a in actions), actions
