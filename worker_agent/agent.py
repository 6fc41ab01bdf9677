"""The worker: claim jobs from Redis, run each in a container, report how it ended.

Threads: one claim loop (blocks on Redis while slots are free), one thread per running job, one that
renews leases and writes the health key, one that listens for cancels, one that removes finished
containers (kept off the path to the result). Every dependency comes in through the constructor.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import redis

from dcc.drain import DrainMarks
from dcc.errors import JobSystemError, StorageError, StoreUnavailable
from dcc.jobs import FAST_MAX_ATTEMPTS, MAX_OUTPUT_NAME, Claim, ErrorCode, JobError, JobRecord, JobState, Outcome
from dcc.replies import TAIL_MARK
from dcc.service import forget_result, keep_results, result_document, result_key
from dcc.storage import Progress, Storage, attempt_prefix
from dcc.store import Blocked, JobStore
from dcc.url_inputs import Fetcher
from worker_agent.files import remove_tree
from worker_agent.resources import Gpu
from worker_agent.runtime import ContainerJob, ContainerOutcome, ContainerRuntime, NotStarted

log = logging.getLogger("dcc.worker")


WORKER_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
"""What an OSError says when the worker's disk failed, not the job's paths."""
EARLY_CANCEL_SECONDS = 60.0


class _Stopped(Exception):
    """The job was cancelled or handed back while its inputs came in."""


def default_worker_id() -> str:
    """A worker id for machines that have no better one (on EC2 the instance id is used)."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker runs."""

    worker_id: str = field(default_factory=lambda: default_worker_id())
    slots: dict[str, int] = field(default_factory=lambda: {"cpu": 1})
    """Jobs run at once, per queue."""
    workdir: Path = Path("/tmp/dcc-worker")
    max_attempts: int = 3
    heartbeat_seconds: float = 5.0
    idle_claim_seconds: float = 2.0
    """How long to block for a wake-up before trying to claim anyway."""
    append_log_bytes: int = 1 << 20
    max_inline_output_bytes: int = 1 << 20
    """Fast jobs: total bytes of outputs returned inline."""
    disk_full_ratio: float = 0.90
    max_consecutive_system_errors: int = 5
    system_error_pause_seconds: float = 300.0
    """A worker made unhealthy by system errors in a row claims again this long after the last one (on AWS the
    scaler replaces it sooner; in local mode it is the only worker, and must not stall for good)."""
    grace_seconds: float = 60.0
    gpu_device_ids: tuple[str, ...] = ()
    """This machine's GPUs (nvidia-smi indexes); each running GPU job holds its own, passed to Docker."""
    disable_nvidia_runtime: bool = False
    """Run GPU-queue jobs without GPU devices (to test a GPU fleet's data flow on CPU machines)."""
    gpus: tuple[Gpu, ...] = ()
    """What nvidia-smi said of those GPUs (index, UUID, name, memory), shown at ``GET /v1/workers``."""
    worker_class: str = "local"
    """The group the worker serves: ``cpu`` or ``gpu`` on AWS (``DCC_WORKER_CLASS``), ``local`` elsewhere."""
    tes_locations: tuple[str, ...] = ()
    """GA4GH TES tasks read inputs from and write outputs to these ``s3://`` / ``file://`` locations."""
    max_output_bytes: int = 1 << 30
    """GA4GH TES tasks: the most bytes of output files kept (past it, files are left out)."""
    max_job_disk_bytes: int | None = None
    """GA4GH TES tasks: the most their sandbox may hold (the runtime bounds each container's own files)."""


@dataclass
class _Running:
    claim: Claim
    seq: int = 0
    """Its place in the order of this worker's claims (GPUs go to attempts waiting for them in that order)."""
    gpus: tuple[str, ...] = ()
    cancel: bool = False
    lost: bool = False
    handed_back: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
    """Set once the attempt's container and folder are removed."""
    confirmed: float = field(default_factory=time.monotonic)
    """When its lease was last known held (monotonic): its claim, then each renewal that found it held."""


