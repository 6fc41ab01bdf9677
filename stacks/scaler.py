"""The scaler: every minute, read fleet state and queue depths, set the groups' desired capacity, reap leases."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct


def group_arn(scope: Construct, group_name: str) -> str:
    """The ARN pattern of the Auto Scaling group named ``group_name`` (its ARN embeds a random id).

    A group's ARN is ``arn:aws:autoscaling:<region>:<account>:autoScalingGroup:<uuid>:autoScalingGroupName/<name>``:
    colons after ``autoScalingGroup``, so the pattern must use them too (a slash would match no group).
    """
    stack = Stack.of(scope)
    return stack.format_arn(service="autoscaling", resource="autoScalingGroup",
                            resource_name=f"*:autoScalingGroupName/{group_name}",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME)


class ScalerSchedule(Construct):
    """Gives the scaler function its Auto Scaling permissions and runs it every minute."""

    def __init__(self, scope: Construct, construct_id: str, *, function: lambda_.IFunction,
                 group_names: list[str]) -> None:
        super().__init__(scope, construct_id)
        arns = [group_arn(self, name) for name in group_names]
        function.add_to_role_policy(iam.PolicyStatement(
            actions=["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
                     "autoscaling:SetInstanceProtection"],
            resources=arns))
        # Describe calls support no resource-level permissions in Auto Scaling or EC2: Resource must be "*".
        function.add_to_role_policy(iam.PolicyStatement(
            actions=["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
                     "autoscaling:DescribeScalingActivities", "ec2:DescribeInstances"],
            resources=["*"]))
        self.rule = events.Rule(
            self, "EveryMinute", description="run the dcc scaler",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(function, retry_attempts=0)])
