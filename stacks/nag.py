"""cdk-nag (AwsSolutions) findings dcc accepts, each with its reason.

cdk-nag 3 runs as a CDK policy-validation plugin and takes acknowledgements through ``Validations.of(scope)
.acknowledge``; a finding with a detail (``AwsSolutions-IAM5[Resource::…]``) is acknowledged one by one, so
every wildcard below is named exactly.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

from stacks.storage import input_bucket_objects

VPC_ENI_REASON = ("Lambda in a VPC manages its network interfaces with ec2:*NetworkInterface* actions, which "
                  "support no resource-level permissions: AWS requires Resource '*'.")
JOB_DATA_REASON = ("Jobs' objects live under jobs-data/<job id>/…; the role reads and writes that prefix only "
                   "(Get/Put/DeleteObject, AbortMultipartUpload; ListBucket limited to the prefix).")
LATEST_RUNTIME_REASON = "dcc's Lambda runtime is fixed at Python 3.12 (arm64) by the project; upgrades are deliberate."


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept the finding ``rule`` (e.g. ``AwsSolutions-IAM5[Resource::*]``) on ``scope`` and its children."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def nag_text(scope: IConstruct, value: Any) -> str:
    """``value`` (a string with CDK tokens) as cdk-nag prints it: ``<AWS::Region>``, ``<Logical.Arn>``."""
    return _render(Stack.of(scope).resolve(value))


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Fn::Join":
            return str(arg[0]).join(_render(part) for part in arg[1])
        if key == "Ref":
            return f"<{arg}>"
        if key == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
    raise ValueError(f"cannot render {value!r} as cdk-nag does")


def acknowledge_findings(stack: Any) -> None:
    """Every acknowledgement of the dcc stack, in one place, so a reviewer reads them together."""
    storage, redis, workers = stack.storage, stack.redis, stack.workers
    job_objects = nag_text(stack, storage.bucket.arn_for_objects("jobs-data/*"))
    group_arns = [nag_text(stack, arn) for arn in workers.group_arns]

    if storage.log_bucket is None:
        acknowledge(storage.bucket, "AwsSolutions-S1",
                    "Server access logs are optional (context bucketAccessLogs); API Gateway access logs and "
                    "CloudTrail data events, where enabled, record who touched job data.")
    else:
        acknowledge(storage.log_bucket, "AwsSolutions-S1", "This is the access log bucket; it cannot log to itself.")
    acknowledge(redis.secret, "AwsSolutions-SMG4",
                "Rotating an ElastiCache AUTH token needs a custom rotation function (ROTATE strategy); a token is "
                "rotated by hand: a new secret version set on the replication group (ModifyReplicationGroup, "
                "AuthTokenUpdateStrategy ROTATE keeps the old one valid meanwhile), then new Lambda execution "
                "environments (they read the secret at cold start) and an instance refresh of the worker groups "
                "(workers read it at boot), then SET.")
    acknowledge(redis.replication_group, "AwsSolutions-AEC5",
                "6379 is reachable only from dcc's function and worker security groups, over TLS with AUTH; a "
                "non-default port adds no protection.")

    for fn in (stack.api_function, stack.websocket_function, stack.scaler_function):
        acknowledge(fn.function, "AwsSolutions-L1", LATEST_RUNTIME_REASON)
        acknowledge(fn.role, "AwsSolutions-IAM5[Resource::*]",
                    VPC_ENI_REASON + (" The scaler's Describe calls (autoscaling:Describe*, ec2:DescribeInstances) "
                                      "also support no resource-level permissions."
                                      if fn is stack.scaler_function else ""))
    for role in (stack.api_function.role, stack.scaler_function.role, workers.role):
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{job_objects}]", JOB_DATA_REASON)
    acknowledge(stack.websocket_function.role, f"AwsSolutions-IAM5[Resource::{job_objects}]",
                "Jobs' objects live under jobs-data/<job id>/…; the websocket function only reads that prefix "
                "(GetObject: a finished job's result.json once its Redis record expired; ListBucket on the prefix).")
    tes_objects = nag_text(stack, storage.bucket.arn_for_objects("tes/*"))
    acknowledge(workers.role, f"AwsSolutions-IAM5[Resource::{tes_objects}]",
                "GA4GH TES tasks read inputs from and write outputs to URLs their users choose under the tes/ "
                "prefix (DCC_TES_LOCATIONS); the API checks every URL is under it before a task is queued.")
    for arn in group_arns:
        for role in (stack.scaler_function.role, workers.role):
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{arn}]",
                        "An Auto Scaling group's ARN embeds a random id; the pattern names the group exactly.")
    connections = nag_text(stack, f"arn:{stack.partition}:execute-api:{stack.region}:{stack.account}:"
                                  f"{stack.websocket_api.api.api_id}/*/*/@connections/*")
    for role in (stack.websocket_function.role, stack.api_function.role, stack.scaler_function.role, workers.role):
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{connections}]",
                    "execute-api:ManageConnections on this WebSocket API's own connections, whose ids are not known "
                    "in advance: job state changes are pushed to the clients that subscribed.")

    acknowledge(workers.role, "AwsSolutions-IAM5[Resource::*]",
                "ecr:GetAuthorizationToken supports no resource-level permissions: AWS requires Resource '*'.")
    for name in stack.config.allowed_buckets:
        acknowledge(workers.role, f"AwsSolutions-IAM5[Resource::{nag_text(stack, input_bucket_objects(name))}]",
                    f"Jobs may name any object of {name} as an s3:// input (context allowedBuckets); read only.")
    ecr_repos = nag_text(stack, stack.format_arn(service="ecr", resource="repository", resource_name="*"))
    acknowledge(workers.role, f"AwsSolutions-IAM5[Resource::{ecr_repos}]",
                "Workers pull job images from any ECR repository of this account and region (read-only actions).")
    if stack.config.worker_ssm:
        acknowledge(workers.role,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
                    "Session Manager access to workers instead of SSH (context workerSsm); AWS maintains the policy.")
    for group in workers.groups.values():
        acknowledge(group, "AwsSolutions-AS3",
                    "The scaler function owns capacity and logs every decision; worker health is in Redis heartbeats.")

    rest = stack.rest_api.api
    acknowledge(rest, "AwsSolutions-APIG2",
                "Requests are validated in the API function (Powertools with pydantic models), with dcc's error "
                "messages; API Gateway models would duplicate the OpenAPI document.")
    acknowledge(rest, "AwsSolutions-APIG3",
                "Every method requires SigV4 (IAM) and the stage is throttled; a WAF web ACL can be attached per "
                "account without changing this stack.")
    acknowledge(rest, "AwsSolutions-COG4", "Callers authenticate with IAM (SigV4), not a Cognito user pool.")
    if stack.config.api_cloudwatch_role:
        acknowledge(rest, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                          "AmazonAPIGatewayPushToCloudWatchLogs]",
                    "The account-level role API Gateway uses to write access and execution logs; AWS's policy is "
                    "the documented one.")
    acknowledge(stack.websocket_api.api, "AwsSolutions-APIG4",
                "$connect requires IAM (SigV4); the other routes run on an already authorized connection, "
                "and API Gateway does not let them carry an authorizer.")
