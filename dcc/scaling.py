"""The scaling policy: from the queues and the fleet, what to do with one worker group. Pure: no I/O.

One call of ``plan`` looks at one class (``cpu`` or ``gpu``) and returns the actions to take, in order:

- **Replace the sick.** An in-service instance past its start-up grace period whose worker has no health
  key, or reports ``UNHEALTHY:<reason>``, is terminated without decrementing the desired capacity (the
  group launches a replacement) and its worker's jobs are requeued at once (not at lease expiry).
- **Protect the busy.** A worker running a job is protected from scale-in, an idle one is not, so that
  nothing the group does on its own (a lower maximum, a rebalance) can kill a running job.
- **Un-drain, then scale up at once.** The *active* instances (the group's desired capacity less those
  draining) must hold ``ceil((queued + jobs running on active instances) / slots_per_instance)`` within
  min and max (the GPU class counts GPUs throughout: a job asking for several weighs what it asks), and with
  jobs of several GPUs queued, at least the instances they fill when placed whole in queue order, first on the
  free GPUs of the instances running jobs, then on new ones (a job is not split across instances: four 3-GPU
  jobs need four 4-GPU instances, not ceil(12 / 4) = 3). A shortfall is first met by un-draining draining
  instances that have free slots (least loaded first: no boot), then by raising the desired capacity in one
  step. Desired capacity is never lowered by ``SetDesired``: it only goes down with the specific instances
  removed.
- **Drain the surplus.** When fewer active instances are needed than there are (``Config.drain``), the
  surplus is marked draining, least loaded and newest first, among instances running jobs or still
  booting: a draining worker claims nothing, so the queue packs onto the others and the drained ones
  empty. An instance already idle is not drained: the idle time governs it.
- **Scale down** only instances in service, healthy and running no job: those draining once empty for
  ``Config.drained_idle_seconds`` (the scaler's own decision, un-done if demand returns first), the others
  once idle for ``Config.idle_seconds``, longest idle first and only while no job waits and the active
  instances exceed what the backlog needs. Never below the minimum, and at most one scale-down per
  ``Config.scale_down_interval`` (one scale-down removes every instance that qualifies at that moment).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

IN_SERVICE = "InService"
DEFAULT_IDLE_SECONDS = {"cpu": 15 * 60.0, "gpu": 30 * 60.0}
"""Idle time before an instance may be removed, per class: GPU instances are slower to boot, so kept longer."""
DEFAULT_HEALTH_GRACE_SECONDS = {"cpu": 5 * 60.0, "gpu": 10 * 60.0}
"""How long a new instance has to report healthy, per class: a GPU image boots slower (its driver loads, and the
worker installs itself at every boot), and one taken for sick while it boots would be replaced over and over."""


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
    draining: bool = False
    queue_jobs: int | None = None
    """Of ``running_jobs``, those of the group's own queue (a GPU instance also runs CPU jobs); None: all."""

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
    heartbeats_since: float = 0.0
    """When Redis started: heartbeats (health keys) written before then may be gone with it."""
    queued_sizes: tuple[int, ...] = ()
    """The slots (GPUs) each of the first queued jobs asks for, in queue order; the rest of ``queued``, one slot
    each. Empty: every queued job takes one slot."""


@dataclass(frozen=True)
class Config:
    """Policy knobs, in seconds (``drain``: whether surplus instances are drained)."""

    idle_seconds: float = DEFAULT_IDLE_SECONDS["cpu"]
    health_grace_seconds: float = 5 * 60.0
    scale_down_interval: float = 60.0
    drain: bool = True
    drained_idle_seconds: float = 0.0
    drain_age_seconds: float = 0.0
    """An instance younger than this is not drained (it has paid its boot: draining it soon after invites the next
    burst to boot another)."""

    @classmethod
    def for_class(cls, name: str, **overrides: Any) -> Config:
        """The defaults for class ``name`` (its idle time and health grace), with ``overrides`` applied."""
        return replace(cls(idle_seconds=DEFAULT_IDLE_SECONDS.get(name, cls.idle_seconds),
                           health_grace_seconds=DEFAULT_HEALTH_GRACE_SECONDS.get(name, cls.health_grace_seconds)),
                       **overrides)


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


