"""The scaling policy: from the queues and the fleet, what to do with one worker group. Pure: no I/O.

Scale up at once to what the backlog needs; scale down only instances idle long enough (at most one
scale-down per interval, removing every such instance down to what is needed), never one running a job
(busy ones are protected from scale-in); replace workers whose health key is
missing or unhealthy past their start-up grace period, requeueing their jobs at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Instance:
    """One instance of the group and what its worker reports (health None: no health key)."""

    id: str
    launched_at: float
    protected: bool = False
    health: str | None = None
    running_jobs: int = 0
    idle_since: float | None = None
    in_service: bool = True


@dataclass(frozen=True)
class GroupState:
    """What the policy sees of one class (cpu or gpu)."""

    name: str
    queued: int
    running: int
    slots_per_instance: int
    min_size: int
    max_size: int
    desired: int
    instances: tuple[Instance, ...] = ()
    last_scale_down: float = 0.0


@dataclass(frozen=True)
class Config:
    """Policy knobs (seconds)."""

    idle_seconds: float = 15 * 60
    health_grace_seconds: float = 5 * 60
    scale_down_interval: float = 5 * 60


@dataclass(frozen=True)
class SetDesired:
    group: str
    desired: int


@dataclass(frozen=True)
class Protect:
    instance: str
    protected: bool


@dataclass(frozen=True)
class TerminateIdle:
    instance: str


@dataclass(frozen=True)
class TerminateUnhealthy:
    instance: str
    reason: str


@dataclass(frozen=True)
class RequeueWorker:
    worker: str


Action = SetDesired | Protect | TerminateIdle | TerminateUnhealthy | RequeueWorker


@dataclass
class Plan:
    """The actions for one group, and the scale-down it made (if any)."""

    actions: list[Action] = field(default_factory=list)
    scaled_down: bool = False


def needed_instances(state: GroupState) -> int:
    """Instances the backlog needs: queued plus running jobs over slots per instance, within min and max."""
    want = math.ceil((state.queued + state.running) / max(1, state.slots_per_instance))
    return max(state.min_size, min(state.max_size, want))


def plan(state: GroupState, now: float, config: Config) -> Plan:
    """What to do with the group now."""
    out = Plan()
    live = [i for i in state.instances if i.in_service]
    for inst in live:
        sick = _sickness(inst, now, config)
        if sick is not None:
            out.actions += [TerminateUnhealthy(inst.id, sick), RequeueWorker(inst.id)]
    healthy = [i for i in live if _sickness(i, now, config) is None]
    for inst in healthy:
        busy = inst.running_jobs > 0
        if busy != inst.protected:
            out.actions.append(Protect(inst.id, busy))
    target = needed_instances(state)
    if target > state.desired:
        out.actions.append(SetDesired(state.name, target))
        return out
    if now - state.last_scale_down < config.scale_down_interval or state.desired <= state.min_size:
        return out
    if target >= state.desired or state.queued:
        return out
    idle = sorted((i for i in healthy if i.running_jobs == 0 and i.idle_since is not None
                   and now - i.idle_since >= config.idle_seconds), key=lambda i: i.idle_since or now)
    # one scale-down per interval: it removes every instance idle long enough, longest idle first, down to min
    for inst in idle[: max(0, state.desired - max(target, state.min_size))]:
        if inst.protected:
            out.actions.append(Protect(inst.id, False))
        out.actions.append(TerminateIdle(inst.id))
        out.scaled_down = True
    return out


def _sickness(inst: Instance, now: float, config: Config) -> str | None:
    if now - inst.launched_at < config.health_grace_seconds:
        return None  # still booting: no health key yet is normal
    if inst.health is None:
        return "no health key"
    if inst.health != "HEALTHY":
        return inst.health
    return None
