"""The scaler against moto (Auto Scaling, EC2) and a real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dcc.jobs import JobRecord, JobSpec, JobState
from dcc.store import JobStore, connect
from functions.scaler.handler import run_once

pytestmark = pytest.mark.redis


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1",
                 "DCC_HEALTH_GRACE_SECONDS": "0", "DCC_CPU_IDLE_SECONDS": "0", "DCC_SCALE_DOWN_INTERVAL": "0"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        ec2 = boto3.client("ec2")
        autoscaling = boto3.client("autoscaling")
        ec2.create_launch_template(LaunchTemplateName="workers", LaunchTemplateData={"ImageId": "ami-12c6146b",
                                                                                "InstanceType": "t3.micro"})
        for name, size in (("cpu-group", 2), ("gpu-group", 0)):
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": "workers"}, MinSize=0, MaxSize=6,
                DesiredCapacity=size, AvailabilityZones=["us-east-1a"])
        yield autoscaling, ec2


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(connect(redis_url), lease_seconds=60)


GROUPS = {"cpu": "cpu-group", "gpu": "gpu-group"}


def instances(autoscaling: Any, group: str) -> list[dict]:
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"]


def queue_jobs(store: JobStore, n: int, *, prefix: str = "j", queue: str = "cpu") -> None:
    gpu = {"parameters": {"gpu": 1}} if queue == "gpu" else {}
    for i in range(n):
        store.create(JobRecord(id=f"{prefix}{i}", spec=JobSpec.model_validate({"image": "x", **gpu}),
                               state=JobState.QUEUED, queue=queue, submitted_at=time.time()), only_if_new=True)


def test_a_burst_scales_up_at_once(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    busy, other = [i["InstanceId"] for i in instances(autoscaling, "cpu-group")]
    for worker in (busy, other):
        store.heartbeat(worker, {"health": "HEALTHY", "slots": "cpu=2", "running": "x", "idleSince": ""}, ttl=60)
    queue_jobs(store, 9)
    queue_jobs(store, 3, prefix="g", queue="gpu")
    run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    cpu = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["cpu-group"])["AutoScalingGroups"][0]
    gpu = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["gpu-group"])["AutoScalingGroups"][0]
    assert cpu["DesiredCapacity"] == 5  # 9 queued over 2 slots each: 5 instances, in one step
    assert gpu["DesiredCapacity"] == 3  # 1 slot per GPU instance by default


def test_unhealthy_worker_is_replaced_and_its_jobs_requeued(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    sick, fine = [i["InstanceId"] for i in instances(autoscaling, "cpu-group")]
    queue_jobs(store, 2)
    claims = [store.claim("cpu", sick), store.claim("cpu", fine)]
    store.heartbeat(sick, {"health": "UNHEALTHY:docker unreachable", "slots": "cpu=2", "running": claims[0].job.id},
                    ttl=60)
    store.heartbeat(fine, {"health": "HEALTHY", "slots": "cpu=2", "running": claims[1].job.id}, ttl=60)
    pushed: list[str] = []
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS, notify=pushed.append)
    assert any(type(a).__name__ == "TerminateUnhealthy" and a.instance == sick for a in taken["cpu"])
    assert pushed == [claims[0].job.id]  # websocket subscribers hear of the requeue
    assert store.get(claims[0].job.id).state == JobState.QUEUED  # requeued at once, not at lease expiry
    assert store.get(claims[1].job.id).state == JobState.RUNNING
    ids = {i["InstanceId"] for i in instances(autoscaling, "cpu-group")}
    assert sick not in ids and fine in ids


def test_busy_worker_survives_scale_down_and_idle_one_goes(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    busy, idle = [i["InstanceId"] for i in instances(autoscaling, "cpu-group")]
    queue_jobs(store, 1)
    claim = store.claim("cpu", busy)
    store.heartbeat(busy, {"health": "HEALTHY", "slots": "cpu=2", "running": claim.job.id, "idleSince": ""}, ttl=60)
    store.heartbeat(idle, {"health": "HEALTHY", "slots": "cpu=2", "running": "",
                           "idleSince": repr(time.time() - 3600)}, ttl=60)
    run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    left = {i["InstanceId"]: i for i in instances(autoscaling, "cpu-group")}
    assert busy in left and left[busy]["ProtectedFromScaleIn"] is True
    assert idle not in left
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["cpu-group"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 1


def test_lambda_entry_point_emits_metrics(aws: tuple[Any, Any], store: JobStore, redis_url: str,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from types import SimpleNamespace

    from functions.scaler import handler

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DCC_CPU_GROUP", "cpu-group")
    monkeypatch.setenv("DCC_GPU_GROUP", "gpu-group")
    monkeypatch.setattr(handler, "_store", None)
    handler.metrics.clear_metrics()  # run_once in the other tests added metrics without a Lambda to flush them
    queue_jobs(store, 9)
    context = SimpleNamespace(function_name="scaler", memory_limit_in_mb=256, aws_request_id="req-1",
                              invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:scaler")
    reply = handler.lambda_handler({}, context)
    assert any("SetDesired" in a for a in reply["cpu"])
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf and emf[-1]["cpuQueueDepth"] in (9, 9.0, [9.0]) and emf[-1]["gpuQueueDepth"] in (0, 0.0, [0.0])
