"""The scaler Lambda, every minute: reap expired leases, then size both worker groups by ``dcc.scaling``.

It only gathers inputs (Redis, Auto Scaling, EC2) and applies the policy's actions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from dcc.bootstrap import build_store
from dcc.jobs import JobState
from dcc.scaling import (
    Config,
    GroupState,
    Instance,
    Protect,
    RequeueWorker,
    SetDesired,
    TerminateIdle,
    TerminateUnhealthy,
    plan,
)
from dcc.settings import Settings
from dcc.store import JobStore

logger = Logger(service="dcc-scaler")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "dcc"), service="scaler")
DEFAULT_SLOTS = {"cpu": 2, "gpu": 1}
IDLE_DEFAULTS = {"cpu": 15 * 60.0, "gpu": 30 * 60.0}


def _config(queue: str) -> Config:
    return Config(
        idle_seconds=float(os.environ.get(f"DCC_{queue.upper()}_IDLE_SECONDS", IDLE_DEFAULTS[queue])),
        health_grace_seconds=float(os.environ.get("DCC_HEALTH_GRACE_SECONDS", 300)),
        scale_down_interval=float(os.environ.get("DCC_SCALE_DOWN_INTERVAL", 300)),
    )


def gather(queue: str, group_name: str, *, store: JobStore, autoscaling: Any, ec2: Any,
           workers: dict[str, dict[str, str]]) -> GroupState:
    """The policy's view of one group."""
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in group["Instances"]]
    launched: dict[str, float] = {}
    if ids:
        for reservation in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for inst in reservation["Instances"]:
                launched[inst["InstanceId"]] = inst["LaunchTime"].timestamp()
    instances = []
    slots: list[int] = []
    for i in group["Instances"]:
        worker = workers.get(i["InstanceId"], {})
        running = [j for j in worker.get("running", "").split(",") if j]
        for part in worker.get("slots", "").split(","):
            name, _, n = part.partition("=")
            if name == queue and n.isdigit():
                slots.append(int(n))
        instances.append(Instance(
            id=i["InstanceId"], launched_at=launched.get(i["InstanceId"], time.time()),
            protected=bool(i.get("ProtectedFromScaleIn")), health=worker.get("health"),
            running_jobs=len(running), idle_since=float(worker["idleSince"]) if worker.get("idleSince") else None,
            in_service=i["LifecycleState"] == "InService"))
    depths = store.queue_depths()
    last_down = store.redis.get(f"{store.prefix}:scaler:last_down:{queue}")
    return GroupState(
        name=group_name, queued=depths["queues"][queue], running=store.running_by_queue().get(queue, 0),
        slots_per_instance=min(slots) if slots else int(os.environ.get(f"DCC_{queue.upper()}_SLOTS",
                                                                       DEFAULT_SLOTS[queue])),
        min_size=group["MinSize"], max_size=group["MaxSize"], desired=group["DesiredCapacity"],
        instances=tuple(instances), last_scale_down=float(last_down or 0))


def apply(actions: list[Any], *, group_name: str, store: JobStore, autoscaling: Any) -> dict[str, JobState]:
    """Carry out the policy's actions on one group; returns the jobs whose state changed."""
    changed: dict[str, JobState] = {}
    for action in actions:
        logger.info("scaler action", extra={"group": group_name, "action": repr(action)})
        if isinstance(action, SetDesired):
            autoscaling.set_desired_capacity(AutoScalingGroupName=group_name, DesiredCapacity=action.desired,
                                             HonorCooldown=False)
        elif isinstance(action, Protect):
            autoscaling.set_instance_protection(InstanceIds=[action.instance], AutoScalingGroupName=group_name,
                                                ProtectedFromScaleIn=action.protected)
        elif isinstance(action, TerminateIdle):
            autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=action.instance,
                                                                 ShouldDecrementDesiredCapacity=True)
        elif isinstance(action, TerminateUnhealthy):  # the group starts a replacement
            autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=action.instance,
                                                                 ShouldDecrementDesiredCapacity=False)
        elif isinstance(action, RequeueWorker):
            changed.update(store.drop_worker(action.worker))
    return changed


def run_once(*, store: JobStore, autoscaling: Any, ec2: Any, groups: dict[str, str],
             now: float | None = None, notify: Callable[[str], object] | None = None) -> dict[str, list[Any]]:
    """One scaler pass over ``groups`` (queue → group name); returns the actions taken per queue.

    ``notify`` is called with each job id whose state the pass changed (WebSocket pushes on AWS).
    """
    reaped = store.reap()
    if reaped:
        logger.info("reaped expired leases", extra={"jobs": {k: v.value for k, v in reaped.items()}})
    workers = {w["id"]: w for w in store.workers()}
    taken: dict[str, list[Any]] = {}
    for queue, group_name in groups.items():
        state = gather(queue, group_name, store=store, autoscaling=autoscaling, ec2=ec2, workers=workers)
        result = plan(state, now if now is not None else time.time(), _config(queue))
        reaped.update(apply(result.actions, group_name=group_name, store=store, autoscaling=autoscaling))
        if result.scaled_down:
            store.redis.set(f"{store.prefix}:scaler:last_down:{queue}", repr(time.time()))
        metrics.add_metric(name=f"{queue}QueueDepth", unit=MetricUnit.Count, value=state.queued)
        metrics.add_metric(name=f"{queue}Running", unit=MetricUnit.Count, value=state.running)
        metrics.add_metric(name=f"{queue}Desired", unit=MetricUnit.Count, value=state.desired)
        metrics.add_metric(name=f"{queue}Instances", unit=MetricUnit.Count,
                           value=sum(1 for i in state.instances if i.in_service))
        taken[queue] = result.actions
    for job_id in reaped:
        if notify is None:
            break
        try:
            notify(job_id)
        except Exception:  # a failed push must not stop the scaler; clients can still poll
            logger.warning("could not push the state of %s", job_id, exc_info=True)
    return taken


_store: JobStore | None = None


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The scheduled entry point."""
    global _store
    if _store is None:
        _store = build_store(Settings.from_env())
    groups = {"cpu": os.environ["DCC_CPU_GROUP"], "gpu": os.environ["DCC_GPU_GROUP"]}
    notify = None
    endpoint = os.environ.get("DCC_WEBSOCKET_ENDPOINT")
    if endpoint:
        from dcc.push import WebsocketPusher

        notify = WebsocketPusher(_store, boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)).push
    taken = run_once(store=_store, autoscaling=boto3.client("autoscaling"), ec2=boto3.client("ec2"), groups=groups,
                     notify=notify)
    return {queue: [repr(a) for a in actions] for queue, actions in taken.items()}
