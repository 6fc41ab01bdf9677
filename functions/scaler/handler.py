"""The scaler Lambda, every minute: reap expired leases, then size both worker groups by ``dcc.scaling``.

It only gathers inputs (Redis, Auto Scaling, EC2), calls the policy and applies its actions. Environment:
``DCC_CPU_GROUP`` / ``DCC_GPU_GROUP`` (group names), ``DCC_CPU_IDLE_SECONDS`` / ``DCC_GPU_IDLE_SECONDS``,
``DCC_HEALTH_GRACE_SECONDS``, ``DCC_SCALE_DOWN_INTERVAL``, ``DCC_DRAIN`` (``false`` turns draining off),
``DCC_DRAINED_IDLE_SECONDS``, ``DCC_DRAIN_AGE_SECONDS``, ``DCC_CPU_SLOTS`` / ``DCC_GPU_SLOTS`` (slots per
instance until a worker reports its own), ``POWERTOOLS_METRICS_NAMESPACE`` (``dcc``). Drain marks are
``dcc.drain`` keys, refreshed on every pass while an instance drains and deleted when it is un-drained; an instance
being removed (idle, or sick) keeps its mark until the mark expires.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import boto3
import redis
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from dcc.bootstrap import build_storage, build_store
from dcc.drain import DrainMarks
from dcc.jobs import JobState
from dcc.scaling import (
    Action,
    Config,
    Drain,
    GroupState,
    Instance,
    Protect,
    RequeueWorker,
    SetDesired,
    TerminateIdle,
    TerminateUnhealthy,
    Undrain,
    plan,
)
from dcc.service import keep_results
from dcc.settings import Settings
from dcc.storage import Storage
from dcc.store import JobStore, worker_slots

logger = Logger(service="dcc-scaler")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "dcc"), service="scaler")

GROUP_ENV = {"cpu": "DCC_CPU_GROUP", "gpu": "DCC_GPU_GROUP"}
DEFAULT_SLOTS = {"cpu": 2, "gpu": 1}
PROTECT_BATCH = 50
"""SetInstanceProtection takes at most 50 instance ids per call."""


def config_for(queue: str, environ: dict[str, str] | None = None) -> Config:
    """The policy's knobs for ``queue``: its defaults, overridden by the environment."""
    env = os.environ if environ is None else environ
    overrides: dict[str, float | bool] = {}
    for key, name in ((f"DCC_{queue.upper()}_IDLE_SECONDS", "idle_seconds"),
                      ("DCC_HEALTH_GRACE_SECONDS", "health_grace_seconds"),
                      ("DCC_SCALE_DOWN_INTERVAL", "scale_down_interval"),
                      ("DCC_DRAINED_IDLE_SECONDS", "drained_idle_seconds"),
                      ("DCC_DRAIN_AGE_SECONDS", "drain_age_seconds")):
        if env.get(key):
            overrides[name] = float(env[key])
    if env.get("DCC_DRAIN"):
        overrides["drain"] = env["DCC_DRAIN"].strip().lower() not in ("false", "0", "no", "off")
    return Config.for_class(queue, **overrides)


def last_down_key(store: JobStore, queue: str) -> str:
    """Where the time of ``queue``'s last scale-down is kept (under the store's hash tag)."""
    return f"{store.prefix}:scaler:last_down:{queue}"


def _instance(asg_instance: dict[str, Any], launched_at: float, worker: dict[str, str], draining: bool,
              leased: dict[str, int], queue: str) -> Instance:
    """One instance as the policy sees it. It runs what its heartbeat says, or what leases say it claimed since
    (a heartbeat is a few seconds old: an instance that just claimed a job is not idle)."""
    running = [j for j in worker.get("running", "").split(",") if j]
    idle_since = worker.get("idleSince")
    busy = max(len(running), sum(leased.values()))
    return Instance(
        id=asg_instance["InstanceId"], launched_at=launched_at, lifecycle_state=asg_instance["LifecycleState"],
        protected=bool(asg_instance.get("ProtectedFromScaleIn")), health=worker.get("health"),
        running_jobs=busy, idle_since=float(idle_since) if idle_since and not busy else None, draining=draining,
        queue_jobs=leased.get(queue, 0))


