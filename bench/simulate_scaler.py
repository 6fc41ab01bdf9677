"""Discrete-event simulation of the scaler: our policy (dcc.scaling.plan) vs the seed's, on one bursty trace.

    python bench/simulate_scaler.py [--hours 8] [--seed 7]

Jobs arrive in bursts (hundreds of CPU jobs of 30 s–10 min, a few GPU jobs) between quiet periods.
Instances boot in 90 s (CPU) or 240 s (GPU) and then run 4 CPU jobs or 1 GPU job at once; the policy runs
every minute. Reports p50/p95 queue wait and instance-hours against the ideal (job-hours over slots).
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

from dcc.scaling import Config, GroupState, Instance, SetDesired, TerminateIdle, plan  # noqa: E402

TICK = 5.0
CLASSES = {  # slots per instance, boot seconds, max instances, idle time before our scale-down, seed idle time
    "cpu": (4, 90.0, 60, 15 * 60.0, 10 * 60.0),
    "gpu": (1, 240.0, 8, 30 * 60.0, 15 * 60.0),
}


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
    stopped: float | None = None


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


def simulate(cls: str, jobs: list[Job], policy: str, hours: float) -> dict[str, float]:
    slots, boot, max_size, idle, seed_idle = CLASSES[cls]
    config = Config(idle_seconds=idle, health_grace_seconds=0, scale_down_interval=300)
    boxes: list[Box] = []
    queue: list[Job] = []
    pending = list(jobs)
    desired = 0
    last_down = 0.0
    empty_since: float | None = 0.0
    counter = 0
    t = 0.0
    end = hours * 3600
    while t < end or queue or any(b.running for b in boxes if b.stopped is None):
        while pending and pending[0].submit <= t:
            queue.append(pending.pop(0))
        live = [b for b in boxes if b.stopped is None]
        for b in live:
            for job in [j for j in b.running if j.start is not None and j.start + j.duration <= t]:
                b.running.remove(job)
            if not b.running and b.idle_since is None:
                b.idle_since = t
            if b.ready_at <= t:
                while queue and len(b.running) < slots:
                    job = queue.pop(0)
                    job.start = t
                    b.running.append(job)
                    b.idle_since = None
        if t % 60 == 0:
            running = sum(len(b.running) for b in live)
            if policy == "dcc":
                desired, last_down = _dcc_minute(cls, t, live, queue, running, desired, last_down, config)
            else:
                desired, empty_since = _seed_minute(t, live, queue, running, desired, empty_since, seed_idle,
                                                    max_size)
            live = [b for b in boxes if b.stopped is None]
            for _ in range(desired - len(live)):
                counter += 1
                boxes.append(Box(f"{cls}-{counter}", launched=t, ready_at=t + boot, idle_since=t + boot))
        t += TICK
    for b in boxes:
        b.stopped = b.stopped if b.stopped is not None else t
    waits = sorted((j.start or 0) - j.submit for j in jobs)
    job_hours = sum(j.duration for j in jobs) / 3600
    return {
        "jobs": len(jobs),
        "p50": statistics.median(waits) if waits else 0.0,
        "p95": waits[max(0, math.ceil(0.95 * len(waits)) - 1)] if waits else 0.0,
        "instance_hours": sum((b.stopped or 0) - b.launched for b in boxes) / 3600,
        "ideal_hours": job_hours / slots,
    }


def _dcc_minute(cls: str, t: float, live: list[Box], queue: list[Job], running: int, desired: int,
                last_down: float, config: Config) -> tuple[int, float]:
    """Our policy's minute: returns the new desired size and last scale-down time."""
    slots, _, max_size, _, _ = CLASSES[cls]
    state = GroupState(
        name=cls, queued=len(queue), running=running, slots_per_instance=slots, min_size=0, max_size=max_size,
        desired=desired, last_scale_down=last_down,
        instances=tuple(Instance(b.id, launched_at=b.launched, protected=bool(b.running), health="HEALTHY",
                                 running_jobs=len(b.running), idle_since=b.idle_since) for b in live))
    for action in plan(state, t, config).actions:
        if isinstance(action, SetDesired):
            desired = action.desired
        elif isinstance(action, TerminateIdle):
            next(b for b in live if b.id == action.instance).stopped = t
            desired -= 1
            last_down = t
    return desired, last_down


def _seed_minute(t: float, live: list[Box], queue: list[Job], running: int, desired: int,
                 empty_since: float | None, seed_idle: float, max_size: int) -> tuple[int, float | None]:
    """The seed's minute: +1 while jobs wait; back to min after a quiet spell."""
    if queue:
        return min(max_size, desired + 1), None
    if running:
        return desired, None
    empty_since = t if empty_since is None else empty_since
    if t - empty_since >= seed_idle and desired:
        for b in live:
            b.stopped = t
        return 0, empty_since
    return desired, empty_since


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    jobs = trace(args.hours, random.Random(args.seed))
    print("| class | policy | jobs | p50 wait | p95 wait | instance-hours | ideal | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for cls in ("cpu", "gpu"):
        for policy in ("dcc", "seed"):
            fresh = [Job(j.submit, j.duration) for j in jobs[cls]]
            r = simulate(cls, fresh, policy, args.hours)
            ratio = r["instance_hours"] / r["ideal_hours"]
            print(f"| {cls} | {policy} | {r['jobs']} | {r['p50']:.0f} s | {r['p95']:.0f} s | "
                  f"{r['instance_hours']:.1f} | {r['ideal_hours']:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