@dataclass(frozen=True)
class Drain:
    """Mark the instance's worker draining: it claims no new job and finishes those it runs."""

    instance: str


@dataclass(frozen=True)
class Undrain:
    """Let a draining instance's worker claim again."""

    instance: str


Action = SetDesired | Protect | Drain | Undrain | TerminateIdle | TerminateUnhealthy | RequeueWorker


def needed_instances(state: GroupState, draining: Iterable[Instance] = ()) -> int:
    """Active instances the backlog needs: queued jobs plus the jobs running elsewhere than on ``draining``,
    over slots per instance, within min and max."""
    held = sum(_load(i) for i in draining)
    want = math.ceil((state.queued + max(0, state.running - held)) / max(1, state.slots_per_instance))
    if any(size > 1 for size in state.queued_sizes):
        want = max(want, _packed(state, {i.id for i in draining}))
    return max(state.min_size, min(state.max_size, want))


def _load(inst: Instance) -> int:
    """The slots of the group's queue the instance's jobs hold."""
    return inst.running_jobs if inst.queue_jobs is None else inst.queue_jobs


def _packed(state: GroupState, draining: set[str]) -> int:
    """The instances the queued jobs fill when each is placed whole, in queue order (as workers claim them), on the
    first instance with room: the instances running jobs (not ``draining``) first, then new ones."""
    slots = max(1, state.slots_per_instance)
    free = [slots - _load(i) for i in state.instances if i.id not in draining and _load(i) > 0]
    for size in state.queued_sizes:
        size = min(size, slots)  # (a job bigger than any instance is refused at submit)
        room = next((n for n, f in enumerate(free) if f >= size), None)
        if room is None:
            free.append(slots - size)
        else:
            free[room] -= size
    ones = max(0, state.queued - sum(state.queued_sizes))  # past the sizes read: one slot each, fill any room
    return len(free) + math.ceil(max(0, ones - sum(max(0, f) for f in free)) / slots)


def sickness(inst: Instance, now: float, config: Config, heartbeats_since: float = 0.0) -> str | None:
    """Why the instance should be replaced, or None: no health key or unhealthy, once past its grace period.
    A missing key is given the grace again from ``heartbeats_since`` (Redis's start, or the end of a silence of every
    worker): the keys may have been lost or expired meanwhile."""
    if not inst.in_service or now - inst.launched_at < config.health_grace_seconds:
        return None  # still booting: no health key yet is normal
    if inst.health is None:
        return None if now - heartbeats_since < config.health_grace_seconds else "no health key"
    if inst.health != "HEALTHY":
        return inst.health
    return None


def plan(state: GroupState, now: float, config: Config) -> list[Action]:
    """The actions to take on the group now, in the order to apply them."""
    actions: list[Action] = []
    healthy: list[Instance] = []
    for inst in state.instances:
        reason = sickness(inst, now, config, state.heartbeats_since)
        if reason is not None:
            if inst.protected:  # so that nothing about the termination depends on how protection is read
                actions.append(Protect(inst.id, False))
            actions += [TerminateUnhealthy(inst.id, reason), RequeueWorker(inst.id)]
        elif inst.in_service:
            healthy.append(inst)
    undrain = _undrain(state, healthy, now, config)
    draining = [i for i in healthy if i.draining and i not in undrain]
    removable = _removable(state, healthy, draining, now, config)
    drain = _drain(state, healthy, draining, removable, now, config) if not undrain else []
    draining += drain
    for inst in healthy:
        busy = inst.running_jobs > 0
        if busy != inst.protected and inst not in removable:
            actions.append(Protect(inst.id, busy))
    actions += [Undrain(i.id) for i in undrain]
    target = min(state.max_size, needed_instances(state, draining) + len(draining))
    if target > state.desired:
        actions.append(SetDesired(state.name, target))
    actions += [Drain(i.id) for i in drain]
    for inst in removable:
        if inst.protected:
            actions.append(Protect(inst.id, False))
        actions.append(TerminateIdle(inst.id))
    return actions