def gather(queue: str, group_name: str, *, autoscaling: Any, ec2: Any, workers: dict[str, dict[str, str]],
           queued: int, leases: dict[str, dict[str, int]], last_scale_down: float, now: float, marks: DrainMarks,
           heartbeats_since: float = 0.0, queued_sizes: tuple[int, ...] = ()) -> GroupState:
    """The policy's view of one group: its bounds and instances (from AWS) joined with the workers' heartbeats,
    the leases their jobs hold (``leases``: per worker and queue) and drain marks. The group's running jobs are
    those of ``queue`` its own instances run (a GPU instance running CPU jobs needs no CPU instance for them).
    ``queued_sizes``: the slots each queued job asks for, in queue order (the GPU queue's)."""
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in group["Instances"]]
    launched: dict[str, float] = {}
    if ids:
        for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=ids):
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    launched[inst["InstanceId"]] = inst["LaunchTime"].timestamp()
    draining = marks.draining(ids)
    instances = tuple(_instance(i, launched.get(i["InstanceId"], now), workers.get(i["InstanceId"], {}),
                                i["InstanceId"] in draining, leases.get(i["InstanceId"], {}), queue)
                      for i in group["Instances"])
    running = sum(leases.get(i, {}).get(queue, 0) for i in ids)
    reported = [s for s in (worker_slots(workers[i], queue) for i in ids if i in workers) if s]
    slots = min(reported) if reported else int(os.environ.get(f"DCC_{queue.upper()}_SLOTS", DEFAULT_SLOTS[queue]))
    return GroupState(name=group_name, queued=queued, running=running, slots_per_instance=slots,
                      min_size=group["MinSize"], max_size=group["MaxSize"], desired=group["DesiredCapacity"],
                      instances=instances, last_scale_down=last_scale_down, heartbeats_since=heartbeats_since,
                      queued_sizes=queued_sizes)


def apply(actions: list[Action], *, group_name: str, store: JobStore, autoscaling: Any, marks: DrainMarks,
          now: float, changed: dict[str, JobState] | None = None) -> tuple[list[Action], dict[str, JobState]]:
    """Carry out the policy's actions on one group, in order.

    Returns the actions that took effect and the jobs whose state changed. An AWS error fails only its
    own action (logged; the next pass sees the group as it is and plans again). Drain marks are set before
    capacity changes, one round trip each way: a worker learns within a heartbeat whether it may claim. An instance
    being removed keeps its mark until the mark expires, so that it claims nothing while it shuts down.
    ``changed``: where the changed jobs are put as they change (the caller's, so that they are not lost with a
    Redis error later in the pass).
    """
    done: list[Action] = []
    changed = {} if changed is None else changed
    # The last check before a removal, in one step with the claims: an instance judged idle whose worker claimed a
    # job since is kept, protection and all; the others are marked draining and claim nothing until they are gone.
    kept = {a.instance for a in actions if isinstance(a, TerminateIdle)
            and not store.fence_idle(a.instance, mark_ttl=marks.ttl)}
    if kept:
        logger.info("kept instances that claimed a job since they were judged idle", extra={"instances": sorted(kept)})
        actions = [a for a in actions if not (isinstance(a, TerminateIdle | Protect) and a.instance in kept)]
    protect = {flag: [a for a in actions if isinstance(a, Protect) and a.protected is flag] for flag in (False, True)}
    for flag, batch in protect.items():  # batched: one call per 50 instances, unprotecting first
        for start in range(0, len(batch), PROTECT_BATCH):
            chunk = batch[start:start + PROTECT_BATCH]
            if _call(autoscaling.set_instance_protection, chunk, InstanceIds=[a.instance for a in chunk],
                     AutoScalingGroupName=group_name, ProtectedFromScaleIn=flag):
                done += chunk
    undrain = [a for a in actions if isinstance(a, Undrain)]
    marks.clear(a.instance for a in undrain)
    drain = [a for a in actions if isinstance(a, Drain)]
    # (a sick worker that still runs is kept from claiming too: a job it took now would die with its instance)
    marks.mark([*(a.instance for a in drain), *(a.instance for a in actions if isinstance(a, TerminateUnhealthy))],
               now=now)
    done += [*undrain, *drain]
    for action in actions:
        if isinstance(action, SetDesired):
            ok = _call(autoscaling.set_desired_capacity, [action], AutoScalingGroupName=group_name,
                       DesiredCapacity=action.desired, HonorCooldown=False)
        elif isinstance(action, TerminateIdle):
            ok = _call(autoscaling.terminate_instance_in_auto_scaling_group, [action], InstanceId=action.instance,
                       ShouldDecrementDesiredCapacity=True)
        elif isinstance(action, TerminateUnhealthy):  # the group starts a replacement
            ok = _call(autoscaling.terminate_instance_in_auto_scaling_group, [action], InstanceId=action.instance,
                       ShouldDecrementDesiredCapacity=False)
        elif isinstance(action, RequeueWorker):  # even if the termination failed: the worker is not serving
            changed.update(store.drop_worker(action.worker))
            ok = True
        else:
            continue  # Protect, Drain, Undrain: applied above
        if ok:
            done.append(action)
    for action in done:
        logger.info("scaler action", extra={"group": group_name, "action": repr(action)})
    return done, changed


