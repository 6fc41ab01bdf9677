"""The scaler against moto (Auto Scaling, EC2) and a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from dcc.drain import DrainMarks
from dcc.jobs import Claim, JobRecord, JobSpec, JobState, Outcome
from dcc.local_storage import LocalStorage
from dcc.scaling import Drain, Protect, SetDesired, TerminateIdle, TerminateUnhealthy, Undrain, plan
from dcc.service import result_key
from dcc.store import JobStore, connect, worker_slots
from functions.scaler import handler
from functions.scaler.handler import apply, config_for, gather, last_down_key, run_once

pytestmark = pytest.mark.redis

GROUPS = {"cpu": "cpu-group", "gpu": "gpu-group"}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1",
                 "DCC_HEALTH_GRACE_SECONDS": "0", "DCC_CPU_IDLE_SECONDS": "600",
                 "DCC_SCALE_DOWN_INTERVAL": "0"}.items():
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
    handler.metrics.clear_metrics()  # run_once adds metrics that only the Lambda entry point flushes


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(connect(redis_url), lease_seconds=60)


def describe(autoscaling: Any, name: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return groups[0]


def instance_ids(autoscaling: Any, name: str) -> list[str]:
    return [i["InstanceId"] for i in describe(autoscaling, name)["Instances"]]


def queue_jobs(store: JobStore, n: int, *, prefix: str = "j", queue: str = "cpu") -> None:
    gpu = {"parameters": {"gpu": 1}} if queue == "gpu" else {}
    for i in range(n):
        store.create(JobRecord(id=f"{prefix}{i}", spec=JobSpec.model_validate({"image": "x", **gpu}),
                               state=JobState.QUEUED, queue=queue, submitted_at=time.time()), only_if_new=False)


def claim(store: JobStore, worker: str) -> Claim:
    got = store.claim("cpu", worker)
    assert got is not None
    return got


def beat(store: JobStore, worker: str, *, health: str = "HEALTHY", running: str = "",
         idle_for: float | None = None) -> None:
    idle = "" if idle_for is None else repr(time.time() - idle_for)
    store.heartbeat(worker, {"health": health, "slots": "cpu=2", "running": running, "idleSince": idle}, ttl=60)


def state_of(store: JobStore, job_id: str) -> JobState:
    record = store.get(job_id)
    assert record is not None
    return record.state


def test_a_burst_sets_desired_to_several_instances_at_once(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    for worker in instance_ids(autoscaling, "cpu-group"):
        beat(store, worker, running="x")
    queue_jobs(store, 9)
    queue_jobs(store, 3, prefix="g", queue="gpu")
    infos = store.redis.info("commandstats").get("cmdstat_info", {}).get("calls", 0)
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    # one INFO a pass (Redis's uptime, for the restart grace), and this one
    assert store.redis.info("commandstats")["cmdstat_info"]["calls"] - infos == 2
    assert SetDesired("cpu-group", 5) in taken["cpu"]        # 9 queued over 2 slots each: 2 → 5 in one step
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 5
    assert describe(autoscaling, "gpu-group")["DesiredCapacity"] == 3   # 1 slot per GPU instance by default


def test_a_burst_is_capped_by_the_group_maximum(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    for worker in instance_ids(autoscaling, "cpu-group"):
        beat(store, worker, running="x")
    queue_jobs(store, 300)
    run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 6


def test_unhealthy_worker_is_replaced_and_its_jobs_requeued(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    sick, fine = instance_ids(autoscaling, "cpu-group")
    queue_jobs(store, 2)
    claims = [claim(store, sick), claim(store, fine)]
    beat(store, sick, health="UNHEALTHY:docker unreachable", running=claims[0].job.id)
    beat(store, fine, running=claims[1].job.id)
    pushed: list[str] = []
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS, notify=pushed.append)
    assert TerminateUnhealthy(sick, "UNHEALTHY:docker unreachable") in taken["cpu"]
    assert pushed == [claims[0].job.id]                     # websocket subscribers hear of the requeue
    assert state_of(store, claims[0].job.id) == JobState.QUEUED   # at once, not at lease expiry
    assert state_of(store, claims[1].job.id) == JobState.RUNNING
    group = describe(autoscaling, "cpu-group")
    ids = {i["InstanceId"] for i in group["Instances"]}
    assert sick not in ids and fine in ids
    assert group["DesiredCapacity"] == 2                     # not decremented: the group replaces it


def test_a_job_the_pass_ends_gets_its_result_json(aws: tuple[Any, Any], store: JobStore, tmp_path: Any) -> None:
    autoscaling, ec2 = aws
    sick, _ = instance_ids(autoscaling, "cpu-group")
    queue_jobs(store, 1)
    store.max_attempts = 1  # its one attempt is lost with the worker: it ends in error
    job_id = claim(store, sick).job.id
    beat(store, sick, health="UNHEALTHY:docker unreachable", running=job_id)
    storage = LocalStorage(tmp_path)
    run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS, storage=storage)
    assert state_of(store, job_id) == JobState.ERROR
    stored = json.loads(storage.get_bytes(result_key(job_id)))  # served by id after the record expires
    assert (stored["state"], stored["error"]["code"]) == ("error", "worker_lost")


def test_jobs_ended_before_redis_fails_mid_pass_still_get_their_result_json(
        aws: tuple[Any, Any], store: JobStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from dcc.errors import StoreUnavailable

    autoscaling, ec2 = aws
    workers = instance_ids(autoscaling, "cpu-group")
    queue_jobs(store, 2)
    store.max_attempts = 1
    jobs = [claim(store, w).job.id for w in workers]
    for worker, job_id in zip(workers, jobs, strict=True):
        beat(store, worker, health="UNHEALTHY:docker unreachable", running=job_id)
    drop = store.drop_worker
    dropped: list[str] = []

    def failing_after_one(worker: str) -> dict[str, JobState]:
        if dropped:
            raise StoreUnavailable("Redis is unavailable")
        dropped.append(worker)
        return drop(worker)

    monkeypatch.setattr(store, "drop_worker", failing_after_one)
    storage = LocalStorage(tmp_path)
    pushed: list[str] = []
    run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS, storage=storage, notify=pushed.append)
    [ended] = [j for j, w in zip(jobs, workers, strict=True) if w in dropped]
    assert state_of(store, ended) == JobState.ERROR and pushed == [ended]
    assert json.loads(storage.get_bytes(result_key(ended)))["state"] == "error"  # kept, though the pass failed


def test_a_silent_worker_is_replaced_only_after_the_grace_period(aws: tuple[Any, Any], store: JobStore,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    autoscaling, ec2 = aws
    silent, fine = instance_ids(autoscaling, "cpu-group")
    beat(store, fine, idle_for=0)
    monkeypatch.setenv("DCC_HEALTH_GRACE_SECONDS", "300")   # moto's instances were launched just now
    monkeypatch.setenv("DCC_DRAIN", "false")                 # (a booting instance nothing needs would be drained)
    assert run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)["cpu"] == []
    monkeypatch.setenv("DCC_HEALTH_GRACE_SECONDS", "0")
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert TerminateUnhealthy(silent, "no health key") in taken["cpu"]
    assert silent not in instance_ids(autoscaling, "cpu-group")


def test_workers_whose_health_keys_expired_while_redis_was_out_of_reach_are_not_replaced_for_it(
        aws: tuple[Any, Any], redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    autoscaling, ec2 = aws
    store = JobStore(connect(redis_url), lease_seconds=2)  # (a silence: no worker's heartbeat for over 1 s)
    monkeypatch.setenv("DCC_HEALTH_GRACE_SECONDS", "3")
    monkeypatch.setenv("DCC_DRAIN", "false")
    workers = instance_ids(autoscaling, "cpu-group")
    for worker in workers:
        store.heartbeat(worker, {"health": "HEALTHY", "slots": "cpu=2"}, ttl=0.5)
    time.sleep(3.2)  # Redis out of reach (Redis itself runs on): the keys expire; the instances are past booting
    assert all(store.redis.exists(f"{store.prefix}:worker:{w}") == 0 for w in workers)
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert not [a for a in taken["cpu"] if isinstance(a, TerminateUnhealthy)]  # they get their grace again
    assert sorted(instance_ids(autoscaling, "cpu-group")) == sorted(workers)
    time.sleep(3.1)  # none of them heartbeats within the grace: now they are replaced
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert {a for a in taken["cpu"] if isinstance(a, TerminateUnhealthy)} == {
        TerminateUnhealthy(w, "no health key") for w in workers}


def test_the_gpu_group_is_sized_in_gpus_so_a_big_job_blocked_by_a_small_one_gets_an_instance(
        aws: tuple[Any, Any], store: JobStore) -> None:
    from dcc.store import Blocked

    autoscaling, ec2 = aws
    autoscaling.set_desired_capacity(AutoScalingGroupName="gpu-group", DesiredCapacity=1)
    [gpu_worker] = instance_ids(autoscaling, "gpu-group")
    store.heartbeat(gpu_worker, {"health": "HEALTHY", "slots": "cpu=4,gpu=4", "running": ""}, ttl=60)
    for job_id, gpus, at in (("small", 1, 100.0), ("big", 4, 101.0)):
        store.create(JobRecord(id=job_id, spec=JobSpec.model_validate({"image": "x", "parameters": {"gpu": gpus}}),
                               state=JobState.QUEUED, queue="gpu", submitted_at=at), only_if_new=False)
    assert store.claim("gpu", gpu_worker, free_gpus=4, worker_gpus=4).job.id == "small"
    assert store.claim("gpu", gpu_worker, free_gpus=3, worker_gpus=4) == Blocked(gpus=4)  # first in line, waiting
    assert store.running_by_worker(gpus=True) == {gpu_worker: {"gpu": 1}} and store.queued_gpus() == ((4,), 0)
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups={"gpu": "gpu-group"})
    # 1 GPU running + 4 asked = 5 GPUs, over 4 per instance: two instances (counting jobs, 2 over 4 slots: one)
    assert SetDesired("gpu-group", 2) in taken["gpu"]
    assert describe(autoscaling, "gpu-group")["DesiredCapacity"] == 2


def test_a_gpu_job_that_fits_in_no_instance_s_free_gpus_gets_an_instance(aws: tuple[Any, Any],
                                                                         store: JobStore) -> None:
    autoscaling, ec2 = aws
    autoscaling.set_desired_capacity(AutoScalingGroupName="gpu-group", DesiredCapacity=2)
    workers = instance_ids(autoscaling, "gpu-group")
    for worker in workers:
        store.heartbeat(worker, {"health": "HEALTHY", "slots": "cpu=4,gpu=4", "running": ""}, ttl=60)
    for job_id, gpus, at in (("a", 3, 100.0), ("b", 3, 101.0), ("c", 2, 102.0)):
        store.create(JobRecord(id=job_id, spec=JobSpec.model_validate({"image": "x", "parameters": {"gpu": gpus}}),
                               state=JobState.QUEUED, queue="gpu", submitted_at=at), only_if_new=False)
    for worker in workers:
        assert store.claim("gpu", worker, free_gpus=4, worker_gpus=4).job.spec.parameters.gpu == 3
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups={"gpu": "gpu-group"})
    # 3 + 3 running and 2 asked make 8 GPUs, two instances' worth, but the 2 GPUs wanted are not free on one: three
    assert SetDesired("gpu-group", 3) in taken["gpu"]
    assert describe(autoscaling, "gpu-group")["DesiredCapacity"] == 3


def test_busy_worker_survives_scale_down_and_idle_one_goes(aws: tuple[Any, Any], store: JobStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    autoscaling, ec2 = aws
    monkeypatch.setenv("DCC_SCALE_DOWN_INTERVAL", "300")
    busy, idle = instance_ids(autoscaling, "cpu-group")
    queue_jobs(store, 1)
    held = claim(store, busy)
    job = held.job.id
    beat(store, busy, running=job)
    beat(store, idle, idle_for=3600)
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert taken["cpu"] == [Protect(busy, True), TerminateIdle(idle)]
    left = {i["InstanceId"]: i for i in describe(autoscaling, "cpu-group")["Instances"]}
    assert set(left) == {busy} and left[busy]["ProtectedFromScaleIn"] is True
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 1
    assert state_of(store, job) == JobState.RUNNING
    assert float(store.redis.get("{dcc}:scaler:last_down:cpu")) == pytest.approx(time.time(), abs=30)

    # the job ends; the worker has been idle long enough, but the scale-down interval has not passed
    assert store.finish(held, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    beat(store, busy, idle_for=3600)
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert taken["cpu"] == [Protect(busy, False)]
    assert instance_ids(autoscaling, "cpu-group") == [busy]
    store.redis.set(last_down_key(store, "cpu"), repr(time.time() - 301))
    assert run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)["cpu"] == [TerminateIdle(busy)]
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 0


def test_a_worker_that_claimed_a_job_since_its_last_heartbeat_is_not_idle(aws: tuple[Any, Any],
                                                                           store: JobStore) -> None:
    autoscaling, ec2 = aws
    claimer, idle = instance_ids(autoscaling, "cpu-group")
    for worker in (claimer, idle):
        beat(store, worker, idle_for=3600)  # both said "idle for an hour" a few seconds ago
    queue_jobs(store, 1)
    job = claim(store, claimer).job.id  # then one claimed a job: its next heartbeat has not come yet
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert TerminateIdle(claimer) not in taken["cpu"] and Protect(claimer, True) in taken["cpu"]
    assert TerminateIdle(idle) in taken["cpu"]
    assert claimer in instance_ids(autoscaling, "cpu-group") and state_of(store, job) == JobState.RUNNING


def test_cpu_jobs_that_gpu_instances_run_need_no_cpu_instance(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    autoscaling.update_auto_scaling_group(AutoScalingGroupName="cpu-group", MinSize=0, DesiredCapacity=0)
    autoscaling.set_desired_capacity(AutoScalingGroupName="gpu-group", DesiredCapacity=1)
    [gpu_worker] = instance_ids(autoscaling, "gpu-group")
    queue_jobs(store, 3)
    running = [claim(store, gpu_worker).job.id for _ in range(3)]  # a GPU worker serves the cpu queue too
    store.heartbeat(gpu_worker, {"health": "HEALTHY", "slots": "cpu=3,gpu=1", "running": ",".join(running),
                                 "idleSince": ""}, ttl=60)
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert not any(isinstance(a, SetDesired) for a in taken["cpu"]), taken  # nothing is queued for it
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 0


def test_an_instance_idle_for_less_than_the_idle_time_stays(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    for worker in instance_ids(autoscaling, "cpu-group"):
        beat(store, worker, idle_for=300)                    # idle time is 600 s here
    assert run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)["cpu"] == []
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 2


class DeniedProtection:
    """The moto client, but SetInstanceProtection is refused (as with a role missing the permission)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def set_instance_protection(self, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "SetInstanceProtection")


