"""Deployment parameters, read from CDK context (``cdk.json`` or ``-c key=value``) with safe defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from constructs import Node

from stacks import instance_types


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


SCALER_KEYS = {
    "cpuIdleSeconds": "DCC_CPU_IDLE_SECONDS",  # an idle CPU instance is removed after this (900)
    "gpuIdleSeconds": "DCC_GPU_IDLE_SECONDS",  # an idle GPU instance is removed after this (1800)
    "scaleDownInterval": "DCC_SCALE_DOWN_INTERVAL",  # at most one scale-down per interval (60)
    "healthGraceSeconds": "DCC_HEALTH_GRACE_SECONDS",  # a new instance's time to report healthy (300 CPU, 600 GPU)
    "drainAgeSeconds": "DCC_DRAIN_AGE_SECONDS",  # an instance younger than this is not drained (0)
    "drainedIdleSeconds": "DCC_DRAINED_IDLE_SECONDS",  # a drained instance is kept this long once empty (0)
}
"""Context keys of the scaler's policy knobs (seconds; ``dcc.scaling.Config`` holds the defaults) and the scaler
function's environment variables they set. ``drain`` (true/false) sets ``DCC_DRAIN``."""


@dataclass(frozen=True)
class DccConfig:
    """Everything a deployment may choose; ``from_context`` reads each field from the context key in its comment."""

    job_data_retention_days: int = 30  # jobDataRetentionDays
    bucket_access_logs: bool = False  # bucketAccessLogs: server access logs to a second bucket
    allowed_buckets: tuple[str, ...] = ()  # allowedBuckets: comma-separated, for s3:// inputs
    api_keys: bool = False  # apiKeys: require an API key (and a usage plan) on top of IAM
    api_cloudwatch_role: bool = True  # apiCloudWatchRole: set the account's API Gateway logging role (singleton)
    api_throttle_rate: float = 50.0  # apiThrottleRate: requests per second, steady
    api_throttle_burst: int = 100  # apiThrottleBurst
    nat_gateways: int = 1  # natGateways
    redis_node_type: str = "cache.t4g.small"  # redisNodeType
    redis_replicas: int = 1  # redisReplicas: 0 turns Multi-AZ failover off
    cpu_instance_type: str = "m7g.large"  # cpuInstanceType
    cpu_arch: str = "arm64"  # cpuArch: arm64 or x86_64 (default: cpuInstanceType's; must match it)
    cpu_min: int = 0  # cpuMin
    cpu_max: int = 4  # cpuMax
    gpu_instance_type: str = "g5.xlarge"  # gpuInstanceType
    gpu_min: int = 0  # gpuMin
    gpu_max: int = 2  # gpuMax
    cpu_vcpus: int | None = None  # cpuVcpus: vCPUs of cpuInstanceType, where its name does not say (t*, *.metal)
    gpu_count: int | None = None  # gpuCount: NVIDIA GPUs of gpuInstanceType, where dcc's table does not know it
    gpu_docker_runtime: str = ""  # gpuDockerRuntime: e.g. nvidia, the legacy runtime GPU jobs also run with
    worker_volume_gib: int = 100  # workerVolumeGiB
    worker_ssm: bool = True  # workerSsm: Session Manager access to workers
    log_level: str = "INFO"  # logLevel
    scaler_env: tuple[tuple[str, str], ...] = ()  # the keys of SCALER_KEYS and drain: the scaler's environment

    @classmethod
    def from_context(cls, node: Node) -> DccConfig:
        """The config from ``node``'s context; keys not given keep their defaults."""
        base = cls()

        def get(key: str, default: Any) -> Any:
            value = node.try_get_context(key)
            return default if value is None else value

        buckets = get("allowedBuckets", "")
        if isinstance(buckets, str):
            buckets = [b.strip() for b in buckets.split(",")]
        config = cls(
            job_data_retention_days=int(get("jobDataRetentionDays", base.job_data_retention_days)),
            bucket_access_logs=_bool(get("bucketAccessLogs", base.bucket_access_logs)),
            allowed_buckets=tuple(b for b in buckets if b),
            api_keys=_bool(get("apiKeys", base.api_keys)),
            api_cloudwatch_role=_bool(get("apiCloudWatchRole", base.api_cloudwatch_role)),
            api_throttle_rate=float(get("apiThrottleRate", base.api_throttle_rate)),
            api_throttle_burst=int(get("apiThrottleBurst", base.api_throttle_burst)),
            nat_gateways=int(get("natGateways", base.nat_gateways)),
            redis_node_type=str(get("redisNodeType", base.redis_node_type)),
            redis_replicas=int(get("redisReplicas", base.redis_replicas)),
            cpu_instance_type=str(get("cpuInstanceType", base.cpu_instance_type)),
            cpu_arch=str(get("cpuArch", instance_types.architecture(str(get("cpuInstanceType",
                                                                             base.cpu_instance_type)))
                             or base.cpu_arch)),
            cpu_min=int(get("cpuMin", base.cpu_min)),
            cpu_max=int(get("cpuMax", base.cpu_max)),
            gpu_instance_type=str(get("gpuInstanceType", base.gpu_instance_type)),
            gpu_min=int(get("gpuMin", base.gpu_min)),
            gpu_max=int(get("gpuMax", base.gpu_max)),
            cpu_vcpus=_optional_int(get("cpuVcpus", None)),
            gpu_count=_optional_int(get("gpuCount", None)),
            gpu_docker_runtime=str(get("gpuDockerRuntime", base.gpu_docker_runtime)).strip(),
            worker_volume_gib=int(get("workerVolumeGiB", base.worker_volume_gib)),
            worker_ssm=_bool(get("workerSsm", base.worker_ssm)),
            log_level=str(get("logLevel", base.log_level)),
            scaler_env=_scaler_env(get),
        )
        if not re.fullmatch(r"([a-z0-9][a-z0-9._-]{0,63})?", config.gpu_docker_runtime):  # (it goes into user data)
            raise ValueError(f"gpuDockerRuntime must be a Docker runtime's name (e.g. nvidia), not "
                             f"{config.gpu_docker_runtime!r}")
        if config.cpu_arch not in ("arm64", "x86_64"):
            raise ValueError(f"cpuArch must be arm64 or x86_64, not {config.cpu_arch!r}")
        arch = instance_types.architecture(config.cpu_instance_type)
        if arch is not None and arch != config.cpu_arch:  # (the image would not boot: every launch would fail)
            raise ValueError(f"cpuInstanceType {config.cpu_instance_type!r} is {arch} but cpuArch is "
                             f"{config.cpu_arch}: leave cpuArch out, or set it to {arch}")
        if instance_types.architecture(config.gpu_instance_type) == "arm64":
            raise ValueError(f"gpuInstanceType {config.gpu_instance_type!r} is arm64 (Graviton), and the GPU workers' "
                             "image (the ECS GPU-optimized Amazon Linux 2023) is x86_64 only: choose an x86_64 "
                             "GPU type (g4dn, g5, g6, p4d, ...)")
        config.slots()  # a type whose counts are unknown fails here, naming the context key to set
        return config

    def slots(self) -> dict[str, int]:
        """Job slots of one worker of each group, as the worker agent counts them: a CPU worker runs a CPU job
        per vCPU; a GPU worker runs a GPU job per GPU (and CPU jobs on the rest, which the scaler does not
        count on). The scaler sizes the groups from these until workers report their own."""
        cpus = self.cpu_vcpus or instance_types.vcpus(self.cpu_instance_type)
        if not cpus:
            raise ValueError(f"cpuInstanceType {self.cpu_instance_type!r}: its vCPUs are not known offline; "
                             "set the context key cpuVcpus")
        gpus = self.gpu_count if self.gpu_count is not None else instance_types.nvidia_gpus(self.gpu_instance_type)
        if gpus < 1:
            raise ValueError(f"gpuInstanceType {self.gpu_instance_type!r} has no NVIDIA GPU dcc knows of; "
                             "set the context key gpuCount")
        return {"cpu": cpus, "gpu": gpus}


def _scaler_env(get: Any) -> tuple[tuple[str, str], ...]:
    """The scaler's environment from the context keys given (those not given keep the policy's defaults)."""
    env: list[tuple[str, str]] = []
    for key, variable in SCALER_KEYS.items():
        value = get(key, None)
        if value in (None, ""):
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError(f"{key} must be a number of seconds, 0 or more, not {value!r}")
        env.append((variable, repr(int(seconds)) if seconds.is_integer() else repr(seconds)))
    drain = get("drain", None)
    if drain not in (None, ""):
        if str(drain).strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"drain must be true or false, not {drain!r}")
        env.append(("DCC_DRAIN", "true" if _bool(drain) else "false"))
    return tuple(env)