class Worker:
    """One worker process's job loop."""

    def __init__(
        self,
        *,
        store: JobStore,
        storage: Storage,
        runtime: ContainerRuntime,
        config: WorkerConfig,
        fetch: Fetcher | None = None,
        notify: Callable[[str], object] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.runtime = runtime
        self.config = config
        self.fetch = fetch
        self.notify = notify
        """Called with a job id after this worker changed its state (pushes to websocket clients on AWS)."""
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._running: dict[str, _Running] = {}
        self._task_runner: Any = None
        """GA4GH TES tasks' runner (``worker_agent.tes_runner``), built on the first task."""
        self._threads: list[threading.Thread] = []
        self._cleanup: SimpleQueue[tuple[str, Path, threading.Event] | None] = SimpleQueue()
        self._cleaned_up = threading.Event()
        """Set once the clean-up thread has ended (the worker stopped): nothing more will end."""
        self._ending: dict[str, threading.Event] = {}
        """Jobs whose attempt ended here and waits for its clean-up (set when done): a new attempt waits too."""
        self._listener_reconnected = threading.Event()
        self._early_cancels: dict[str, float] = {}
        """Cancels heard for jobs not running here, by when (monotonic): one this worker has just claimed, and
        not yet launched, gets its cancel when it is (kept ``EARLY_CANCEL_SECONDS``)."""
        self._outgoing: dict[tuple[str, int], _Running] = {}
        """Attempts a later attempt of the same job took the place of here, until they end: their container may
        still run, holding its GPUs, and a stop waits for it."""
        self._claims = 0
        self._gpu_waiters: list[_Running] = []
        """Attempts waiting for GPUs here, served in the order they were claimed."""
        self._gpu_jobs_ended = 0
        self._gpu_blocked: tuple[int, float] | None = None
        """Set when a claim from the gpu queue found its first job needing more GPUs than are free here: how many
        GPU jobs had ended then, and until when (monotonic) the gpu queue is left alone unless one more ends."""
        self._system_errors = 0
        self._last_system_error = 0.0
        self._idle_since: float | None = time.time()
        self.health = "HEALTHY"
        self.drain = DrainMarks(store.redis, prefix=store.prefix)
        self.draining = False
        """Set by the scaler (``dcc.drain``): claim no new job; finish those running."""
        self.held: Any = None
        """The lock on the work dir, where this worker holds one (``dcc worker`` without a given id)."""

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker's threads and return."""
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        # the worker's alone: what jobs leave there (a setuid file, a folder anyone may write) is out of other
        # users' reach; containers see their own folders through their mounts
        self.config.workdir.chmod(0o700)
        self._check_health()
        self._check_drain()  # a drained instance that just restarted must not claim even once
        if self.health == "HEALTHY":
            # a worker id is stable across restarts of one instance: what it ran before the crash is orphaned
            left = self.runtime.remove_leftovers(self.config.worker_id)
            if left:
                log.warning("removed %d containers left by an earlier run of %s", left, self.config.worker_id)
            # and its jobs go back at once, rather than when their leases lapse: a cancel asked meanwhile ends the
            # job now, a retry starts now (no other live worker has this id: its work dir is held, and on AWS it
            # is the instance's id)
            try:
                if taken := self.store.drop_worker(self.config.worker_id):
                    log.warning("took back %d jobs an earlier run of %s held: %s", len(taken),
                                self.config.worker_id, ", ".join(f"{i} ({s.value})" for i, s in taken.items()))
            except StoreUnavailable as exc:  # (their leases lapse, and the reaper takes them back)
                log.warning("could not take back the jobs of an earlier run yet: %s", exc)
        try:  # registered at once (GET /v1/workers; the API's limit on GPUs a job may ask), not at the first beat
            self._heartbeat()
        except StoreUnavailable as exc:
            log.warning("could not register yet (the heartbeats will): %s", exc)
        for name, target in (("claim", self._claim_loop), ("lease", self._lease_loop),
                             ("cancel", self._cancel_loop), ("cleanup", self._cleanup_loop)):
            t = threading.Thread(target=target, name=f"dcc-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("worker %s started with slots %s", self.config.worker_id, self.config.slots)

    def stop(self, *, grace: float | None = None) -> None:
        """Stop claiming; let running jobs finish within ``grace`` s, then hand the rest back to the queue."""
        self.stopping.set()
        with self._slot_freed:
            self._slot_freed.notify_all()
        deadline = time.monotonic() + (self.config.grace_seconds if grace is None else grace)
        while self.running_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            left = [*self._running.values(), *self._outgoing.values()]
        for job in left:
            job.handed_back = True
        unkilled = {job.claim.job.id for job in left}
        while self.running_count() and time.monotonic() < deadline + 10:
            # a job between containers (inputs, image pull, between TES executors) has none to kill yet:
            # ask again until one is there (a job that sees the hand-back first starts none)
            with self._lock:
                unkilled &= self._running.keys() | {job_id for job_id, _ in self._outgoing}
            unkilled = {job_id for job_id in unkilled if not self.runtime.kill(job_id)}
            time.sleep(0.05)
        self._cleanup.put(None)
        for t in self._threads:
            t.join(timeout=5)
        try:
            self.store.forget_worker(self.config.worker_id)
        except StoreUnavailable:
            pass
        if self.held is not None:  # the work dir is free for the next worker
            self.held.close()
            self.held = None

    def running_count(self) -> int:
        """Attempts running here, those being stopped for a later attempt of their job included."""
        with self._lock:
            return len(self._running) + len(self._outgoing)

    # claiming --------------------------------------------------------------------------------------
    def _free_queues(self) -> list[str]:
        with self._lock:
            used: dict[str, int] = {}
            for job in self._running.values():
                used[job.claim.job.queue] = used.get(job.claim.job.queue, 0) + 1
            gpus_free = self._spare_gpus() > 0
            blocked = self._gpu_blocked is not None and self._gpu_blocked[0] == self._gpu_jobs_ended and (
                time.monotonic() < self._gpu_blocked[1])
        free = [q for q, n in self.config.slots.items() if n > used.get(q, 0)]
        if self._assigns_gpus and "gpu" in free and (not gpus_free or blocked):
            free.remove("gpu")  # a GPU job needs GPUs no other job holds; the first one waiting needs more than that
        return free

    @property
    def _assigns_gpus(self) -> bool:
        return bool(self.config.gpu_device_ids) and not self.config.disable_nvidia_runtime

    def _spare_gpus(self) -> int:
        """GPUs a new claim may count on (call with the lock held): those free, less those that attempts claimed
        here will take once their inputs are in."""
        have = len(self.config.gpu_device_ids)
        promised = sum(need for job in self._running.values()
                       if not job.gpus and (need := job.claim.job.spec.parameters.gpu) <= have)
        return max(len(self._free_gpus()) - promised, 0)

    def _free_gpus(self) -> list[str]:
        """GPUs no attempt here holds, one being stopped included (call with the lock held)."""
        held = {g for job in (*self._running.values(), *self._outgoing.values()) for g in job.gpus}
        return [g for g in self.config.gpu_device_ids if g not in held]

    def _take_gpus(self, claim: Claim, count: int) -> tuple[str, ...]:
        """Give the attempt ``count`` GPUs of its own, waiting for other attempts to free them.

        Attempts waiting for GPUs get them in the order they were claimed: none takes GPUs an earlier one waits
        for (claims count on GPUs promised to attempts yet to take theirs, so waits are short: for an attempt
        being stopped, say). Raises ``_Stopped`` when the attempt should stop instead (cancelled, replaced by a
        later attempt, or the worker stops: a job that has no GPUs yet is handed back at once rather than started
        during the stop).
        """
        if not self._assigns_gpus or count == 0:
            return ()
        with self._slot_freed:
            mine = self._entry(claim)
            if mine is None:
                raise _Stopped
            self._gpu_waiters.append(mine)
            try:
                while True:
                    entry = self._entry(claim)
                    if entry is None or entry.cancel or entry.handed_back or entry.lost:
                        raise _Stopped
                    first = min(self._gpu_waiters, key=lambda waiter: waiter.seq)
                    if first is entry and len(free := self._free_gpus()) >= count:
                        entry.gpus = tuple(free[:count])
                        return entry.gpus
                    if self.stopping.is_set():  # it would wait for GPUs through the stop: handed back now instead
                        entry.handed_back = True
                        raise _Stopped
                    self._slot_freed.wait(timeout=1.0)
            finally:
                self._gpu_waiters.remove(mine)
                self._slot_freed.notify_all()  # (the next in line)

    def _claim_loop(self) -> None:
        while not self.stopping.is_set():
            free = self._free_queues() if self.health == "HEALTHY" and not self.draining else []
            if not free:
                with self._slot_freed:
                    self._slot_freed.wait(timeout=1.0)
                continue
            try:
                woken = self.store.wait_for_work(free, self.config.idle_claim_seconds)
                for queue in [woken] if woken else free:
                    if self.stopping.is_set():
                        break
                    claim = self._claim(queue, woken=queue == woken)
                    if claim is not None:
                        self._launch(claim)
            except StoreUnavailable as exc:
                log.warning("claim: %s; retrying", exc)
                self.stopping.wait(1.0)
            except Exception:  # a bug, or a record it cannot read: never let the claim thread die
                log.exception("claim failed; retrying")
                self.stopping.wait(1.0)

    def _claim(self, queue: str, *, woken: bool) -> Claim | None:
        """Claim the first job of ``queue``: from the gpu queue, only one that fits the GPUs free here. When it does
        not, the gpu queue is left alone until a GPU job here ends or ``idle_claim_seconds`` pass (the job stays
        first: none behind it is taken), and the wake-up token taken for it goes back to wake another worker."""
        if queue != "gpu" or not self._assigns_gpus:
            return self.store.claim(queue, self.config.worker_id)
        with self._lock:
            spare, ended = self._spare_gpus(), self._gpu_jobs_ended
        claim = self.store.claim(queue, self.config.worker_id, free_gpus=spare,
                                 worker_gpus=len(self.config.gpu_device_ids))
        if not isinstance(claim, Blocked):
            return claim
        with self._lock:
            self._gpu_blocked = (ended, time.monotonic() + self.config.idle_claim_seconds)
        if woken:  # a worker with the GPUs free may sleep on that token (else it would claim at its timeout only)
            try:
                self.store.signal(queue)
            except StoreUnavailable as exc:  # (e.g. Redis full): the others claim at their timeout instead
                log.warning("could not hand the gpu queue's wake-up on: %s", exc)
        return None

    def _launch(self, claim: Claim) -> None:
        with self._lock:
            self._claims += 1
            entry = _Running(claim, seq=self._claims)
            # an earlier attempt still here: this worker's lease lapsed (e.g. cut off from Redis) and it claimed
            # the job again. The earlier one is stopped, and gone, before this one starts (they share the job id);
            # one that has ended may still wait for its clean-up, which this one waits for too
            earlier = self._running.get(claim.job.id)
            if earlier is not None:
                earlier.lost = True
                self._outgoing[claim.job.id, earlier.claim.attempt] = earlier
            ending = earlier.ended if earlier is not None else self._ending.get(claim.job.id)
            # a cancel heard between the claim and now (or by the attempt this one replaces) is this one's
            entry.cancel = self._early_cancels.pop(claim.job.id, None) is not None or (
                earlier is not None and earlier.cancel)
            self._running[claim.job.id] = entry
            self._idle_since = None
        self._notify(claim.job.id)
        t = threading.Thread(target=self._run_job, args=(claim, entry, earlier, ending),
                             name=f"dcc-job-{claim.job.id}", daemon=True)
        t.start()

    def _outlive(self, earlier: _Running) -> None:
        """Stop an earlier attempt of the same job and wait until its container and folder are gone."""
        log.warning("job %s: attempt %d is still here as attempt %d starts: stopping it", earlier.claim.job.id,
                    earlier.claim.attempt, earlier.claim.attempt + 1)
        # (a stop waits for it too: two containers of one job never run at once; until the clean-up thread is gone)
        while not earlier.ended.is_set() and not self._cleaned_up.is_set():
            self.runtime.kill(earlier.claim.job.id)  # (none yet while it fetches inputs: it sees `lost` there)
            earlier.ended.wait(0.2)

    # running one job -------------------------------------------------------------------------------
    def _entry(self, claim: Claim) -> _Running | None:
        """This attempt's entry (call with the lock held): None once it is gone, or when the job running here
        under its id is a later attempt (the same worker re-claimed it after a requeue)."""
        entry = self._running.get(claim.job.id)
        return entry if entry is not None and entry.claim.attempt == claim.attempt else None

    def _run_job(self, claim: Claim, entry: _Running, earlier: _Running | None = None,
                 ending: threading.Event | None = None) -> None:
        job = claim.job
        workdir = self.config.workdir / f"{job.id}-{claim.attempt}"
        try:
            if earlier is not None:
                self._outlive(earlier)
            elif ending is not None:
                ending.wait(60)
            outcome = self._attempt(claim, workdir)
            with self._lock:
                mine = self._entry(claim)
            if mine is not None and not mine.lost:
                self._report(claim, outcome)
                self._notify(job.id)
        except BaseException:  # never lose the slot; the lease expires and the reaper retries the job
            log.exception("job %s: unexpected failure", job.id)
        finally:
            with self._slot_freed:
                if self._entry(claim) is not None:  # (not a later attempt's entry)
                    del self._running[job.id]
                self._outgoing.pop((job.id, claim.attempt), None)
                if job.spec.parameters.gpu:  # its GPUs are free (or promised no more): try the gpu queue again
                    self._gpu_jobs_ended += 1
                if not self._running and not self._outgoing:  # idle from now, however soon the next heartbeat
                    self._idle_since = time.time()
                self._ending[job.id] = entry.ended
                self._slot_freed.notify_all()
            self._cleanup.put((job.id, workdir, entry.ended))

    def _check_gpus(self, job: JobRecord) -> None:
        """Raise, not retried, for a job asking for more GPUs than this worker has: it could wait for ever (its
        fault, not the worker's: it does not count against the worker's health)."""
        count, have = job.spec.parameters.gpu, len(self.config.gpu_device_ids)
        if self._assigns_gpus and count > have:
            raise JobSystemError(ErrorCode.TOO_MANY_GPUS, f"the job needs {count} GPUs; worker "
                                 f"{self.config.worker_id} has {have}", retryable=False)

    def _attempt(self, claim: Claim, workdir: Path) -> Outcome:
        job = claim.job
        try:
            self._check_gpus(job)  # (before its inputs come in)
            if job.task is not None:
                return self._run_task(claim, workdir)
            inputs_dir = workdir / "inputs"
            inputs_dir.mkdir(parents=True)
            try:
                self._materialize_inputs(job, inputs_dir, self._stop_check(claim))
                (workdir / "run").mkdir()
                gpus = self._take_gpus(claim, job.spec.parameters.gpu)
                result = self.runtime.run(self._container_job(job, inputs_dir, gpus), workdir=workdir / "run",
                                          stopped=lambda: self._stopped(claim))
            except (_Stopped, NotStarted):  # seen between inputs, while one downloads, waiting for GPUs, or as the
                return self._stopped_outcome(claim)  # container was made: none starts
            with self._lock:
                running = self._entry(claim)
            if running is None or running.lost:  # a later attempt (here or elsewhere) reports, and writes the results
                return Outcome(state=JobState.QUEUED)
            if running.handed_back and result.killed:
                return Outcome(state=JobState.QUEUED, handed_back=True)  # (one that exited by itself keeps its result)
            cancelled = running.cancel and result.killed
            if job.spec.fast:
                outcome = self._inline_results(claim, result, cancelled=cancelled)
            else:
                outcome = self._store_results(claim, result, cancelled=cancelled)
            self._system_errors = 0
            return outcome
        except StorageError as exc:
            return self._system_failure(claim, JobSystemError(ErrorCode.STORAGE_FAILED, str(exc), retryable=True))
        except JobSystemError as exc:
            return self._system_failure(claim, exc)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in WORKER_DISK_ERRORS:
                # the worker's own disk (full, or failing): retried, and counted against its health
                log.exception("job %s: the worker's files", job.id)
                return self._system_failure(claim, JobSystemError(ErrorCode.RUNTIME_FAILED, f"worker files: {exc}",
                                                                  retryable=True))
            # a bug, or a job the checks missed (a path the worker cannot make): end it saying so, not retried
            log.exception("job %s: unexpected failure", job.id)
            return self._system_failure(claim, JobSystemError(ErrorCode.RUNTIME_FAILED,
                                                              f"{type(exc).__name__}: {exc}", retryable=False))

    def _run_task(self, claim: Claim, workdir: Path) -> Outcome:
        """A GA4GH TES task: its executors in order in one sandbox (``worker_agent.tes_runner``)."""
        from worker_agent.tes_runner import TaskRunner

        job = claim.job
        workdir.mkdir(parents=True)
        try:
            gpus = self._take_gpus(claim, job.spec.parameters.gpu)
        except _Stopped:
            return self._stopped_outcome(claim)
        if self._task_runner is None:  # one per worker: its storage clients are reused from task to task
            self._task_runner = TaskRunner(runtime=self.runtime, store=self.store, fetch=self.fetch,
                                           locations=self.config.tes_locations,
                                           max_output_bytes=self.config.max_output_bytes,
                                           max_disk_bytes=self.config.max_job_disk_bytes)

        # stopped: run no further executor, upload nothing; what it raises, `_attempt` retries or ends
        outcome = self._task_runner.run(claim, workdir, self._container_job(job, None, gpus),
                                        cancelled=lambda: self._stopped(claim),
                                        abandoned=lambda: not self._may_write_shared(claim))
        with self._lock:
            running = self._entry(claim)
        if running is None or running.lost:  # a later attempt (here or elsewhere) reports, and writes the results
            return Outcome(state=JobState.QUEUED)
        # stopped by the hand-back, or its uploads by the worker's stop while Redis was out of reach (nobody
        # cancelled it): it goes back to the queue, for a worker that can finish it
        if (running.handed_back or self.stopping.is_set()) and not running.cancel \
                and outcome.state == JobState.CANCELLED:
            return Outcome(state=JobState.QUEUED, handed_back=True)
        self._system_errors = 0
        return self._write_result(claim, outcome)

    def _container_job(self, job: JobRecord, inputs_dir: Path | None, gpus: tuple[str, ...] = ()) -> ContainerJob:
        p = job.spec.parameters
        return ContainerJob(
            job_id=job.id,
            image=job.spec.image,
            command=job.spec.command,
            env=dict(job.spec.env),
            working_dir=job.spec.workingDir,
            inputs_dir=inputs_dir,
            max_duration=float(p.maxDuration or 600),
            cpus=p.cpus,
            memory_mb=p.memory,
            gpu_device_ids=gpus,
            labels={"dcc.worker": self.config.worker_id},
            keep=tuple(job.spec.keepOutputs) if job.spec.keepOutputs is not None else None,
            max_output_name=self._max_output_name(job),
        )

    def _max_output_name(self, job: JobRecord) -> int:
        """The longest output name the job's files can keep: dcc's limit, or less where the storage's keys cannot
        hold ``jobs/<id>/attempt-<n>/outputs/<name>`` (S3: 1024 bytes with its prefix). Past it an output is
        removed and named in stderr, as other names no storage can hold are (not a failed upload, retried)."""
        room = getattr(self.storage, "max_key_bytes", None)
        if room is None or job.spec.fast:
            return MAX_OUTPUT_NAME
        key = f"{attempt_prefix(job.id, 0)}outputs/"  # (its one-digit attempt number: room below for 7 digits)
        return max(1, min(MAX_OUTPUT_NAME, room - len(key.encode()) - 6))

    def _stopped(self, claim: Claim) -> bool:
        """Whether this attempt should stop: cancelled, handed back at shutdown, its lease lost, or a later
        attempt is here."""
        with self._lock:
            running = self._entry(claim)
            return running is None or running.cancel or running.handed_back or running.lost

    def _stopped_outcome(self, claim: Claim) -> Outcome:
        """How an attempt that stopped before its container started ends: handed back when the worker stops,
        cancelled when asked; one that lost its job (a later attempt, or its lease gone) is not reported."""
        with self._lock:
            running = self._entry(claim)
        if running is not None and running.handed_back:
            return Outcome(state=JobState.QUEUED, handed_back=True)
        if running is not None and running.cancel and not running.lost:
            return self._ended_without_result(claim, Outcome(state=JobState.CANCELLED))
        return Outcome(state=JobState.QUEUED)  # (not reported: `_run_job` sees the attempt lost or replaced)

    def _stop_check(self, claim: Claim) -> Progress:
        """A download's progress callback that raises ``_Stopped`` once the attempt should stop."""
        def check(_done: int = 0) -> None:
            if self._stopped(claim):
                raise _Stopped
        return check

    def _materialize_inputs(self, job: JobRecord, inputs_dir: Path, check: Progress) -> None:
        for item in job.spec.inputs:
            check(0)
            dest = inputs_dir / item.name  # names were checked at submit: relative, no '..'
            dest.parent.mkdir(parents=True, exist_ok=True)
            if item.source == "inline" and job.spec.fast:
                dest.write_bytes(item.content())  # fast jobs carry their inputs in the record
            elif item.source == "inline":
                self.storage.download(f"{job.inputs_prefix}{item.name}", dest, progress=check)
            elif self.fetch is None:
                raise JobSystemError(ErrorCode.INPUT_FETCH_FAILED, "URL inputs are not enabled", retryable=False)
            else:
                self.fetch(item.value, dest, progress=check)
        check(0)

    def _store_results(self, claim: Claim, result: ContainerOutcome, *, cancelled: bool) -> Outcome:
        job = claim.job
        prefix = attempt_prefix(job.id, claim.attempt)
        outputs = []
        for path in sorted(p for p in result.outputs_dir.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = path.relative_to(result.outputs_dir).as_posix()
            self.storage.put_file(f"{prefix}outputs/{rel}", path)
            outputs.append(rel)
        self.storage.put_file(f"{prefix}stdout", result.stdout_path, content_type="text/plain")
        self.storage.put_file(f"{prefix}stderr", result.stderr_path, content_type="text/plain")
        outcome = Outcome(
            state=_end_state(result, cancelled=cancelled),
            error=_end_error(result, cancelled=cancelled),
            exit_code=result.exit_code,
            started_at=result.started_at,
            exited_at=result.exited_at,
            outputs=outputs,
            outputs_truncated=result.outputs_truncated,
            stdout=self._text(result.stdout_path, tail=result.logs_cut) if job.spec.appendStdOut else None,
            stderr=self._text(result.stderr_path, tail=result.logs_cut) if job.spec.appendStdErr else None,
        )
        return self._write_result(claim, outcome)

    def _inline_results(self, claim: Claim, result: ContainerOutcome, *, cancelled: bool) -> Outcome:
        """A fast job's outcome with its logs and outputs inline (nothing goes to storage): within
        ``max_inline_output_bytes`` in all, the smallest files whole first, so that one large file cannot crowd out
        the small ones; the first that does not fit keeps its start, and those after it are listed empty (each
        marked ``truncated``)."""
        paths = sorted(p for p in result.outputs_dir.rglob("*") if p.is_file() and not p.is_symlink())
        sizes = {p: p.stat().st_size for p in paths}
        budget, shares = self.config.max_inline_output_bytes, {}
        for path in sorted(paths, key=lambda p: (sizes[p], p)):
            shares[path] = min(sizes[path], budget)
            budget -= shares[path]
        files: dict[str, dict[str, Any]] = {}
        for path in paths:
            with path.open("rb") as f:
                data = f.read(shares[path])
            truncated = sizes[path] > len(data)
            encoded = base64.b64encode(data).decode()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            # as text, unless JSON's escapes would make it over three times its base64: control characters, which
            # take six bytes each (``\u0000``), are data rather than text (text in any script stays text)
            item = {"encoding": "utf8", "content": text} if text is not None and \
                len(json.dumps(text)) <= 3 * len(encoded) + 2 else {"encoding": "base64", "content": encoded}
            files[path.relative_to(result.outputs_dir).as_posix()] = {**item, "truncated": truncated}
        return Outcome(
            state=_end_state(result, cancelled=cancelled), error=_end_error(result, cancelled=cancelled),
            exit_code=result.exit_code,
            started_at=result.started_at, exited_at=result.exited_at, outputs=list(files),
            outputs_truncated=result.outputs_truncated or any(f["truncated"] for f in files.values()),
            stdout=self._text(result.stdout_path, tail=result.logs_cut),
            stderr=self._text(result.stderr_path, tail=result.logs_cut),
            inline_outputs=files, finished_at=time.time(),
        )

    def _text(self, path: Path, *, tail: bool = False) -> str:
        """The log's text, cut to ``append_log_bytes``: its start, or its end when ``tail`` (a log whose start
        the engine already dropped: its end is what is left to show)."""
        limit = self.config.append_log_bytes
        with path.open("rb") as f:
            size = path.stat().st_size
            if tail and size > limit:
                f.seek(size - limit)
                return TAIL_MARK + f.read(limit).decode("utf-8", errors="replace")
            data = f.read(limit + 1)
        text = data[:limit].decode("utf-8", errors="replace")
        return text + "\n[dcc: truncated]" if len(data) > limit else text

    def _write_result(self, claim: Claim, outcome: Outcome) -> Outcome:
        """Write result.json; returns the outcome stamped with the finish time it records."""
        outcome = replace(outcome, finished_at=time.time())
        final = _apply(claim, outcome, outcome.finished_at)
        self.storage.put_bytes(result_key(claim.job.id), json.dumps(result_document(final)).encode(),
                               content_type="application/json")
        return outcome

    def _system_failure(self, claim: Claim, exc: JobSystemError) -> Outcome:
        if exc.machine:  # (one that no retry can mend, a missing image or a refused container, is the job's)
            self._system_errors += 1
            self._last_system_error = time.monotonic()
            if self._system_errors >= self.config.max_consecutive_system_errors:  # stop claiming now, not at the
                self.health = f"UNHEALTHY:{self._system_errors} system errors in a row"  # next health check
        error = JobError(code=str(exc.code), message=exc.message)
        log.warning("job %s attempt %d: %s: %s", claim.job.id, claim.attempt, exc.code, exc.message)
        with self._lock:
            running = self._entry(claim)
        if running is None or running.lost:  # another attempt has the job: this one writes and reports nothing
            return Outcome(state=JobState.QUEUED, error=error)
        # a task's log of this attempt (what it wrote so far, and why it ended) goes with it, retried or not
        task_log = self._failed_attempt_log(claim, error) if claim.job.task is not None else None
        limit = FAST_MAX_ATTEMPTS if claim.job.spec.fast else self.config.max_attempts
        if exc.retryable and claim.attempt - claim.job.handbacks < limit:
            return Outcome(state=JobState.QUEUED, error=error, task_log=task_log)
        return self._ended_without_result(claim, Outcome(state=JobState.ERROR, error=error, task_log=task_log))

    def _ended_without_result(self, claim: Claim, outcome: Outcome) -> Outcome:
        """An attempt that ended with no container result (an error, a cancel before the start): its
        ``result.json`` written all the same (not for fast jobs, which keep nothing in storage)."""
        if claim.job.spec.fast:
            return outcome
        try:
            return self._write_result(claim, outcome)  # (served by id after the record expires)
        except StorageError:
            log.warning("job %s: could not write result.json", claim.job.id)
            return outcome

    def _failed_attempt_log(self, claim: Claim, error: JobError) -> dict[str, Any]:
        """A TES task's log of an attempt that a system failure ended: what it wrote so far, and why it ended."""
        from dcc.tes import rfc3339

        progress: dict[str, Any] = {"attempt": claim.attempt}
        try:
            record = self.store.get(claim.job.id)
        except StoreUnavailable:
            record = None
        if record is not None and record.task_log and record.task_log.get("attempt") == claim.attempt:
            progress = {k: v for k, v in record.task_log.items() if k != "running"}
        progress["end_time"] = rfc3339(time.time())
        progress["system_logs"] = [*progress.get("system_logs", []), f"{error.code}: {error.message}"]
        return progress

    def _report(self, claim: Claim, outcome: Outcome) -> None:
        """Tell the store how the attempt ended; retry while Redis is away (the result is already stored)."""
        delay = 0.2
        while True:
            try:
                recorded = self.store.finish(claim, outcome)
                if not recorded:
                    log.warning("job %s attempt %d: lease lost before the end was recorded", claim.job.id,
                                claim.attempt)
                if not recorded and outcome.state != JobState.QUEUED:
                    forget_result(self.storage, claim.job.id, claim.attempt)  # (what it wrote is not the result)
                if not recorded or outcome.state == JobState.QUEUED:
                    # the record may have ended other than this attempt says: the reaper ended it meanwhile (over
                    # the result.json written here), or the store did, for a cancel that came with a retry
                    keep_results(self.store, self.storage, [claim.job.id])
                return
            except StoreUnavailable as exc:
                log.warning("job %s: cannot report (%s); retrying", claim.job.id, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _notify(self, job_id: str) -> None:
        if self.notify is None:
            return
        try:
            self.notify(job_id)
        except Exception:  # a push that fails must not fail the job; clients can still poll
            log.warning("could not push the state of %s", job_id, exc_info=True)

    # leases, health, cancels, clean-up -----------------------------------------------------------------
    def _lease_loop(self) -> None:
        interval = min(self.config.heartbeat_seconds, self.store.lease_seconds / 3)
        while True:
            if not self.stopping.is_set():
                self.stopping.wait(interval)
            else:  # stopping: the jobs it lets finish keep their leases, at the same pace, until the last ends
                with self._slot_freed:
                    if self._running or self._outgoing:
                        self._slot_freed.wait(interval)
                    if not (self._running or self._outgoing):
                        break
            try:
                self._renew()
                self._check_health()
                self._check_drain()
                self._heartbeat()
            except StoreUnavailable as exc:
                log.warning("lease renewal: %s", exc)
            except Exception:  # e.g. a read-only replica during a failover: never let the lease thread die
                log.exception("lease renewal failed")

    def _renew(self) -> None:
        with self._lock:
            leases = [(r.claim.job.id, r.claim.attempt) for r in self._running.values()]
        asked = time.monotonic()  # (a lease found held runs at least a lease from here)
        for (job_id, attempt), status in self.store.renew(leases).items():
            with self._lock:
                running = self._running.get(job_id)
                if running is not None and running.claim.attempt != attempt:
                    running = None  # a later attempt took its place meanwhile: its lease is its own
                if running is not None:
                    if status != "lost":
                        running.confirmed = max(running.confirmed, asked)
                    running.lost = running.lost or status == "lost"
                    running.cancel = running.cancel or status == "cancel"
            if running is not None and status != "held":
                self.runtime.kill(job_id)

    def _may_write_shared(self, claim: Claim) -> bool:
        """Whether the attempt may write where any attempt of its job writes (a TES task's output URLs), waiting if
        need be: only once its lease is known held within the last half lease, so that a worker cut off from
        Redis, whose lease may have gone to a retry meanwhile, writes nothing until it reaches Redis again and
        learns which. False once the attempt is abandoned (cancelled, or the job another attempt's), or once its
        worker stops while Redis is out of reach (a stop with Redis in reach lets the uploads end)."""
        warned = False
        while True:
            with self._lock:
                running = self._entry(claim)
                if running is None or running.cancel or running.lost:
                    return False
                if time.monotonic() - running.confirmed < self.store.lease_seconds / 2:
                    return True
            try:
                self._renew()
            except (StoreUnavailable, redis.RedisError) as exc:  # (e.g. a read-only replica during a failover)
                if self.stopping.is_set():  # the worker goes: it would not wait past its stop (nor report)
                    return False
                if not warned:
                    log.warning("job %s attempt %d: its lease cannot be checked (%s): its outputs wait",
                                claim.job.id, claim.attempt, exc)
                    warned = True
                self.stopping.wait(min(1.0, self.store.lease_seconds / 4))  # (a stop ends the wait)

    def _check_drain(self) -> None:
        try:
            draining = self.drain.is_draining(self.config.worker_id)
        except StoreUnavailable:
            return
        if draining != self.draining:
            log.info("worker %s %s", self.config.worker_id,
                     "draining: claims no new job" if draining else "claims again")
        self.draining = draining

    def _check_health(self) -> None:
        reason = self.runtime.ping()
        if reason is None:
            usage = shutil.disk_usage(self.config.workdir)
            if usage.used / usage.total >= self.config.disk_full_ratio:
                reason = f"disk {usage.used * 100 // usage.total}% full"
        if reason is None and self._system_errors >= self.config.max_consecutive_system_errors:
            if time.monotonic() - self._last_system_error < self.config.system_error_pause_seconds:
                reason = f"{self._system_errors} system errors in a row"
            else:  # paused long enough: try again (one more error makes it unhealthy again)
                self._system_errors = self.config.max_consecutive_system_errors - 1
        self.health = "HEALTHY" if reason is None else f"UNHEALTHY:{reason}"

    def _heartbeat(self) -> None:
        with self._lock:
            running = ",".join(self._running)
            held = ",".join(f"{g}:{r.claim.job.id}" for r in (*self._running.values(), *self._outgoing.values())
                            for g in r.gpus)
            if self._running or self._outgoing:
                self._idle_since = None
            elif self._idle_since is None:
                self._idle_since = time.time()
            idle_since = "" if self._idle_since is None else f"{self._idle_since:.3f}"
        self.store.heartbeat(self.config.worker_id, {
            "health": self.health,
            "slots": ",".join(f"{q}={n}" for q, n in self.config.slots.items()),
            "running": running,
            "host": socket.gethostname(),
            "gpus": ",".join(self.config.gpu_device_ids),
            "gpuInfo": json.dumps([{"index": g.index, "uuid": g.uuid, "name": g.name, "memoryMiB": g.memory_mib}
                                   for g in self.config.gpus]),
            "class": self.config.worker_class,
            "gpusHeld": held,
            "idleSince": idle_since,
            "draining": "1" if self.draining else "",
        }, ttl=self.config.heartbeat_seconds * 3)

    def _cancel_loop(self) -> None:
        while not self.stopping.is_set():
            pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.store.cancel_channel)
                # redis-py reconnects a dropped listener by itself, within get_message: have it say so
                pubsub.connection.register_connect_callback(self._listener_connected)
                self._renew()  # a cancel published while nobody listened was not heard: the renewal reads the flags
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if self._listener_reconnected.is_set():
                        self._listener_reconnected.clear()
                        self._renew()
                    if message is not None:
                        self._cancel(str(message["data"]))
            except (redis.ConnectionError, redis.TimeoutError, StoreUnavailable) as exc:
                log.warning("cancel listener: %s; reconnecting", exc)
                self.stopping.wait(1.0)
            except Exception:  # e.g. a read-only replica during a failover: never let the listener die
                log.exception("cancel listener failed; reconnecting")
                self.stopping.wait(1.0)
            finally:
                if pubsub.connection is not None:  # (it goes back to the shared pool: without our callback)
                    pubsub.connection.deregister_connect_callback(self._listener_connected)
                pubsub.close()

    def _listener_connected(self, _connection: Any) -> None:
        self._listener_reconnected.set()

    def _cancel(self, job_id: str) -> None:
        with self._lock:
            running = self._running.get(job_id)
            if running is not None:
                running.cancel = True
            else:  # (most are other workers' jobs; one claimed here a moment ago is not launched yet)
                now = time.monotonic()
                self._early_cancels = {j: t for j, t in self._early_cancels.items()
                                       if now - t < EARLY_CANCEL_SECONDS}
                self._early_cancels[job_id] = now
        if running is not None:  # (no container yet: the attempt sees `cancel` before it starts one)
            self.runtime.kill(job_id)

    def _cleanup_loop(self) -> None:
        while True:
            try:
                item = self._cleanup.get(timeout=1.0)
            except Empty:
                continue
            if item is None:
                self._cleaned_up.set()
                return
            job_id, workdir, ended = item
            try:
                self.runtime.cleanup(job_id)
                remove_tree(workdir)
            except Exception:  # (whatever a job left: the next job's clean-up must still run)
                log.exception("cleanup of %s", job_id)
            finally:
                ended.set()
                with self._lock:
                    if self._ending.get(job_id) is ended:
                        del self._ending[job_id]


def _end_state(result: ContainerOutcome, *, cancelled: bool) -> JobState:
    """The terminal state a finished container gives its job."""
    if cancelled:
        return JobState.CANCELLED
    if result.disk_exceeded is not None:
        return JobState.ERROR
    if result.timed_out:
        return JobState.TIMED_OUT
    return JobState.SUCCEEDED if result.exit_code == 0 else JobState.FAILED


def _end_error(result: ContainerOutcome, *, cancelled: bool) -> JobError | None:
    """Why a finished container's job ended in error, if it did (the job's own doing: not retried)."""
    if cancelled or result.disk_exceeded is None:
        return None
    return JobError(code=ErrorCode.DISK_LIMIT, message=f"the job's files reached {result.disk_exceeded} bytes on "
                    "the worker's disk, over the limit (DCC_MAX_JOB_DISK_BYTES); it was stopped")


def _apply(claim: Claim, outcome: Outcome, now: float | None) -> JobRecord:
    """The job's record as it will be once ``outcome`` is recorded."""
    job = claim.job
    return JobRecord(
        id=job.id, spec=job.spec, state=outcome.state, queue=job.queue, submitted_at=job.submitted_at,
        attempts=claim.attempt, worker=job.worker, inputs_prefix=job.inputs_prefix, claimed_at=job.claimed_at,
        started_at=outcome.started_at, exited_at=outcome.exited_at, finished_at=now, exit_code=outcome.exit_code,
        error=outcome.error, outputs=outcome.outputs, outputs_truncated=outcome.outputs_truncated,
        stdout=outcome.stdout, stderr=outcome.stderr, task=job.task, task_log=outcome.task_log,
        task_history=job.task_history,
    )