def test_a_failed_action_does_not_stop_the_others(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    busy, idle = instance_ids(autoscaling, "cpu-group")
    queue_jobs(store, 1)
    beat(store, busy, running=claim(store, busy).job.id)
    beat(store, idle, idle_for=3600)
    taken = run_once(store=store, autoscaling=DeniedProtection(autoscaling), ec2=ec2, groups=GROUPS)
    assert taken["cpu"] == [TerminateIdle(idle)]             # the refused Protect is not reported as done
    assert instance_ids(autoscaling, "cpu-group") == [busy]


def test_config_and_slots_from_the_environment() -> None:
    assert config_for("gpu", {}).idle_seconds == 1800
    assert config_for("cpu", {"DCC_CPU_IDLE_SECONDS": "60", "DCC_SCALE_DOWN_INTERVAL": "30"}) == \
        config_for("cpu", {}).__class__(idle_seconds=60, health_grace_seconds=300, scale_down_interval=30)
    assert config_for("cpu", {}).drain is True
    assert config_for("cpu", {"DCC_DRAIN": "false", "DCC_DRAINED_IDLE_SECONDS": "30"}) == \
        config_for("cpu", {}).__class__(idle_seconds=900, drain=False, drained_idle_seconds=30)
    assert worker_slots({"slots": "cpu=3,gpu=1"}, "gpu") == 1
    assert worker_slots({"slots": "cpu=3"}, "gpu") is None


def test_lambda_entry_point_emits_metrics(aws: tuple[Any, Any], store: JobStore, redis_url: str,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DCC_CPU_GROUP", "cpu-group")
    monkeypatch.setenv("DCC_GPU_GROUP", "gpu-group")
    monkeypatch.setattr(handler, "_store", None)
    for worker in instance_ids(aws[0], "cpu-group"):
        beat(store, worker, idle_for=0)
    queue_jobs(store, 9)
    context = SimpleNamespace(function_name="scaler", memory_limit_in_mb=256, aws_request_id="req-1",
                              invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:scaler")
    reply = handler.lambda_handler({}, context)
    assert reply["cpu"] == [repr(SetDesired("cpu-group", 5))] and reply["gpu"] == []
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf, "no EMF blob printed"
    blob = {k: v[0] if isinstance(v, list) else v for k, v in emf[-1].items()}  # Powertools may emit [value]
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "dcc"
    assert {m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]} >= {
        "cpuQueueDepth", "cpuRunning", "cpuDesired", "cpuInService", "gpuQueueDepth", "gpuDesired"}
    assert blob["cpuQueueDepth"] == 9 and blob["cpuDesired"] == 5 and blob["cpuInService"] == 2
    assert blob["gpuQueueDepth"] == 0 and blob["gpuDesired"] == 0


def test_a_surplus_worker_is_drained_then_removed_once_empty(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    marks = DrainMarks(store.redis)
    a, b = instance_ids(autoscaling, "cpu-group")
    queue_jobs(store, 2)
    ja, jb = claim(store, a), claim(store, b)
    beat(store, a, running=ja.job.id)
    beat(store, b, running=jb.job.id)
    # 2 jobs fit on one instance (2 slots): one worker is marked draining, the other keeps claiming
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    [drained] = [x.instance for x in taken["cpu"] if isinstance(x, Drain)]
    kept = a if drained == b else b
    assert marks.draining([a, b]) == {drained}
    assert 0 < store.redis.pttl(f"{{dcc}}:drain:{drained}") <= 600_000
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 2

    # still running: the mark is refreshed, nothing is removed
    assert [x for x in run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)["cpu"]
            if not isinstance(x, Protect)] == []
    assert marks.draining([a, b]) == {drained}

    # its job ends: it goes at once (not after the 600 s idle time); its mark stays until it expires, so that the
    # instance claims nothing while it shuts down
    assert store.finish(ja if drained == a else jb, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    beat(store, drained, idle_for=1)
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert TerminateIdle(drained) in taken["cpu"]
    assert instance_ids(autoscaling, "cpu-group") == [kept]
    assert marks.draining([a, b]) == {drained}
    queue_jobs(store, 1, prefix="late")
    assert store.claim("cpu", drained) is None and state_of(store, "late0") == JobState.QUEUED


def test_an_instance_that_claims_a_job_after_the_plan_is_not_removed(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    marks = DrainMarks(store.redis)
    claimer, idle = instance_ids(autoscaling, "cpu-group")
    for worker in (claimer, idle):
        beat(store, worker, idle_for=3600)
    state = gather("cpu", "cpu-group", autoscaling=autoscaling, ec2=ec2, workers={
        w["id"]: w for w in store.workers()}, queued=0, leases=store.running_by_worker(), last_scale_down=0,
        now=time.time(), marks=marks)
    actions = plan(state, time.time(), config_for("cpu"))
    assert {TerminateIdle(claimer), TerminateIdle(idle)} <= set(actions)
    # a job comes, and one of the two claims it between the plan and its removal
    queue_jobs(store, 2)
    job = claim(store, claimer).job.id
    done, _ = apply(actions, group_name="cpu-group", store=store, autoscaling=autoscaling, marks=marks,
                            now=time.time())
    assert TerminateIdle(claimer) not in done and TerminateIdle(idle) in done
    assert instance_ids(autoscaling, "cpu-group") == [claimer] and state_of(store, job) == JobState.RUNNING
    assert marks.draining([claimer, idle]) == {idle}       # the one that stays may claim on
    assert store.claim("cpu", idle) is None                 # the one going takes nothing while it shuts down
    assert store.claim("cpu", claimer) is not None


def test_a_draining_worker_is_put_back_to_work_when_jobs_wait(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    marks = DrainMarks(store.redis)
    a, b = instance_ids(autoscaling, "cpu-group")
    queue_jobs(store, 2)
    beat(store, a, running=claim(store, a).job.id)
    beat(store, b, running=claim(store, b).job.id)
    marks.mark([b], now=time.time())
    queue_jobs(store, 2, prefix="more")     # 2 queued + 1 running on a: two active instances needed
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2, groups=GROUPS)
    assert Undrain(b) in taken["cpu"] and not any(isinstance(x, SetDesired) for x in taken["cpu"])
    assert marks.draining([a, b]) == set()
    assert describe(autoscaling, "cpu-group")["DesiredCapacity"] == 2


def test_one_group_s_failure_does_not_stop_the_pass_for_the_other(aws: tuple[Any, Any], store: JobStore) -> None:
    autoscaling, ec2 = aws
    queue_jobs(store, 2, prefix="g", queue="gpu")
    taken = run_once(store=store, autoscaling=autoscaling, ec2=ec2,
                     groups={"cpu": "no-such-group", "gpu": "gpu-group"})  # (a misspelt name: no such group)
    assert taken["cpu"] == [] and SetDesired("gpu-group", 2) in taken["gpu"]
    assert describe(autoscaling, "gpu-group")["DesiredCapacity"] == 2
    emitted = handler.metrics.serialize_metric_set()  # (the failure is counted: the invocation succeeds)
    assert emitted["cpuPassFailed"] == [1.0] and "gpuPassFailed" not in emitted
