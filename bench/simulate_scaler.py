"""Discrete-event simulation of the scaler: our policy (``dcc.scaling.plan``) vs the seed's, on one bursty trace.

    python bench/simulate_scaler.py [--hours 8] [--seed 7] [--cpu-max 100] [--gpu-max 8]

Jobs arrive in bursts (hundreds of CPU jobs of 30 s–10 min, a few GPU jobs) between quiet periods.
Instances boot in 90 s (CPU) or 240 s (GPU): pending for the first half, then in service with no health key
until their worker is up. They then run 4 CPU jobs or 1 GPU job at once; the policy runs
every minute on what the handler would gather (queue, running jobs, instances with their state and health,
protection, running jobs, idle-since time and drain mark) and its actions are applied as the handler applies
them; a draining instance claims nothing.
Time advances in 5-second ticks: jobs end and start on ticks. Reports p50/p95 queue wait and
instance-hours against the ideal (job-hours over slots), and where the instance-hours went: booting,
busy (at least one job running) and idle.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcc.scaling import (  # noqa: E402
    Config,
    Drain,
    GroupState,
    Instance,
    Protect,
    SetDesired,
    TerminateIdle,
    TerminateUnhealthy,
    Undrain,
    plan,
)

TICK = 5.0


@dataclass(frozen=True)
class Fleet:
    """One class's machines and the seed policy's idle time."""

    slots: int
    boot: float
    max_size: int
    seed_idle: float


@dataclass
class Job:
    submit: float
    duration: float
    start: float | None = None


@dataclass
class Box:
    id: str
    launched: float
    ready_at: float
    running: list[Job] = field(default_factory=list)
    idle_since: float | None = None
    protected: bool = False
    draining: bool = False
    stopped: float | None = None
    booting_s: float = 0.0
    busy_s: float = 0.0
    idle_s: float = 0.0


def trace(hours: float, rng: random.Random) -> dict[str, list[Job]]:
    """Bursts every 20–60 minutes: 100–400 CPU jobs over ~2 minutes, 0–4 GPU jobs; quiet in between."""
    jobs: dict[str, list[Job]] = {"cpu": [], "gpu": []}
    t = rng.uniform(5, 15) * 60
    while t < hours * 3600 - 1800:
        for _ in range(rng.randint(100, 400)):
            jobs["cpu"].append(Job(t + rng.uniform(0, 120), rng.uniform(30, 600)))
        for _ in range(rng.randint(0, 4)):
            jobs["gpu"].append(Job(t + rng.uniform(0, 300), rng.uniform(120, 900)))
        t += rng.uniform(20, 60) * 60
    return {k: sorted(v, key=lambda j: j.submit) for k, v in jobs.items()}


class Sim:
    """One class's fleet under one policy (``config`` None: the seed's)."""

    def __init__(self, cls: str, fleet: Fleet, config: Config | None, *, spread: bool = False) -> None:
        self.cls, self.fleet, self.config, self.spread = cls, fleet, config, spread
        self.boxes: list[Box] = []
        self.queue: list[Job] = []
        self.desired = 0
        self.last_down = 0.0
        self.quiet_since: float | None = 0.0
        self.launches = 0

    def live(self) -> list[Box]:
        return [b for b in self.boxes if b.stopped is None]

    def run(self, jobs: list[Job], hours: float) -> dict[str, float]:
        pending = list(jobs)
        t = 0.0
        while t < hours * 3600 or self.queue or pending or any(b.running for b in self.live()):
            while pending and pending[0].submit <= t:
                self.queue.append(pending.pop(0))
            self._step_boxes(t)
            if t % 60 == 0:
                self._dcc_minute(t) if self.config is not None else self._seed_minute(t)
                for _ in range(self.desired - len(self.live())):
                    self.launches += 1
                    self.boxes.append(Box(f"{self.cls}-{self.launches}", launched=t, ready_at=t + self.fleet.boot))
            self._account(t)
            t += TICK
        for b in self.boxes:
            b.stopped = t if b.stopped is None else b.stopped
        return self._report(jobs)

    def _step_boxes(self, t: float) -> None:
        live = self.live()
        for b in live:
            b.running = [j for j in b.running if j.start is None or j.start + j.duration > t]
        claimers = [b for b in live if b.ready_at <= t and not b.draining]  # a draining worker claims nothing
        while self.queue:
            open_ = [b for b in claimers if len(b.running) < self.fleet.slots]
            if not open_:
                break
            # packed: the oldest worker with a free slot claims first; spread: the one with the most free slots
            box = min(open_, key=lambda b: len(b.running)) if self.spread else open_[0]
            job = self.queue.pop(0)
            job.start = t
            box.running.append(job)
        for b in live:
            if b.ready_at > t:
                continue
            if b.running:
                b.idle_since = None
            elif b.idle_since is None:
                b.idle_since = t

    def _account(self, t: float) -> None:
        for b in self.live():
            if b.ready_at > t:
                b.booting_s += TICK
            elif b.running:
                b.busy_s += TICK
            else:
                b.idle_s += TICK

    def _dcc_minute(self, t: float) -> None:
        """Our policy's minute: the very ``plan`` the scaler Lambda calls, on what it would gather."""
        assert self.config is not None
        live = self.live()
        state = GroupState(
            name=self.cls, queued=len(self.queue), running=sum(len(b.running) for b in live),
            slots_per_instance=self.fleet.slots, min_size=0, max_size=self.fleet.max_size, desired=self.desired,
            last_scale_down=self.last_down,
            instances=tuple(Instance(b.id, launched_at=b.launched, protected=b.protected,
                                     # Pending for the first half of its boot, then in service with no health
                                     # key until its worker is up (user data, image, agent), as on EC2
                                     lifecycle_state="Pending" if t - b.launched < self.fleet.boot / 2
                                     else "InService",
                                     health="HEALTHY" if b.ready_at <= t else None,
                                     running_jobs=len(b.running), idle_since=b.idle_since,
                                     draining=b.draining) for b in live))
        by_id = {b.id: b for b in live}
        for action in plan(state, t, self.config):
            if isinstance(action, SetDesired):
                self.desired = action.desired
            elif isinstance(action, Protect):
                by_id[action.instance].protected = action.protected
            elif isinstance(action, Drain | Undrain):
                by_id[action.instance].draining = isinstance(action, Drain)
            elif isinstance(action, TerminateIdle):
                by_id[action.instance].stopped = t
                self.desired -= 1
                self.last_down = t
            elif isinstance(action, TerminateUnhealthy):  # never happens here: every worker is healthy
                raise AssertionError(action)

    def _seed_minute(self, t: float) -> None:
        """The seed's minute: +1 instance while jobs wait; back to min after a quiet spell."""
        if self.queue:
            self.desired = min(self.fleet.max_size, self.desired + 1)
            self.quiet_since = None
        elif any(b.running for b in self.live()):
            self.quiet_since = None
        else:
            self.quiet_since = t if self.quiet_since is None else self.quiet_since
            if t - self.quiet_since >= self.fleet.seed_idle and self.desired:
                for b in self.live():
                    b.stopped = t
                self.desired = 0

    def _report(self, jobs: list[Job]) -> dict[str, float]:
        waits = sorted((j.start if j.start is not None else math.inf) - j.submit for j in jobs)
        hours = {k: sum(getattr(b, f"{k}_s") for b in self.boxes) / 3600 for k in ("booting", "busy", "idle")}
        return {
            "jobs": len(jobs),
            "p50": statistics.median(waits) if waits else 0.0,
            "p95": waits[max(0, math.ceil(0.95 * len(waits)) - 1)] if waits else 0.0,
            "instance_hours": sum(hours.values()),
            "ideal_hours": sum(j.duration for j in jobs) / 3600 / self.fleet.slots,
            "launches": self.launches,
            **hours,
        }


