"""The scaling policy, table-driven (pure)."""

from __future__ import annotations

import pytest

from dcc.scaling import (
    Config,
    GroupState,
    Instance,
    Protect,
    RequeueWorker,
    SetDesired,
    TerminateIdle,
    TerminateUnhealthy,
    needed_instances,
    plan,
)

NOW = 100_000.0
CFG = Config(idle_seconds=900, health_grace_seconds=300, scale_down_interval=300)


def group(**kw: object) -> GroupState:
    base: dict = dict(name="cpu", queued=0, running=0, slots_per_instance=4, min_size=0, max_size=10, desired=0)
    base.update(kw)
    return GroupState(**base)


def healthy(id_: str, *, running: int = 0, idle_for: float | None = None, protected: bool = False) -> Instance:
    return Instance(id=id_, launched_at=NOW - 3600, protected=protected, health="HEALTHY", running_jobs=running,
                    idle_since=None if idle_for is None else NOW - idle_for)


@pytest.mark.parametrize(("queued", "running", "desired", "max_size", "expected"), [
    (0, 0, 0, 10, []),
    (1, 0, 0, 10, [SetDesired("cpu", 1)]),
    (300, 0, 0, 10, [SetDesired("cpu", 10)]),        # a burst: all it needs at once, capped by max
    (17, 3, 2, 10, [SetDesired("cpu", 5)]),          # (17 + 3) / 4 = 5
    (4, 4, 2, 10, []),                               # already enough
])
def test_scale_up_at_once(queued: int, running: int, desired: int, max_size: int, expected: list) -> None:
    instances = tuple(healthy(f"i-{n}", running=1) for n in range(desired))
    actions = plan(group(queued=queued, running=running, desired=desired, max_size=max_size,
                         instances=tuple(i for i in instances)), NOW, CFG).actions
    assert [a for a in actions if isinstance(a, SetDesired)] == expected


def test_never_below_min() -> None:
    assert needed_instances(group(min_size=2)) == 2
    state = group(min_size=1, desired=1, instances=(healthy("i-1", idle_for=5000),))
    assert plan(state, NOW, CFG).actions == []


def test_busy_instances_are_protected_and_survive_scale_down() -> None:
    state = group(desired=2, running=1, last_scale_down=0.0,
                  instances=(healthy("i-busy", running=1), healthy("i-idle", idle_for=1000, protected=True)))
    result = plan(state, NOW, CFG)
    assert Protect("i-busy", True) in result.actions
    assert TerminateIdle("i-idle") in result.actions and result.scaled_down
    assert not any(isinstance(a, TerminateIdle) and a.instance == "i-busy" for a in result.actions)


@pytest.mark.parametrize(("idle_for", "last_down", "queued", "terminated"), [
    (1000, 0.0, 0, True),
    (600, 0.0, 0, False),             # not idle long enough
    (1000, NOW - 60, 0, False),       # one scale-down per interval
    (1000, 0.0, 1, False),            # work is waiting
])
def test_scale_down_rules(idle_for: float, last_down: float, queued: int, terminated: bool) -> None:
    state = group(desired=2, queued=queued, running=1, last_scale_down=last_down,
                  instances=(healthy("i-a", running=1), healthy("i-b", idle_for=idle_for)))
    assert (TerminateIdle("i-b") in plan(state, NOW, CFG).actions) == terminated


def test_unhealthy_or_silent_workers_are_replaced_and_their_jobs_requeued() -> None:
    sick = Instance("i-sick", launched_at=NOW - 3600, health="UNHEALTHY:disk 95% full", running_jobs=2)
    silent = Instance("i-silent", launched_at=NOW - 3600, health=None)
    booting = Instance("i-new", launched_at=NOW - 60, health=None)
    actions = plan(group(desired=3, running=2, instances=(sick, silent, booting)), NOW, CFG).actions
    assert TerminateUnhealthy("i-sick", "UNHEALTHY:disk 95% full") in actions and RequeueWorker("i-sick") in actions
    assert TerminateUnhealthy("i-silent", "no health key") in actions and RequeueWorker("i-silent") in actions
    assert not any(getattr(a, "instance", None) == "i-new" for a in actions)