def _call(fn: Callable[..., Any], actions: Sequence[Action], **kwargs: Any) -> bool:
    try:
        fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        logger.warning("scaler action failed", extra={"actions": [repr(a) for a in actions], "error": str(exc)})
        return False
    return True


def _desired_after(state: GroupState, done: list[Action]) -> int:
    desired = state.desired
    for action in done:
        if isinstance(action, SetDesired):
            desired = action.desired
        elif isinstance(action, TerminateIdle):
            desired -= 1
    return desired


def _draining_after(state: GroupState, done: list[Action]) -> list[str]:
    """The instances still draining once ``done`` took effect."""
    draining = {i.id for i in state.instances if i.draining}
    for action in done:
        if isinstance(action, Drain):
            draining.add(action.instance)
        elif isinstance(action, Undrain | TerminateIdle | TerminateUnhealthy):
            draining.discard(action.instance)
    return sorted(draining)


def run_once(*, store: JobStore, autoscaling: Any, ec2: Any, groups: dict[str, str],
             now: float | None = None, notify: Callable[[str], object] | None = None,
             storage: Storage | None = None) -> dict[str, list[Action]]:
    """One scaler pass over ``groups`` (queue → group name); returns the actions that took effect per queue.

    ``notify`` is called with each job id whose state the pass changed (WebSocket pushes on AWS); the jobs it
    ended get their ``result.json`` in ``storage``.
    """
    now = time.time() if now is None else now
    marks = DrainMarks(store.redis, prefix=store.prefix)
    uptime = store.uptime()
    reaped = store.reap(uptime=uptime)
    # a missing health key gets its grace again from Redis's start or the end of a silence of every worker's
    # heartbeats (Redis out of reach or failed over: the keys expired meanwhile)
    heartbeats_since = max(0.0 if uptime is None else now - uptime, store.resumed_at)
    if reaped:
        logger.info("reaped expired leases", extra={"jobs": {k: v.value for k, v in reaped.items()}})
    _settle(reaped, store=store, storage=storage, notify=notify)  # (now: what follows may fail)
    workers = {w["id"]: w for w in store.workers()}
    depths = store.queue_depths()["queues"]
    sizes: dict[str, tuple[int, ...]] = {}
    if "gpu" in groups and depths.get("gpu"):  # the GPU group is sized in GPUs (its slots): a 4-GPU job needs 4
        sizes["gpu"], rest = store.queued_gpus()
        depths["gpu"] = sum(sizes["gpu"]) + rest
    leases = store.running_by_worker(gpus=True)
    taken: dict[str, list[Action]] = {}
    for queue, group_name in groups.items():
        try:
            taken[queue] = _pass_group(queue, group_name, store=store, autoscaling=autoscaling, ec2=ec2,
                                       workers=workers, depths=depths, sizes=sizes.get(queue, ()), leases=leases,
                                       now=now, marks=marks, heartbeats_since=heartbeats_since, storage=storage,
                                       notify=notify)
        except Exception:  # (a throttled or misnamed group): the other group is still served this pass
            logger.exception("scaler pass failed for a group", extra={"queue": queue, "group": group_name})
            metrics.add_metric(name=f"{queue}PassFailed", unit=MetricUnit.Count, value=1)  # (the invocation succeeds)
            taken[queue] = []
    return taken


