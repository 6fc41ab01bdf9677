"""dcc's Lambda functions: Python 3.12 on arm64 in the VPC, each with its own role, log group and SG."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.bundling import lambda_code

# Network interface actions a function in a VPC needs. AWS evaluates them without resource-level
# permissions (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html), hence Resource "*".
VPC_ENI_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


class DccFunction(Construct):
    """One function: the shared dcc bundle, a handler string, a least-privilege role and a 1-month log group."""

    def __init__(self, scope: Construct, construct_id: str, *, handler: str, service: str,
                 vpc: ec2.IVpc, subnets: ec2.SubnetSelection, environment: Mapping[str, str],
                 log_level: str, timeout: Duration, memory_size: int = 512, description: str) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"dcc {service} function")
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn]))
        self.role.add_to_policy(iam.PolicyStatement(actions=VPC_ENI_ACTIONS, resources=["*"]))
        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
                                                description=f"dcc {service} function")
        # HTTPS out: AWS APIs (Secrets Manager, S3, Auto Scaling, API Gateway management) through the NAT.
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs")
        self.function = lambda_.Function(
            self, "Function",
            description=description,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            code=lambda_code(),
            handler=handler,
            role=self.role,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            timeout=timeout,
            memory_size=memory_size,
            log_group=self.log_group,
            environment={
                "POWERTOOLS_SERVICE_NAME": f"dcc-{service}",
                "POWERTOOLS_METRICS_NAMESPACE": "dcc",
                "LOG_LEVEL": log_level,
                **environment,
            },
        )

    @property
    def stack(self) -> Stack:
        """The stack this function belongs to."""
        return Stack.of(self)
