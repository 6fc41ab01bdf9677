"""The scaling policy: from the queues and the fleet, what to do with one worker group. Pure: no I/O.

One call of ``plan`` looks at one class (``cpu`` or ``gpu``) and returns the actions to take, in order:

- **Replace the sick.** An in-service instance past its start-up grace period whose worker has no health
  key, or reports ``UNHEALTHY:<reason>``, is terminated without decrementing the desired capacity (the
  group launches a replacement) and its worker's jobs are requeued at once (not at lease expiry).
- **Protect the busy.** A worker running a job is protected from scale-in, an idle one is not, so that
  nothing the group does on its own (a lower maximum, a rebalance) can kill a running job.
- **Scale up at once** to ``ceil((queued + running) / slots_per_instance)`` within min and max. Desired
  capacity is never lowered by ``SetDesired``: it only goes down with the specific idle instances removed.
- **Scale down** only instances in service, healthy, running no job and idle for at least
  ``Config.idle_seconds``, longest idle first, never below the minimum nor below what the backlog needs,
  never while jobs are queued, and at most one scale-down per ``Config.scale_down_interval`` (one
  scale-down removes every instance that qualifies at that moment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

IN_SERVICE = "InService"
DEFAULT_IDLE_SECONDS = {"cpu": 15 * 60.0, "gpu": 30 * 60.0}
"""Idle time before an instance may be removed, per class: GPU instances are slower to boot, so kept longer."""


@dataclass(frozen=True)
class Instance:
    """One instance of the group and what its worker reports (``health`` None: no health key)."""

    id: str
    launched_at: float
    lifecycle_state: str = IN_SERVICE
    protected: bool = False
    health: str | None = None
    running_jobs: int = 0
    idle_since: float | None = None

    @property
    def in_service(self) -> bool:
        """Whether the group counts it as serving (not pending, terminating, on standby, ...)."""
        return self.lifecycle_state == IN_SERVICE


@dataclass(frozen=True)
class GroupState:
    """What the policy sees of one class: its queue, its group's bounds and its instances."""

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
    """Policy knobs, in seconds."""

    idle_seconds: float = DEFAULT_IDLE_SECONDS["cpu"]
    health_grace_seconds: float = 5 * 60.0
    scale_down_interval: float = 5 * 60.0

    @classmethod
    def for_class(cls, name: str, **overrides: float) -> Config:
        """The defaults for class ``name`` (its idle time), with ``overrides`` applied."""
        return replace(cls(idle_seconds=DEFAULT_IDLE_SECONDS.get(name, cls.idle_seconds)), **overrides)


@dataclass(frozen=True)
class SetDesired:
    """Raise the group's desired capacity to ``desired`` (never used to lower it)."""

    group: str
    desired: int


@dataclass(frozen=True)
class Protect:
    """Set the instance's scale-in protection."""

    instance: str
    protected: bool


@dataclass(frozen=True)
class TerminateIdle:
    """Remove an idle instance and decrement the desired capacity with it."""

    instance: str


@dataclass(frozen=True)
class TerminateUnhealthy:
    """Terminate a sick instance and keep the desired capacity, so that the group replaces it."""

    instance: str
    reason: str


@dataclass(frozen=True)
class RequeueWorker:
    """Take back at once every job the worker holds."""

    worker: str


Action = SetDesired | Protect | TerminateIdle | TerminateUnhealthy | RequeueWorker


def needed_instances(state: GroupState) -> int:
    """Instances the backlog needs: queued plus running jobs over slots per instance, within min and max."""
    want = math.ceil((state.queued + state.running) / max(1, state.slots_per_instance))
    return max(state.min_size, min(state.max_size, want))


def sickness(inst: Instance, now: float, config: Config) -> str | None:
    """Why the instance should be replaced, or None: no health key or unhealthy, once past its grace period."""
    if not inst.in_service or now - inst.launched_at < config.health_grace_seconds:
        return None  # still booting: no health key yet is normal
    if inst.health is None:
        return "no health key"
    if inst.health != "HEALTHY":
        return inst.health
    return None


def plan(state: GroupState, now: float, config: Config) -> list[Action]:
    """The actions to take on the group now, in the order to apply them."""
    actions: list[Action] = []
    healthy: list[Instance] = []
    for inst in state.instances:
        reason = sickness(inst, now, config)
        if reason is not None:
            if inst.protected:  # so that nothing about the termination depends on how protection is read
                actions.append(Protect(inst.id, False))
            actions += [TerminateUnhealthy(inst.id, reason), RequeueWorker(inst.id)]
        elif inst.in_service:
            healthy.append(inst)
    removable = _removable(state, healthy, now, config)
    for inst in healthy:
        busy = inst.running_jobs > 0
        if busy != inst.protected and inst not in removable:
            actions.append(Protect(inst.id, busy))
    target = needed_instances(state)
    if target > state.desired:
        actions.append(SetDesired(state.name, target))
    for inst in removable:
        if inst.protected:
            actions.append(Protect(inst.id, False))
        actions.append(TerminateIdle(inst.id))
    return actions


def scaled_down(actions: list[Action]) -> bool:
    """Whether ``actions`` hold a scale-down (what starts the next scale-down interval)."""
    return any(isinstance(a, TerminateIdle) for a in actions)


def _removable(state: GroupState, healthy: list[Instance], now: float, config: Config) -> list[Instance]:
    """The idle instances one scale-down removes now (none if a rule forbids it)."""
    target = needed_instances(state)
    if state.queued or target >= state.desired or now - state.last_scale_down < config.scale_down_interval:
        return []
    idle = [i for i in healthy if i.running_jobs == 0 and i.idle_since is not None
            and now - i.idle_since >= config.idle_seconds]
    idle.sort(key=lambda i: (i.idle_since or now, i.id))
    return idle[: max(0, state.desired - target)]