def _pass_group(queue: str, group_name: str, *, store: JobStore, autoscaling: Any, ec2: Any,
                workers: dict[str, dict[str, str]], depths: dict[str, int], sizes: tuple[int, ...],
                leases: dict[str, dict[str, int]], now: float, marks: DrainMarks, heartbeats_since: float,
                storage: Storage | None, notify: Callable[[str], object] | None) -> list[Action]:
    """One group's part of a pass: gather, plan, apply, record; the actions that took effect."""
    last_down = store.redis.get(last_down_key(store, queue))
    state = gather(queue, group_name, autoscaling=autoscaling, ec2=ec2, workers=workers,
                   queued=depths.get(queue, 0), queued_sizes=sizes, leases=leases,
                   last_scale_down=float(last_down or 0), now=now, marks=marks,
                   heartbeats_since=heartbeats_since)
    changed: dict[str, JobState] = {}
    try:
        done, _ = apply(plan(state, now, config_for(queue)), group_name=group_name, store=store,
                        autoscaling=autoscaling, marks=marks, now=now, changed=changed)
    finally:  # (jobs a sick worker lost before Redis failed mid-pass still get their result.json and push)
        _settle(changed, store=store, storage=storage, notify=notify)
    draining = _draining_after(state, done)
    marks.mark(draining, now=now)  # refresh: a mark outlives a stopped scaler by its TTL only
    if any(isinstance(a, TerminateIdle) for a in done):
        try:
            store.redis.set(last_down_key(store, queue), repr(now), ex=86_400)
        except redis.RedisError as exc:  # (e.g. Redis full): the next pass may scale down sooner, nothing worse
            logger.warning("could not record the scale-down time", extra={"queue": queue, "error": str(exc)})
    metrics.add_metric(name=f"{queue}QueueDepth", unit=MetricUnit.Count, value=state.queued)
    metrics.add_metric(name=f"{queue}Running", unit=MetricUnit.Count, value=state.running)
    metrics.add_metric(name=f"{queue}Desired", unit=MetricUnit.Count, value=_desired_after(state, done))
    metrics.add_metric(name=f"{queue}InService", unit=MetricUnit.Count,
                       value=sum(1 for i in state.instances if i.in_service))
    metrics.add_metric(name=f"{queue}Draining", unit=MetricUnit.Count, value=len(draining))
    return done


def _settle(changed: dict[str, JobState], *, store: JobStore, storage: Storage | None,
            notify: Callable[[str], object] | None) -> None:
    """What follows jobs the pass took back or ended: their results kept, their subscribers told."""
    if storage is not None:
        keep_results(store, storage, [job_id for job_id, state in changed.items() if state.terminal])
    for job_id in changed:
        if notify is None:
            break
        try:
            notify(job_id)
        except Exception:  # a failed push must not stop the scaler; clients can still poll
            logger.warning("could not push the state of %s", job_id, exc_info=True)


_store: JobStore | None = None
_storage: Storage | None = None


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The scheduled entry point."""
    global _store, _storage
    if _store is None or _storage is None:
        settings = Settings.from_env()
        _store, _storage = build_store(settings), build_storage(settings.storage_url)
    groups = {queue: os.environ[env] for queue, env in GROUP_ENV.items() if os.environ.get(env)}
    notify = None
    endpoint = os.environ.get("DCC_WEBSOCKET_ENDPOINT")
    if endpoint:
        from dcc.push import WebsocketPusher

        notify = WebsocketPusher(_store, boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)).push
    taken = run_once(store=_store, autoscaling=boto3.client("autoscaling"), ec2=boto3.client("ec2"), groups=groups,
                     notify=notify, storage=_storage)
    return {queue: [repr(a) for a in actions] for queue, actions in taken.items()}
