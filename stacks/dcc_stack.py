"""DccStack: wires the network, the job store, the bucket, the functions, the APIs, the scaler and the workers."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.api import RestApi, WebSocketApi
from stacks.config import DccConfig
from stacks.functions import DccFunction
from stacks.nag import acknowledge_findings
from stacks.network import Network
from stacks.scaler import ScalerSchedule
from stacks.state import RedisCache
from stacks.storage import JobBucket, grant_job_data, grant_job_data_read
from stacks.workers import GPU_AMI_PARAMETER, FleetSpec, WorkerFleets

API_HANDLER = "functions.api.handler.lambda_handler"
WEBSOCKET_HANDLER = "functions.api.websocket.lambda_handler"
SCALER_HANDLER = "functions.scaler.handler.lambda_handler"
SMOKE_IMAGE = "public.ecr.aws/docker/library/busybox:latest"
INLINE_INPUT_BYTES = 3 << 20
"""Inline inputs a submit may carry on AWS: in base64 in the JSON body, which reaches the function in base64 again,
with the rest of the spec (at most 256 KiB), it stays under Lambda's 6 MB request payload."""


class DccStack(Stack):
    """Everything dcc needs in one account and region."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DccConfig | None = None,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config = config or DccConfig.from_context(self.node)

        self.network = Network(self, "Network", nat_gateways=config.nat_gateways)
        vpc, private = self.network.vpc, self.network.private_subnets
        self.storage = JobBucket(self, "Storage", retention_days=config.job_data_retention_days,
                                 access_logs=config.bucket_access_logs)
        self.redis = RedisCache(self, "Redis", vpc=vpc, subnets=self.network.data_subnets,
                                node_type=config.redis_node_type, replicas=config.redis_replicas)
        bucket = self.storage.bucket
        allowed_buckets = ",".join(config.allowed_buckets)
        slots = config.slots()
        dcc_env = {
            "REDIS_URL": self.redis.url,
            "DCC_REDIS_SECRET_ARN": self.redis.secret.secret_arn,
            "DCC_STORAGE": self.storage.storage_url,
            "DCC_ALLOWED_BUCKETS": allowed_buckets,
            "DCC_TES_LOCATIONS": self.storage.tes_url,
            # a job asking for more GPUs than a GPU worker has would wait forever: the API refuses it
            "DCC_MAX_GPUS_PER_WORKER": str(slots["gpu"]),
            # the smoke jobs' image from ECR Public: Docker Hub limits anonymous pulls per address, and every worker
            # pulls through the one NAT address
            "DCC_SMOKE_IMAGE": SMOKE_IMAGE,
        }

        def function(construct_id: str, *, handler: str, service: str, timeout: Duration,
                     description: str, env: dict[str, str] | None = None) -> DccFunction:
            fn = DccFunction(self, construct_id, handler=handler, service=service, vpc=vpc, subnets=private,
                             environment={**dcc_env, **(env or {})}, log_level=config.log_level,
                             timeout=timeout, description=description)
            self.redis.allow_from(fn.security_group, f"dcc {service} function")
            self.redis.secret.grant_read(fn.role)
            return fn

        # API Gateway gives up after 29 s; the long-poll routes answer within 25 s.
        # A request reaches the function base64-encoded (the API's binary media types are */*) inside a 6 MB payload:
        # 3 MiB of inline inputs, base64 in the JSON body, is 5.6 MB there.
        self.api_function = function("ApiFunction", handler=API_HANDLER, service="api",
                                     timeout=Duration.seconds(29), description="dcc HTTP API",
                                     env={"DCC_MAX_INLINE_BYTES": str(INLINE_INPUT_BYTES)})
        grant_job_data(self.api_function.role, bucket)
        self.rest_api = RestApi(self, "Api", handler=self.api_function.function,
                                throttle_rate=config.api_throttle_rate, throttle_burst=config.api_throttle_burst,
                                api_keys=config.api_keys, cloudwatch_role=config.api_cloudwatch_role)

        self.websocket_function = function("WebSocketFunction", handler=WEBSOCKET_HANDLER, service="websocket",
                                           timeout=Duration.seconds(29), description="dcc job updates")
        self.websocket_api = WebSocketApi(self, "WebSocket", handler=self.websocket_function.function,
                                          throttle_rate=config.api_throttle_rate,
                                          throttle_burst=config.api_throttle_burst)
        self.websocket_api.grant_manage_connections(self.websocket_function.function)
        # a job whose Redis record expired is read from its result.json, as the REST API does
        grant_job_data_read(self.websocket_function.role, bucket)
        if config.api_cloudwatch_role:  # the stage's access logs need the account's API Gateway logging role first
            account = self.rest_api.api.node.find_child("Account")
            self.websocket_api.stage.node.add_dependency(account)
        self.websocket_function.function.add_environment("DCC_WEBSOCKET_CALLBACK_URL",
                                                         self.websocket_api.callback_url)

        cpu_image = ec2.MachineImage.latest_amazon_linux2023(
            cpu_type=ec2.AmazonLinuxCpuType.ARM_64 if config.cpu_arch == "arm64" else ec2.AmazonLinuxCpuType.X86_64)
        gpu_image = ec2.MachineImage.from_ssm_parameter(
            GPU_AMI_PARAMETER, os=ec2.OperatingSystemType.LINUX)
        self.workers = WorkerFleets(
            self, "Workers", vpc=vpc, subnets=private,
            specs=[FleetSpec("cpu", config.cpu_instance_type, cpu_image, config.cpu_min, config.cpu_max),
                   FleetSpec("gpu", config.gpu_instance_type, gpu_image, config.gpu_min, config.gpu_max,
                             gpu_runtime=config.gpu_docker_runtime)],
            bucket=bucket, storage_url=self.storage.storage_url, tes_url=self.storage.tes_url,
            redis_host=self.redis.host,
            redis_port=self.redis.port, redis_secret=self.redis.secret, allowed_buckets=allowed_buckets,
            input_buckets=config.allowed_buckets, volume_gib=config.worker_volume_gib, ssm=config.worker_ssm,
            log_level=config.log_level, websocket_endpoint=self.websocket_api.callback_url)
        self.redis.allow_from(self.workers.security_group, "dcc workers")

        names = self.workers.group_names
        self.scaler_function = function(
            "ScalerFunction", handler=SCALER_HANDLER, service="scaler", timeout=Duration.seconds(50),
            description="dcc scaler and reaper",
            env={"DCC_CPU_GROUP": names["cpu"], "DCC_GPU_GROUP": names["gpu"],
                 # a group's slots per instance until its workers report theirs (the first scale-up from zero)
                 "DCC_CPU_SLOTS": str(slots["cpu"]), "DCC_GPU_SLOTS": str(slots["gpu"]),
                 **dict(config.scaler_env)})  # the policy's knobs set by context (cpuIdleSeconds, drain, ...)
        # The reaper ends jobs past their last attempt, and that writes their result.json.
        grant_job_data(self.scaler_function.role, bucket)
        self.scaler = ScalerSchedule(self, "Scaler", function=self.scaler_function.function,
                                     group_names=list(names.values()))

        # Whoever changes a job's state pushes it to WebSocket subscribers: workers, the API (cancels) and the
        # scaler's reaper.
        for pusher in (self.api_function, self.scaler_function):
            self.websocket_api.grant_manage_connections(pusher.function)
            pusher.function.add_environment("DCC_WEBSOCKET_ENDPOINT", self.websocket_api.callback_url)
        self.websocket_api.grant_manage_connections(self.workers.role)

        CfnOutput(self, "ApiUrl", value=self.rest_api.url, description="HTTP API (IAM auth)")
        CfnOutput(self, "WebSocketUrl", value=self.websocket_api.url, description="WebSocket API")
        CfnOutput(self, "BucketName", value=bucket.bucket_name, description="job data bucket")
        if self.rest_api.api_key is not None:
            CfnOutput(self, "ApiKeyId", value=self.rest_api.api_key.key_id,
                      description="aws apigateway get-api-key --include-value --api-key <this>")
        CfnOutput(self, "CpuGroupName", value=self.workers.groups["cpu"].auto_scaling_group_name)
        CfnOutput(self, "GpuGroupName", value=self.workers.groups["gpu"].auto_scaling_group_name)
        acknowledge_findings(self)