def variants(cls: str) -> list[tuple[str, Config | None]]:
    """The policies compared: the seed's, ours with its defaults, and ours without draining or with other knobs."""
    return [
        ("seed", None),
        ("dcc (defaults)", Config.for_class(cls)),
        ("dcc, no draining", Config.for_class(cls, drain=False)),
        ("dcc, no draining, interval 5 min", Config.for_class(cls, drain=False, scale_down_interval=300)),
        ("dcc, interval 5 min", Config.for_class(cls, scale_down_interval=300)),
        ("dcc, idle 5 min", Config.for_class(cls, idle_seconds=300)),
        ("dcc, idle 0, no interval", Config.for_class(cls, idle_seconds=0, scale_down_interval=0)),
        ("dcc, no draining, idle 0, no interval",
         Config.for_class(cls, drain=False, idle_seconds=0, scale_down_interval=0)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu-slots", type=int, default=4, help="job slots per CPU instance (m7g.large: 2)")
    parser.add_argument("--cpu-max", type=int, default=100)
    parser.add_argument("--gpu-max", type=int, default=8)
    parser.add_argument("--claim-order", choices=("packed", "spread"), default="packed",
                        help="which free worker claims a queued job: the oldest (packed) or the emptiest (spread)")
    args = parser.parse_args()
    fleets = {"cpu": Fleet(slots=args.cpu_slots, boot=90.0, max_size=args.cpu_max, seed_idle=600.0),
              "gpu": Fleet(slots=1, boot=240.0, max_size=args.gpu_max, seed_idle=900.0)}
    jobs = trace(args.hours, random.Random(args.seed))
    print("| class | policy | jobs | p50 wait | p95 wait | instance-h | ideal | ratio | booting / busy / idle h"
          " | launches | aim |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cls, fleet in fleets.items():
        for name, config in variants(cls):
            fresh = [Job(j.submit, j.duration) for j in jobs[cls]]
            if not fresh:  # (a short trace may have no job of the class: no ideal to compare with)
                print(f"| {cls} | {name} | 0 | | | | | | | | |")
                continue
            r = Sim(cls, fleet, config, spread=args.claim_order == "spread").run(fresh, args.hours)
            ratio = r["instance_hours"] / r["ideal_hours"]
            wait_ok = r["p95"] <= fleet.boot + 60
            aim = "met" if wait_ok and ratio <= 1.2 else ("wait only" if wait_ok else "no")
            print(f"| {cls} | {name} | {r['jobs']:.0f} | {r['p50']:.0f} s | {r['p95']:.0f} s | "
                  f"{r['instance_hours']:.1f} | {r['ideal_hours']:.1f} | {ratio:.2f} | "
                  f"{r['booting']:.1f} / {r['busy']:.1f} / {r['idle']:.1f} | {r['launches']:.0f} | {aim} |")


if __name__ == "__main__":
    main()
