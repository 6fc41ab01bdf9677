"""The scaling policy, table-driven (pure: no Redis, no AWS)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

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
    needed_instances,
    plan,
    scaled_down,
)

NOW = 100_000.0
CFG = Config(idle_seconds=900, health_grace_seconds=300, scale_down_interval=300)


def group(**kw: Any) -> GroupState:
    base: dict[str, Any] = dict(name="cpu", queued=0, running=0, slots_per_instance=4, min_size=0, max_size=10,
                                desired=0)
    base.update(kw)
    if "instances" in base and "desired" not in kw:
        base["desired"] = len(base["instances"])
    return GroupState(**base)


def healthy(id_: str, *, running: int = 0, idle_for: float | None = None, protected: bool | None = None,
            state: str = "InService", draining: bool = False, age: float = 3600) -> Instance:
    """A healthy worker long past its boot; protected as the policy would have left it unless told."""
    return Instance(id=id_, launched_at=NOW - age, lifecycle_state=state,
                    protected=running > 0 if protected is None else protected, health="HEALTHY",
                    running_jobs=running, idle_since=None if idle_for is None else NOW - idle_for, draining=draining)


def of(kind: type, actions: list[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


# scale up ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("queued", "running", "desired", "min_size", "max_size", "expected"), [
    (0, 0, 0, 0, 10, []),                             # nothing to do
    (1, 0, 0, 0, 10, [SetDesired("cpu", 1)]),         # from zero
    (300, 0, 0, 0, 10, [SetDesired("cpu", 10)]),      # a burst: all it needs at once, capped by max
    (17, 3, 2, 0, 10, [SetDesired("cpu", 5)]),        # ceil((17 + 3) / 4) = 5, in one step
    (18, 3, 2, 0, 10, [SetDesired("cpu", 6)]),        # ceil(21 / 4) = 6
    (4, 4, 2, 0, 10, []),                             # already enough
    (0, 0, 0, 2, 10, [SetDesired("cpu", 2)]),         # raised to the minimum
    (1, 0, 6, 0, 10, []),                             # more than needed: SetDesired never lowers
    (50, 0, 12, 0, 10, []),                           # above a lowered max: left to the group
])
def test_scale_up_at_once(queued: int, running: int, desired: int, min_size: int, max_size: int,
                          expected: list[Action]) -> None:
    instances = tuple(healthy(f"i-{n}", running=1) for n in range(desired))
    state = group(queued=queued, running=running, desired=desired, min_size=min_size, max_size=max_size,
                  instances=instances)
    assert of(SetDesired, plan(state, NOW, CFG)) == expected


# GPUs per job: (running GPUs per instance, GPUs each queued job asks for in queue order, queued past those (one
# each), max size, instances needed); 4 GPUs an instance
@pytest.mark.parametrize(("loads", "sizes", "rest", "max_size", "expected"), [
    ((), (3, 3, 3, 3), 0, 10, 4),        # a job is not split: four, not ceil(12 / 4) = 3
    ((), (3, 3, 3, 3), 0, 3, 3),         # capped by max
    ((3, 3), (2,), 0, 10, 3),            # 1 GPU free on each: the 2-GPU job needs a third, not ceil(8 / 4) = 2
    ((3, 2), (2, 2), 0, 10, 3),          # the first fits beside the 2, the second needs a new instance
    ((3, 3), (1, 1), 0, 10, 2),          # small jobs fill the gaps
    ((), (3, 1, 3), 0, 10, 2),           # in queue order: the 1 fills the first instance's gap
    ((), (3, 3), 2, 10, 2),              # past the sizes read, one GPU each: they fill the gaps...
    ((), (3, 3), 3, 10, 3),              # ...and what is left over takes a new instance
    ((), (1, 1, 1, 1, 1), 0, 10, 2),     # all of one GPU: ceil(5 / 4), as when counting GPUs alone
    ((4,), (4, 4), 0, 10, 3),
])
def test_jobs_of_several_gpus_are_placed_whole(loads: tuple[int, ...], sizes: tuple[int, ...], rest: int,
                                               max_size: int, expected: int) -> None:
    instances = tuple(healthy(f"g-{n}", running=load) for n, load in enumerate(loads))
    state = group(name="gpu", queued=sum(sizes) + rest, queued_sizes=sizes, running=sum(loads), max_size=max_size,
                  instances=instances)
    assert needed_instances(state) == expected
    raise_to = [SetDesired("gpu", expected)] if expected > len(loads) else []
    assert of(SetDesired, plan(state, NOW, CFG)) == raise_to


def test_a_draining_instance_is_not_counted_as_room_for_queued_gpu_jobs() -> None:
    # g-0 drains with 3 of its 4 GPUs held: the 2-GPU job waiting needs one active instance of its own (counted
    # with g-0's jobs as room and instance, it would be two), and the group one more than it has
    gone = healthy("g-0", running=3, draining=True)
    state = group(name="gpu", queued=2, queued_sizes=(2,), running=3, instances=(gone,))
    assert needed_instances(state, [gone]) == 1
    assert of(SetDesired, plan(state, NOW, CFG)) == [SetDesired("gpu", 2)]


def test_booting_instances_count_towards_desired() -> None:
    booting = tuple(Instance(f"i-{n}", launched_at=NOW - 30, lifecycle_state="Pending") for n in range(3))
    assert plan(group(queued=12, desired=3, instances=booting), NOW, CFG) == []


# protection ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("running", "protected", "expected"), [
    (2, False, [Protect("i-1", True)]),   # busy: protect
    (2, True, []),                         # already protected
    (0, True, [Protect("i-1", False)]),   # idle (not yet long enough to remove): unprotect
    (0, False, []),
])
def test_busy_instances_are_protected_and_idle_ones_not(running: int, protected: bool,
                                                        expected: list[Action]) -> None:
    inst = healthy("i-1", running=running, idle_for=None if running else 60, protected=protected)
    state = group(running=running, desired=1, instances=(inst,))
    assert plan(state, NOW, CFG) == expected


def test_pending_instances_are_left_alone() -> None:
    pending = Instance("i-p", launched_at=NOW - 3600, lifecycle_state="Pending:Wait", health=None)
    leaving = healthy("i-t", idle_for=5000, state="Terminating")
    assert plan(group(desired=2, instances=(pending, leaving)), NOW, CFG) == []


# scale down -----------------------------------------------------------------------------------------------
def test_busy_instance_survives_scale_down_and_idle_one_goes() -> None:
    state = group(running=1, instances=(healthy("i-busy", running=1), healthy("i-idle", idle_for=1000,
                                                                              protected=True)))
    actions = plan(state, NOW, CFG)
    assert actions == [Protect("i-idle", False), TerminateIdle("i-idle")]
    assert scaled_down(actions)


@pytest.mark.parametrize(("idle_for", "last_down", "queued", "min_size", "terminated"), [
    (1000, 0.0, 0, 0, True),
    (900, 0.0, 0, 0, True),             # exactly the idle time
    (600, 0.0, 0, 0, False),            # not idle long enough
    (1000, NOW - 60, 0, 0, False),      # one scale-down per interval
    (1000, NOW - 300, 0, 0, True),      # the interval has passed
    (1000, 0.0, 1, 0, False),           # work is waiting
    (1000, 0.0, 0, 2, False),           # never below min
])
def test_scale_down_rules(idle_for: float, last_down: float, queued: int, min_size: int,
                          terminated: bool) -> None:
    state = group(queued=queued, running=1, last_scale_down=last_down, min_size=min_size,
                  instances=(healthy("i-a", running=1), healthy("i-b", idle_for=idle_for)))
    assert (TerminateIdle("i-b") in plan(state, NOW, CFG)) == terminated


@pytest.mark.parametrize(("min_size", "running", "expected"), [
    (0, 0, ["i-4", "i-3", "i-2", "i-1"]),   # longest idle first, all of them in one scale-down
    (1, 0, ["i-4", "i-3", "i-2"]),          # down to the minimum
    (0, 6, ["i-4", "i-3", "i-2", "i-1"]),   # the busy two hold the running jobs
    (0, 14, ["i-4", "i-3"]),                # down to what the running jobs need, wherever they run: 4
])
def test_one_scale_down_removes_every_idle_instance_down_to_the_floor(min_size: int, running: int,
                                                                      expected: list[str]) -> None:
    idle = tuple(healthy(f"i-{n}", idle_for=900 + 100 * n) for n in range(1, 5))
    busy = tuple(healthy(f"i-b{n}", running=3) for n in range(2 if running else 0))
    state = group(min_size=min_size, running=running, instances=idle + busy)
    assert [a.instance for a in plan(state, NOW, CFG) if isinstance(a, TerminateIdle)] == expected


def test_unknown_idle_time_is_never_removed() -> None:
    state = group(instances=(healthy("i-1"),))   # an older worker reporting no idleSince
    assert not scaled_down(plan(state, NOW, CFG))


# health -------------------------------------------------------------------------------------------------
def test_unhealthy_or_silent_workers_are_replaced_and_their_jobs_requeued() -> None:
    sick = Instance("i-sick", launched_at=NOW - 3600, health="UNHEALTHY:disk 95% full", running_jobs=2,
                    protected=True)
    silent = Instance("i-silent", launched_at=NOW - 3600, health=None)
    booting = Instance("i-new", launched_at=NOW - 60, health=None)
    booting_sick = Instance("i-new2", launched_at=NOW - 60, health="UNHEALTHY:docker unreachable")
    actions = plan(group(running=2, instances=(sick, silent, booting, booting_sick)), NOW, CFG)
    assert Drain("i-new") in actions     # 2 jobs need one instance; the booting ones are the surplus
    assert [a for a in actions if not isinstance(a, Drain)] == [
        Protect("i-sick", False), TerminateUnhealthy("i-sick", "UNHEALTHY:disk 95% full"), RequeueWorker("i-sick"),
        TerminateUnhealthy("i-silent", "no health key"), RequeueWorker("i-silent"),
    ]


def test_after_a_redis_restart_missing_health_keys_are_given_the_grace_again() -> None:
    silent = Instance("i-silent", launched_at=NOW - 3600, health=None)  # its key went with the old Redis
    sick = Instance("i-sick", launched_at=NOW - 3600, health="UNHEALTHY:x")  # written since: believed
    assert of(TerminateUnhealthy, plan(group(instances=(silent,), heartbeats_since=NOW - 60), NOW, CFG)) == []
    assert of(TerminateUnhealthy, plan(group(instances=(silent,), heartbeats_since=NOW - 301), NOW, CFG)) == [
        TerminateUnhealthy("i-silent", "no health key")]
    assert of(TerminateUnhealthy, plan(group(instances=(sick,), heartbeats_since=NOW - 60), NOW, CFG)) == [
        TerminateUnhealthy("i-sick", "UNHEALTHY:x")]


def test_a_gpu_instance_has_longer_to_boot_before_a_missing_health_key_counts() -> None:
    booting = Instance("i-gpu", launched_at=NOW - 420, health=None)  # 7 minutes: the driver, then the worker's install
    gpu, cpu = Config.for_class("gpu"), Config.for_class("cpu")
    assert (cpu.health_grace_seconds, gpu.health_grace_seconds) == (300, 600)
    assert of(TerminateUnhealthy, plan(group(name="gpu", instances=(booting,)), NOW, gpu)) == []
    assert of(TerminateUnhealthy, plan(group(instances=(booting,)), NOW, cpu)) == [
        TerminateUnhealthy("i-gpu", "no health key")]
    assert Config.for_class("gpu", health_grace_seconds=60).health_grace_seconds == 60  # (DCC_HEALTH_GRACE_SECONDS)


def test_sick_instances_are_not_scaled_down_as_idle() -> None:
    sick = Instance("i-sick", launched_at=NOW - 3600, health="UNHEALTHY:x", idle_since=NOW - 5000)
    actions = plan(group(instances=(sick,)), NOW, CFG)
    assert of(TerminateIdle, actions) == [] and TerminateUnhealthy("i-sick", "UNHEALTHY:x") in actions


# config -------------------------------------------------------------------------------------------------
def test_class_defaults() -> None:
    assert Config.for_class("cpu").idle_seconds == 15 * 60
    assert Config.for_class("gpu").idle_seconds == 30 * 60
    assert Config().drain is True and Config().drained_idle_seconds == 0 and Config().scale_down_interval == 60
    assert Config.for_class("cpu", drain=False).drain is False
    assert Config.for_class("gpu", scale_down_interval=60).scale_down_interval == 60
    assert needed_instances(group(min_size=2)) == 2
    assert needed_instances(group(queued=3, slots_per_instance=0)) == 3   # a bad slot count never divides by 0


# draining -----------------------------------------------------------------------------------------------
def test_surplus_busy_instances_are_drained_least_loaded_and_newest_first() -> None:
    insts = (healthy("i-full", running=4), healthy("i-old1", running=1, age=7200), healthy("i-new1", running=1),
             healthy("i-two", running=2))
    # 8 jobs: 2 instances are enough, the two least loaded (the newer first on a tie) are drained
    actions = plan(group(running=8, instances=insts), NOW, CFG)
    assert of(Drain, actions) == [Drain("i-new1"), Drain("i-old1")]
    assert of(TerminateIdle, actions) == [] and of(SetDesired, actions) == []


def test_nothing_is_drained_while_the_backlog_needs_every_instance() -> None:
    insts = (healthy("i-a", running=4), healthy("i-b", running=1))
    assert of(Drain, plan(group(queued=3, running=5, instances=insts), NOW, CFG)) == []   # ceil(8 / 4) = 2


def test_an_idle_instance_is_left_to_the_idle_time_not_drained() -> None:
    insts = (healthy("i-idle", idle_for=60), healthy("i-busy", running=4))
    # 4 jobs need one instance of two: the idle one stays as spare capacity (its idle time rules it),
    # the busy one is the surplus and will go when its jobs end
    assert plan(group(running=4, instances=insts), NOW, CFG) == [Drain("i-busy")]
    assert plan(group(queued=1, running=4, instances=insts), NOW, CFG) == []


def test_a_booting_instance_the_backlog_no_longer_needs_is_drained() -> None:
    booting = Instance("i-new", launched_at=NOW - 30)   # in service, no health key yet
    actions = plan(group(running=4, instances=(healthy("i-a", running=4), booting)), NOW, CFG)
    assert actions == [Drain("i-new")]


def test_draining_can_be_turned_off() -> None:
    insts = (healthy("i-a", running=1), healthy("i-b", running=1))
    assert of(Drain, plan(group(running=2, instances=insts), NOW, replace(CFG, drain=False))) == []


def test_a_drained_instance_goes_as_soon_as_it_is_empty() -> None:
    insts = (healthy("i-d", idle_for=5, draining=True, protected=True), healthy("i-a", running=2))
    actions = plan(group(running=2, instances=insts), NOW, CFG)
    assert actions == [Protect("i-d", False), TerminateIdle("i-d")]       # not 15 idle minutes later
    assert TerminateIdle("i-d") not in plan(group(running=2, instances=insts), NOW, replace(
        CFG, drained_idle_seconds=60))


@pytest.mark.parametrize(("last_down", "min_size", "removed"), [
    (NOW - 60, 0, False),     # one scale-down per interval, drained or not
    (0.0, 2, False),          # never below the minimum
    (0.0, 1, True),
])
def test_drained_removal_keeps_the_interval_and_the_minimum(last_down: float, min_size: int, removed: bool) -> None:
    insts = (healthy("i-d", idle_for=5, draining=True), healthy("i-a", running=2))
    state = group(running=2, last_scale_down=last_down, min_size=min_size, instances=insts)
    assert (TerminateIdle("i-d") in plan(state, NOW, CFG)) == removed


def test_a_draining_instance_with_jobs_is_never_removed() -> None:
    insts = (healthy("i-d", running=1, draining=True), healthy("i-a", running=1))
    actions = plan(group(running=2, instances=insts), NOW, CFG)
    assert of(TerminateIdle, actions) == [] and of(Undrain, actions) == []


def test_demand_undrains_before_it_boots_least_loaded_first() -> None:
    insts = (healthy("i-a", running=4), healthy("i-d3", running=3, draining=True),
             healthy("i-d1", running=1, draining=True), healthy("i-d4", running=4, draining=True))
    # 3 queued + 4 on i-a: two active instances needed; i-d1 has the most free slots
    actions = plan(group(queued=3, running=12, instances=insts), NOW, CFG)
    assert of(Undrain, actions) == [Undrain("i-d1")] and of(SetDesired, actions) == []
    # 10 queued: i-d1 then i-d3 come back (i-d4 is full: no help), and one more instance boots
    actions = plan(group(queued=10, running=12, instances=insts), NOW, CFG)
    assert of(Undrain, actions) == [Undrain("i-d1"), Undrain("i-d3")]
    assert of(SetDesired, actions) == [SetDesired("cpu", 6)]   # ceil((10 + 8) / 4) = 5 active + i-d4 draining


def test_scale_up_counts_draining_instances_apart() -> None:
    insts = (healthy("i-d", running=4, draining=True),)
    # 4 queued need one active instance; the draining one is full, so the group grows to 2
    assert of(SetDesired, plan(group(queued=4, running=4, instances=insts), NOW, CFG)) == [SetDesired("cpu", 2)]
    assert needed_instances(group(queued=4, running=4), insts) == 1
    assert needed_instances(group(queued=4, running=4)) == 2


def test_a_warm_instance_is_not_drained_for_capacity_still_booting() -> None:
    pending = tuple(Instance(f"i-p{n}", launched_at=NOW - 30, lifecycle_state="Pending") for n in range(3))
    warm = healthy("i-warm", running=2)
    # 4 queued + 2 running need 2 instances of 4 wanted (3 of them still pending): the warm one stays at work
    state = group(queued=4, running=2, slots_per_instance=2, desired=4, instances=(warm, *pending))
    assert of(Drain, plan(state, NOW, CFG)) == []
    # drained before this rule, empty now, with jobs waiting: it is put back to work, not removed
    drained = replace(warm, running_jobs=0, draining=True, idle_since=NOW - 5, protected=False)
    actions = plan(replace(state, running=0, instances=(drained, *pending)), NOW, CFG)
    assert of(Undrain, actions) == [Undrain("i-warm")] and of(TerminateIdle, actions) == []


def test_an_old_instance_whose_health_key_went_missing_is_not_drained_as_booting() -> None:
    silent = Instance("i-old", launched_at=NOW - 3600)  # in service, no key: Redis restarted, within the grace
    state = group(running=4, instances=(healthy("i-a", running=4), silent), heartbeats_since=NOW - 30)
    assert Drain("i-old") not in plan(state, NOW, CFG)  # (it was: taken for booting, and the least loaded)


def test_a_young_instance_is_not_drained_when_told_so() -> None:
    insts = (healthy("i-old", running=2, age=3600), healthy("i-new", running=1, age=120))
    state = group(running=3, slots_per_instance=4, instances=insts)
    assert of(Drain, plan(state, NOW, CFG)) == [Drain("i-new")]  # the least loaded, newest first
    # the young one is kept, and the surplus it is not put on the old one
    assert of(Drain, plan(state, NOW, replace(CFG, drain_age_seconds=300))) == []


def test_a_drained_instance_is_put_back_to_work_while_capacity_boots_in_service() -> None:
    booting = Instance("i-new", launched_at=NOW - 60)  # in service, its worker not up yet (no health key)
    drained = healthy("i-d", idle_for=5, draining=True)
    state = group(queued=2, running=2, slots_per_instance=2, desired=3,
                  instances=(healthy("i-full", running=2), drained, booting))
    actions = plan(state, NOW, CFG)
    assert of(Undrain, actions) == [Undrain("i-d")] and of(TerminateIdle, actions) == []
    assert of(Drain, actions) == []


def test_other_queues_jobs_on_a_draining_instance_are_not_taken_off_this_queue_s_running() -> None:
    # GPU group, 1 slot an instance: g1 drains while it runs 3 CPU jobs (a GPU worker serves both queues); g2 runs
    # the one running GPU job, and one more GPU job waits: it needs an instance of its own
    g1 = replace(healthy("g1", running=3, draining=True), queue_jobs=0)
    g2 = replace(healthy("g2", running=1), queue_jobs=1)
    state = group(name="gpu", queued=1, running=1, slots_per_instance=1, instances=(g1, g2))
    assert of(SetDesired, plan(state, NOW, CFG)) == [SetDesired("gpu", 3)]