def scaled_down(actions: list[Action]) -> bool:
    """Whether ``actions`` hold a scale-down (what starts the next scale-down interval)."""
    return any(isinstance(a, TerminateIdle) for a in actions)


def _booting(inst: Instance, now: float, config: Config) -> bool:
    """In service but its worker not yet up: no health key, and young (an old one whose key went missing, as after a
    Redis restart, is not taken for booting)."""
    return inst.health is None and now - inst.launched_at < config.health_grace_seconds


def _undrain(state: GroupState, healthy: list[Instance], now: float, config: Config) -> list[Instance]:
    """The draining instances to put back to work because the backlog needs more active instances."""
    draining = [i for i in healthy if i.draining]
    # least loaded first: the most free slots for the queue, and no boot to wait for (a drained instance still
    # booting cannot take a job sooner than a new one)
    spare = sorted((i for i in draining if i.running_jobs < state.slots_per_instance and not _booting(i, now, config)),
                   key=lambda i: (i.running_jobs, i.id))
    undrain: list[Instance] = []
    # (counted as working: the instances serving now, not those pending or booting: jobs that wait now are better
    # served by a drained instance than by one that comes in a minute or two)
    working = [i for i in healthy if not i.draining and not _booting(i, now, config)]
    while spare and needed_instances(state, draining) > len(working):
        inst = spare.pop(0)
        undrain.append(inst)
        draining.remove(inst)
        working.append(inst)
    return undrain


def _drain(state: GroupState, healthy: list[Instance], draining: list[Instance], removable: list[Instance],
           now: float, config: Config) -> list[Instance]:
    """The busy or booting instances to drain: those the backlog does not need once this pass's removals are done.

    Counted as working are the instances in service (not those pending: draining a warm instance for capacity that
    is not up leaves the queue with none), and of those the booting ones go first (a warm one is drained only for
    a surplus past them). Those younger than ``drain_age_seconds`` are kept: the surplus they are is not put on
    older ones."""
    if not config.drain:
        return []
    serving = sum(1 for i in healthy if not i.draining and i not in removable)
    active = min(state.desired - len(draining) - sum(1 for i in removable if i not in draining), serving)
    surplus = active - needed_instances(state, draining)
    # An idle instance is not drained: it is spare capacity already, left to the idle time.
    candidates = sorted((i for i in healthy if not i.draining and i not in removable
                         and (i.running_jobs > 0 or _booting(i, now, config))),
                        key=lambda i: (not _booting(i, now, config), i.running_jobs, -i.launched_at, i.id))
    return [i for i in candidates[: max(0, surplus)] if now - i.launched_at >= config.drain_age_seconds]


def _removable(state: GroupState, healthy: list[Instance], draining: list[Instance], now: float,
               config: Config) -> list[Instance]:
    """The idle instances one scale-down removes now (none if a rule forbids it)."""
    if now - state.last_scale_down < config.scale_down_interval:
        return []

    def empty_for(inst: Instance, seconds: float) -> bool:
        return (inst.health == "HEALTHY" and inst.running_jobs == 0 and inst.idle_since is not None
                and now - inst.idle_since >= seconds)

    drained = [i for i in draining if empty_for(i, config.drained_idle_seconds)]
    idle: list[Instance] = []
    active = state.desired - len(draining)
    need = needed_instances(state, draining)
    if not state.queued and need < active:
        idle = sorted((i for i in healthy if i not in draining and empty_for(i, config.idle_seconds)),
                      key=lambda i: (i.idle_since or now, i.id))[: active - need]
    out = sorted(drained + idle, key=lambda i: (i.idle_since or now, i.id))
    return out[: max(0, state.desired - state.min_size)]
