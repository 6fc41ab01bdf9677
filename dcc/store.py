"""The job store and queue, on Redis.

Keys (all under one hash tag, so scripts work on a cluster-mode or serverless cache):

    P:job:<id>      hash    the job record (``spec`` as JSON, ``gpus`` it needs, state, timestamps, result fields)
    P:q:<queue>     zset    queued job ids, lowest score claimed first (never past one that does not fit)
    P:sig:<queue>   list    wake-up tokens, one pushed per job queued; idle workers block on them
    P:leases        zset    ``<id>|<attempt>`` of running jobs, scored by lease deadline (ms)
    P:all           zset    every job id, scored by submit time (ms), for listing
    P:tes           zset    ids of the jobs that are GA4GH TES tasks, scored by submit time (ms)
    P:st:<state>    zset    ids of jobs that ended in <state>, scored by submit time (ms)
    P:workers       zset    worker ids scored by last heartbeat (ms); P:worker:<id> hash, TTL'd
    P:pulse         string  Redis's time (ms) of the last heartbeat of any worker; P:silence: the pulse a reaper
                            found silent; P:resumed: when the last silence of every worker ended (all TTL'd, a day)
    P:reap_hold     string  while the reaper holds after a silence (TTL: the hold), when the silence began: only
                            leases that lapsed before then are taken back meanwhile
    P:ev:<id>       channel the job's state changes; P:cancel: ids whose cancel was asked

Every state change is one Lua script, and each is gated by taking the job out of a queue or out of the
leases (``ZPOPMIN``/``ZREM`` say whether it was there), so two racing changes cannot both happen and
nothing leaves a terminal state. Thread-safe: redis-py's client is.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ParamSpec, TypeVar, overload

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from dcc.errors import InvalidJob, StoreUnavailable
from dcc.jobs import FAST_MAX_ATTEMPTS, TERMINAL_STATES, Claim, JobError, JobRecord, JobSpec, JobState, Outcome

P = ParamSpec("P")
T = TypeVar("T")

QUEUES = ("cpu", "gpu")
TRIM_INTERVAL = 300.0
"""Seconds between trims of the listing indexes (they only shed entries older than the retention)."""
_PAGE_ROUNDS = 8  # reads of the index a page makes at most, skipping entries whose record expired
MAX_CURSOR_LENGTH = 1024  # a cursor holds a score and a job id (at most 128 characters), base64-encoded


MAX_CONNECTIONS = 2000
"""A client's connections at most. Each request waiting on a job holds one (local mode lets 1000 wait at once);
redis-py's default of 100 made waits past it fail as if Redis were down."""


def connect(url: str, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A Redis client with explicit timeouts and a short retry (redis-py's defaults can block a minute)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        max_connections=MAX_CONNECTIONS,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 3.0),
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


def translated(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn redis-py's connection errors, and Redis's own passing refusals (a replica during a failover, a server
    still loading its data, a full one), into ``StoreUnavailable``: callers wait them out as they wait out an outage."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        except redis.ReadOnlyError as exc:  # (one still loading its data is a ConnectionError already)
            raise StoreUnavailable(f"Redis is not taking writes: {exc}") from exc
        except redis.exceptions.OutOfMemoryError as exc:  # full, and set to refuse writes rather than evict records
            raise StoreUnavailable(f"Redis is full: {exc}") from exc

    return wrapper


KEEPS_RUNNING = frozenset({"finish", "renew", "reap", "drop_worker", "fence", "task_log", "heartbeat", "cancel"})
"""The scripts that keep running jobs running (and a cancel, which only frees), run even when Redis is full (deployed
with ``noeviction``): leases, heartbeats and results go on past ``maxmemory``, so that no job is run twice or lost,
while new work (a submit) is refused until finished records expire. Redis 7 or later (script flags)."""
ALLOW_OOM = "#!lua flags=allow-oom\n"
MIN_REDIS_MAJOR = 7


def _load_scripts() -> dict[str, str]:
    lua = resources.files("dcc") / "lua"
    common = (lua / "common.lua").read_text()
    names = ("submit", "claim", "finish", "renew", "cancel", "reap", "drop_worker", "fence", "task_log", "unindex",
             "heartbeat")
    return {name: (ALLOW_OOM if name in KEEPS_RUNNING else "") + common + "\n" + (lua / f"{name}.lua").read_text()
            for name in names}


def _num(raw: str | None) -> float | None:
    return float(raw) if raw not in (None, "") else None


def record_from_hash(job_id: str, h: dict[str, str]) -> JobRecord:
    """Rebuild a ``JobRecord`` from its Redis hash."""
    error = json.loads(h["error"]) if h.get("error") else None
    exit_code = h.get("exit_code")
    return JobRecord(
        id=job_id,
        spec=JobSpec.from_stored(h["spec"]),
        state=JobState(h["state"]),
        queue=h["queue"],
        submitted_at=float(h["submitted"]),
        attempts=int(h.get("attempts") or 0),
        handbacks=int(h.get("handbacks") or 0),
        worker=h.get("worker") or None,
        inputs_prefix=h.get("inputs_prefix") or None,
        claimed_at=_num(h.get("claimed")),
        started_at=_num(h.get("started")),
        exited_at=_num(h.get("exited")),
        finished_at=_num(h.get("finished")),
        exit_code=int(exit_code) if exit_code not in (None, "") else None,
        error=JobError(**error) if error else None,
        outputs=json.loads(h["outputs"]) if h.get("outputs") else [],
        outputs_truncated=h.get("outputs_truncated") == "1",
        stdout=h.get("stdout"),
        stderr=h.get("stderr"),
        cancel_requested=h.get("cancel") == "1",
        inline_outputs=json.loads(h["inline_outputs"]) if h.get("inline_outputs") else None,
        task=json.loads(h["task"]) if h.get("task") else None,
        task_log=json.loads(h["task_log"]) if h.get("task_log") else None,
        task_history=json.loads(h["task_history"]) if h.get("task_history") else [],
    )


def _outcome_fields(outcome: Outcome) -> list[str]:
    fields: dict[str, str] = {}
    if outcome.exit_code is not None:
        fields["exit_code"] = str(outcome.exit_code)
    if outcome.error is not None:
        fields["error"] = json.dumps({"code": outcome.error.code, "message": outcome.error.message})
    if outcome.started_at is not None:
        fields["started"] = repr(outcome.started_at)
    if outcome.exited_at is not None:
        fields["exited"] = repr(outcome.exited_at)
    if outcome.outputs:
        fields["outputs"] = json.dumps(outcome.outputs)
    if outcome.outputs_truncated:
        fields["outputs_truncated"] = "1"
    if outcome.stdout is not None:
        fields["stdout"] = outcome.stdout
    if outcome.stderr is not None:
        fields["stderr"] = outcome.stderr
    if outcome.inline_outputs is not None:
        fields["inline_outputs"] = json.dumps(outcome.inline_outputs)
    if outcome.task_log is not None:
        fields["task_log"] = json.dumps(outcome.task_log)
    return [x for kv in fields.items() for x in kv]


@dataclass(frozen=True)
class Blocked:
    """A claim that took nothing: the first job of the queue needs more GPUs than the worker has free."""

    gpus: int
    """The GPUs that job needs."""


@dataclass(frozen=True)
class Page:
    """One page of a listing; ``cursor`` is None on the last page."""

    jobs: list[JobRecord]
    cursor: str | None


class JobStore:
    """Job records, queues and leases in Redis. Every method costs O(1) round trips."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "{dcc}",
        lease_seconds: float = 30.0,
        retention_seconds: int = 7 * 24 * 3600,
        max_attempts: int = 3,
        fast_retention_seconds: int = 3600,
        clock: Callable[[], float] = time.time,
        restart_grace_seconds: float | None = None,
    ) -> None:
        # decode_responses=True makes every reply a str; redis-py's stubs cannot say so, hence Any
        self.redis: Any = client
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.retention_ms = int(retention_seconds * 1000)
        self.max_attempts = max_attempts
        self.fast_retention_ms = int(fast_retention_seconds * 1000)
        self.clock = clock
        self.restart_grace_seconds = lease_seconds if restart_grace_seconds is None else restart_grace_seconds
        """How long after Redis starts ``reap`` waits (a lease: time for every worker to renew)."""
        self._scripts = {name: client.register_script(src) for name, src in _load_scripts().items()}
        self._trimmed_at = 0.0
        self.resumed_at = 0.0
        """When every worker's heartbeat last came back after a silence (as ``reap`` last read it; 0: never)."""

    # keys -----------------------------------------------------------------------------------------
    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def queue_key(self, queue: str) -> str:
        return f"{self.prefix}:q:{queue}"

    def signal_key(self, queue: str) -> str:
        return f"{self.prefix}:sig:{queue}"

    def events_channel(self, job_id: str) -> str:
        return f"{self.prefix}:ev:{job_id}"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}:cancel"

    @property
    def tasks_key(self) -> str:
        return f"{self.prefix}:tes"

    @property
    def _lease_ms(self) -> int:
        """A lease's length: the scripts time it by Redis's clock (``TIME``), as the reaper reads it."""
        return int(self.lease_seconds * 1000)

    @property
    def leases_key(self) -> str:
        return f"{self.prefix}:leases"

    def _run(self, name: str, args: Sequence[Any]) -> Any:
        return self._scripts[name](keys=[], args=[self.prefix, *args])

    # submit and read --------------------------------------------------------------------------------
    @translated
    def create(self, record: JobRecord, *, only_if_new: bool) -> bool:
        """Store a new queued job and queue it, in one step. False if ``only_if_new`` and the id exists."""
        submitted_ms = int(record.submitted_at * 1000)
        qscore = record.spec.queue_score(record.submitted_at)
        fields = {
            "spec": record.spec.model_dump_json(),
            "state": JobState.QUEUED.value,
            "queue": record.queue,
            "qscore": str(qscore),
            "submitted": repr(record.submitted_at),
            "attempts": "0",
            "gpus": str(record.spec.parameters.gpu),  # (read by the claim, which cannot afford to parse the spec)
        }
        if record.spec.fast:
            fields["max_attempts"] = str(FAST_MAX_ATTEMPTS)  # (the reaper's limit for it)
        if record.inputs_prefix:
            fields["inputs_prefix"] = record.inputs_prefix
        if record.task is not None:
            fields["task"] = json.dumps(record.task)  # a GA4GH TES task: also indexed in P:tes
        flat = [x for kv in fields.items() for x in kv]
        created = self._run(
            "submit",
            [record.id, record.queue, qscore, submitted_ms, "1" if only_if_new else "0",
             "1" if record.task is not None else "0", *flat],
        )
        return bool(created)

    @translated
    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, or None if unknown or expired."""
        h = self.redis.hgetall(self.job_key(job_id))
        return record_from_hash(job_id, h) if h else None

    @translated
    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        """Records of several jobs in one round trip, None where missing."""
        ids = list(job_ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        return [record_from_hash(i, h) if h else None for i, h in zip(ids, pipe.execute(), strict=True)]

    # the worker's side -------------------------------------------------------------------------------
    @translated
    def wait_for_work(self, queues: Sequence[str], timeout: float) -> str | None:
        """Block until a job may be waiting in one of ``queues`` (or ``timeout`` s pass); return that queue.

        A token is consumed per call; tokens can be stale (a cancelled job), so a claim may still find
        nothing. Callers claim after a timeout as well, which also mends any token lost with a worker. A caller
        whose claim was ``Blocked`` hands its token on (``signal``): a worker with the GPUs free may sleep on it.
        """
        popped = self.redis.blpop([self.signal_key(q) for q in queues], timeout=max(timeout, 0.01))
        if popped is None:
            return None
        key = popped[0]
        return key.rsplit(":", 1)[1]

    @translated
    def signal(self, queue: str) -> None:
        """Push a wake-up token for ``queue``: a worker hands on one it took for a job it cannot take."""
        self.redis.lpush(self.signal_key(queue), "1")

    @overload
    def claim(self, queue: str, worker: str) -> Claim | None: ...

    @overload
    def claim(self, queue: str, worker: str, *, free_gpus: int | None,
              worker_gpus: int | None = ...) -> Claim | Blocked | None: ...

    @translated
    def claim(self, queue: str, worker: str, *, free_gpus: int | None = None,
              worker_gpus: int | None = None) -> Claim | Blocked | None:
        """Take the first job of ``queue`` and lease it to ``worker``; None if the queue is empty.

        With ``free_gpus``: ``Blocked`` (nothing taken, the queue as it was) when that job needs more GPUs than that,
        unless it needs more than ``worker_gpus``, the worker's own, and than any live worker offers (it is taken, for
        the worker to end it).
        Jobs behind it are never taken instead: a job waits first in line until a worker has its GPUs free.
        """
        now = self.clock()
        check = ["", ""] if free_gpus is None else [max(free_gpus, 0), "" if worker_gpus is None else worker_gpus]
        reply = self._run("claim", [queue, worker, repr(now), self._lease_ms, *check])
        if isinstance(reply, int):
            return Blocked(gpus=reply)
        if not reply:
            return None
        attempt, job_id = int(reply[0]), reply[1]
        h = dict(zip(reply[2::2], reply[3::2], strict=True))
        h.update(state=JobState.RUNNING.value, attempts=str(attempt), worker=worker, claimed=repr(now))
        return Claim(job=record_from_hash(job_id, h), attempt=attempt)

    @translated
    def renew(self, leases: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """Extend leases ``(job_id, attempt)``: each maps to ``held``, ``cancel`` (held; cancel asked) or ``lost``."""
        if not leases:
            return {}
        reply = self._run("renew", [self._lease_ms, *(f"{i}|{a}" for i, a in leases)])
        names = {0: "lost", 1: "held", 2: "cancel"}
        return {lease: names[int(code)] for lease, code in zip(leases, reply, strict=True)}

    @translated
    def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record how the attempt ended (terminal, or ``queued`` to retry). False if the lease was lost."""
        if outcome.state != JobState.QUEUED and outcome.state not in TERMINAL_STATES:
            raise ValueError(f"cannot finish a job as {outcome.state}")
        job = claim.job
        finished = outcome.finished_at or self.clock()
        sample = ""
        if outcome.state != JobState.QUEUED and job.claimed_at is not None:
            run = (outcome.exited_at - outcome.started_at) if outcome.exited_at and outcome.started_at else 0.0
            sample = (f"{finished:.3f},{job.claimed_at - job.submitted_at:.4f},{run:.4f},{outcome.state.value},"
                      f"{job.worker or ''}")
        done = self._run(
            "finish",
            [job.id, claim.attempt, outcome.state.value, repr(finished),
             self.fast_retention_ms if job.spec.fast else self.retention_ms,
             repr(job.submitted_at), job.queue, sample, "1" if outcome.handed_back else "0",
             *_outcome_fields(outcome)],
        )
        return bool(done)

    @translated
    def succeeded_since(self, since: float) -> bool:
        """Whether some job succeeded after ``since`` (from the recent samples; cost bounded by their cap)."""
        for q in QUEUES:
            for sample in self.redis.lrange(f"{self.prefix}:stats:samples:{q}", 0, 199):
                finished, _, _, state, _ = sample.split(",", 4)
                if float(finished) < since:
                    break
                if state == JobState.SUCCEEDED.value:
                    return True
        return False

    @translated
    def stats(self, *, window: float = 900.0) -> dict[str, Any]:
        """Counts by state; p50/p95 queue wait and run time per queue and jobs per worker over ``window`` s."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(f"{self.prefix}:stats:count")
        for q in QUEUES:
            pipe.zcard(self.queue_key(q))
            pipe.lrange(f"{self.prefix}:stats:samples:{q}", 0, 4999)
        pipe.zcard(self.leases_key)
        counts, *rest = pipe.execute()
        running = rest.pop()
        since = self.clock() - window
        per_queue: dict[str, Any] = {}
        per_worker: dict[str, int] = {}
        queued = 0
        for q, (depth, samples) in zip(QUEUES, zip(rest[::2], rest[1::2], strict=True), strict=True):
            queued += depth
            waits, runs = [], []
            for sample in samples:
                finished, wait, run, _, worker = sample.split(",", 4)
                if float(finished) < since:
                    break  # newest first: the rest are older
                waits.append(float(wait))
                runs.append(float(run))
                per_worker[worker] = per_worker.get(worker, 0) + 1
            per_queue[q] = {"queued": depth, "jobs": len(waits), "queueWait": _percentiles(waits),
                            "runTime": _percentiles(runs)}
        by_state = {s.value: int(counts.get(s.value, 0)) for s in TERMINAL_STATES}
        by_state.update(queued=queued, running=running)
        return {"windowSeconds": window, "states": by_state, "queues": per_queue, "jobsPerWorker": per_worker}

    # control -----------------------------------------------------------------------------------------
    @translated
    def cancel(self, job_id: str) -> JobState | None:
        """Cancel a queued job now, or ask the worker of a running one to kill it. None if unknown."""
        return self.cancel_ending(job_id)[0]

    @translated
    def cancel_ending(self, job_id: str) -> tuple[JobState | None, bool]:
        """``cancel``, and whether this call ended the job (it was queued)."""
        reply = self._run("cancel", [job_id, repr(self.clock()), self.retention_ms])
        if not reply:
            return None, False
        return JobState(reply[0]), reply[1] == 1

    @translated
    def reap(self, *, limit: int = 1000, uptime: float | None = None) -> dict[str, JobState]:
        """Take back expired leases: requeue, or end in ``error``/``cancelled``. Returns what changed.

        Nothing is taken back within ``restart_grace_seconds`` (a lease) of Redis starting, nor of the end of a
        silence of every worker's heartbeat longer than 0.6 of a lease (Redis unreachable or failed over to a
        replica, whose clock of leases ran on): a lease that lapsed while no worker could reach Redis says nothing of
        its worker, which renews it once it reconnects. Silences and holds are timed by Redis's clock (no client's
        skew starts or stretches one), and a hold still takes back leases that lapsed before the silence began (a
        worker whose heartbeats keep pausing cannot shield a dead worker's lease). ``uptime``: Redis's, if the
        caller just read it (else it is read here). ``resumed_at`` then says when the last such silence ended, by
        this store's clock (0 if none is known).
        """
        if self.restart_grace_seconds > 0:
            uptime = self.uptime() if uptime is None else uptime
            if uptime is not None and uptime < self.restart_grace_seconds:
                return {}
        return self._reap(limit)

    def _reap(self, limit: int) -> dict[str, JobState]:
        now = self.clock()
        reply = self._run("reap", [repr(now), self.retention_ms, self.max_attempts, limit, *self._silence_args()])
        ago_ms = int(reply[0])  # (by Redis's clock: this clock's own time less it, whatever their skew)
        self.resumed_at = now - ago_ms / 1000 if ago_ms >= 0 else 0.0
        changed = {reply[i]: JobState(reply[i + 1]) for i in range(1, len(reply), 2)}
        if now - self._trimmed_at >= TRIM_INTERVAL:
            self._trim_indexes(now)
            self._trimmed_at = now
        return changed

    def _silence_args(self) -> tuple[int, int]:
        """How long every worker's heartbeat may pause before the reaper holds, and for how long (0, 0: never).

        A lease lapses only if its worker cannot renew it for a whole lease, and it renews every third of one at most,
        heartbeating each time: every silence that lets a lease lapse is longer than 0.6 of a lease, while a pause of
        one slow worker's loop is shorter."""
        if self.restart_grace_seconds <= 0:
            return 0, 0
        return int(self.lease_seconds * 600), int(self.restart_grace_seconds * 1000)

    def check_version(self) -> None:
        """Refuse a Redis older than 7 (``RuntimeError`` saying so): dcc's scripts carry flags (``allow-oom``), which
        an older one cannot compile. One ``INFO`` call; a Redis unreachable now is left to the first real call."""
        try:
            version = str(self.redis.info("server").get("redis_version", ""))
        except redis.RedisError:
            return
        major = version.split(".")[0]
        if major.isdigit() and int(major) < MIN_REDIS_MAJOR:
            raise RuntimeError(f"dcc needs Redis {MIN_REDIS_MAJOR} or later (its scripts carry flags); "
                               f"this one is {version}")

    @translated
    def uptime(self) -> float | None:
        """Seconds since Redis started (``INFO``'s ``uptime_in_seconds``), or None where ``INFO`` is not offered."""
        try:
            return float(self.redis.info("server")["uptime_in_seconds"])
        except (redis.ResponseError, KeyError, ValueError):
            return None

    @translated
    def drop_worker(self, worker: str) -> dict[str, JobState]:
        """Take back at once every job a lost worker holds (requeue, or end them as ``reap`` would), even just after
        a restart (the worker is known to be sick), and only those."""
        now = self.clock()
        reply = self._run("drop_worker", [worker, repr(now), self.retention_ms, self.max_attempts])
        return {reply[i]: JobState(reply[i + 1]) for i in range(0, len(reply), 2)}

    @translated
    def fence_idle(self, worker: str, *, mark_ttl: float) -> bool:
        """The last check before an idle worker's instance is removed: mark it draining for ``mark_ttl`` s (a drained
        worker's claims get nothing), then say whether it holds no lease. False when it claimed a job since it was
        judged idle: its mark is then taken back, unless it was draining before. One step, so no claim slips in
        between the check and the removal."""
        return bool(self._run("fence", [worker, repr(self.clock()), int(mark_ttl * 1000)]))

    def _trim_indexes(self, now: float) -> None:
        # Records expire `retention` after they finish; index entries older than that plus a margin
        # (the longest a job can stay queued and running is not bounded, so listing also skips misses).
        cutoff_ms = int((now * 1000) - self.retention_ms - 86_400_000)
        pipe = self.redis.pipeline(transaction=False)
        for key in self._index_keys():
            pipe.zremrangebyscore(key, "-inf", cutoff_ms)
        pipe.execute()

    # waiting -----------------------------------------------------------------------------------------
    @translated
    def wait(self, job_id: str, timeout: float) -> JobRecord | None:
        """Block until the job is terminal or ``timeout`` s pass; return its record then (None if unknown).

        Redis going away meanwhile is waited out within ``timeout``: the record returned is the last one read.
        """
        deadline = time.monotonic() + timeout
        record = self.get(job_id)
        while record is not None and not record.state.terminal and time.monotonic() < deadline:
            try:
                record = self._wait_events(job_id, deadline)
            except (redis.ConnectionError, redis.TimeoutError, StoreUnavailable):
                time.sleep(max(0.0, min(0.5, deadline - time.monotonic())))
        if record is not None and not record.state.terminal:  # as it is at the timeout, not as it was at the start
            try:
                record = self.get(job_id) or record
            except StoreUnavailable:
                pass
        return record

    def _wait_events(self, job_id: str, deadline: float) -> JobRecord | None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.events_channel(job_id))
            record = self.get(job_id)  # (after subscribing: an end published before it is read here)
            while record is not None and not record.state.terminal:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                message = pubsub.get_message(timeout=min(left, 1.0))
                if message is not None and JobState(message["data"]).terminal:
                    record = self.get(job_id)
            return record
        finally:
            pubsub.close()

    # listing -----------------------------------------------------------------------------------------
    @translated
    def page(self, *, state: JobState | None, limit: int, cursor: str | None,
             fits: Callable[[JobRecord], bool] | None = None) -> Page:
        """A page of jobs, newest first (queued: in queue order), from ``cursor``; no cursor on the last page.

        Entries whose record has expired (a fast job's, after an hour) are skipped, and dropped from the
        indexes, so a page is full while jobs remain. ``fits`` is asked of each job in turn: once it says no,
        the page ends before that job (which starts the next page), unless the page would be empty.
        """
        after = _decode_cursor(cursor)
        if state == JobState.RUNNING:
            return self._running_page(limit, after, fits)
        sources, indexes = self._page_sources(state)
        jobs: list[JobRecord] = []
        more = False
        for round_ in range(_PAGE_ROUNDS):  # (a page that meets more expired entries than that ends short)
            asked = (limit - len(jobs) if round_ == 0 else max(limit - len(jobs), 64)) + 1
            batch = self._page_entries(sources, after, asked)
            records = self.get_many(member.split("|", 1)[0] for member, _ in batch)
            gone = []
            consumed = 0
            for (member, score), record in zip(batch, records, strict=True):
                wanted = record is not None and (state is None or record.state == state)
                if len(jobs) == limit or (fits is not None and record is not None and wanted and not fits(record)
                                          and jobs):
                    break
                consumed += 1
                after = (score, member)
                if record is None:
                    gone.append(member)
                elif wanted:
                    jobs.append(record)
            if gone and indexes:
                self._drop_from_indexes(gone)
            if len(jobs) < limit and consumed < len(batch):  # (cut short by `fits`)
                return Page(jobs=jobs, cursor=_encode_cursor(*after) if after is not None else None)
            more = consumed < len(batch) or len(batch) == asked
            if more and len(jobs) == limit and consumed == len(batch):  # (filled on the batch's last entry)
                more = bool(self._page_entries(sources, after, 1))
            if not more or len(jobs) == limit:
                break
        return Page(jobs=jobs, cursor=_encode_cursor(*after) if more and after is not None else None)

    def _page_sources(self, state: JobState | None) -> tuple[list[tuple[str, bool]], bool]:
        """The sorted sets a listing of ``state`` reads (each with whether newest first), and whether they are
        indexes (whose entries for expired records may be dropped) rather than queues."""
        if state is None:
            return [(f"{self.prefix}:all", True)], True
        if state == JobState.QUEUED:
            return [(self.queue_key(q), False) for q in QUEUES], False
        return [(f"{self.prefix}:st:{state.value}", True)], True

    def _running_page(self, limit: int, after: tuple[float, str] | None,
                      fits: Callable[[JobRecord], bool] | None = None) -> Page:
        """Running jobs, newest first: the leases (as many as the workers' slots) ordered by submit time, which,
        unlike a lease's deadline, does not move between two pages."""
        ids = [member.split("|", 1)[0] for member in self.redis.zrange(self.leases_key, 0, -1)]
        submitted = self.redis.zmscore(f"{self.prefix}:all", ids) if ids else []
        entries = sorted(((score or 0.0, job_id) for job_id, score in zip(ids, submitted, strict=True)), reverse=True)
        if after is not None:
            entries = [e for e in entries if e < after]
        records = self.get_many(job_id for _, job_id in entries[:limit])
        jobs: list[JobRecord] = []
        for i, record in enumerate(records):
            if record is None or record.state != JobState.RUNNING:
                continue
            if fits is not None and not fits(record) and jobs:  # (this one starts the next page)
                return Page(jobs=jobs, cursor=_encode_cursor(*entries[i - 1]))
            jobs.append(record)
        more = len(entries) > limit
        return Page(jobs=jobs, cursor=_encode_cursor(*entries[limit - 1]) if more else None)

    def _drop_from_indexes(self, job_ids: list[str]) -> None:
        """Drop jobs whose record expired from the listing indexes (each checked again in the script)."""
        indexes = self._index_keys()
        self._run("unindex", [len(indexes), *indexes, *job_ids])

    def _index_keys(self) -> list[str]:
        return [f"{self.prefix}:all", self.tasks_key, *(f"{self.prefix}:st:{s.value}" for s in TERMINAL_STATES)]

    @translated
    def task_entries(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, str]], bool]:
        """Up to ``limit`` TES task ids, newest first, after the cursor ``after``, each with the cursor that
        resumes after it; and whether more follow."""
        entries = list(self._entries_after(self.tasks_key, True, _decode_cursor(after), limit + 1))
        return [(member, _encode_cursor(score, member)) for member, score in entries[:limit]], len(entries) > limit

    @translated
    def write_task_log(self, claim: Claim, log: dict[str, Any]) -> bool:
        """Record a running TES task's log so far; False (nothing written) if the attempt no longer holds the job."""
        return bool(self._run("task_log", [claim.job.id, claim.attempt, claim.job.worker or "", json.dumps(log)]))

    def _page_entries(
        self, sources: list[tuple[str, bool]], after: tuple[float, str] | None, limit: int
    ) -> list[tuple[str, float]]:
        reverse = sources[0][1]
        merged: list[tuple[str, float]] = []
        for key, _ in sources:
            merged.extend(self._entries_after(key, reverse, after, limit))
        merged.sort(key=lambda e: (e[1], e[0]), reverse=reverse)
        return merged[:limit]

    def _entries_after(
        self, key: str, reverse: bool, after: tuple[float, str] | None, limit: int
    ) -> Iterator[tuple[str, float]]:
        """Up to ``limit`` members strictly after ``after`` in (score, member) order (reversed if asked)."""
        bound = "+inf" if reverse else "-inf"
        if after is not None:
            bound = repr(after[0])
        fetched = 0
        offset = 0
        while fetched < limit:
            want = limit - fetched + 16
            if reverse:
                rows = self.redis.zrevrangebyscore(key, bound, "-inf", start=offset, num=want, withscores=True)
            else:
                rows = self.redis.zrangebyscore(key, bound, "+inf", start=offset, num=want, withscores=True)
            if not rows:
                return
            offset += len(rows)
            for member, score in rows:
                if after is not None and score == after[0]:
                    if (member >= after[1]) if reverse else (member <= after[1]):
                        continue
                yield member, score
                fetched += 1
                if fetched == limit:
                    return
            if len(rows) < want:
                return

    # workers and queues ------------------------------------------------------------------------------
    @translated
    def heartbeat(self, worker: str, info: dict[str, str], *, ttl: float) -> None:
        """Publish a worker's health and details, valid for ``ttl`` seconds."""
        fields = [item for pair in {**info, "seen": repr(self.clock())}.items() for item in pair]
        self._run("heartbeat", [worker, int(ttl * 1000), int(self.clock() * 1000), *self._silence_args(), *fields])

    @translated
    def forget_worker(self, worker: str) -> None:
        """Drop a worker's health record (on a clean shutdown)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(f"{self.prefix}:worker:{worker}")
        pipe.zrem(f"{self.prefix}:workers", worker)
        pipe.execute()

    @translated
    def workers(self) -> list[dict[str, str]]:
        """Workers whose health record is alive, with their details."""
        ids = self.redis.zrange(f"{self.prefix}:workers", 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for w in ids:
            pipe.hgetall(f"{self.prefix}:worker:{w}")
        out = []
        gone = []
        for w, h in zip(ids, pipe.execute(), strict=True):
            if h:
                out.append({"id": w, **h})
            else:
                gone.append(w)
        if gone:
            self.redis.zrem(f"{self.prefix}:workers", *gone)
        return out

    @translated
    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Per queue, the jobs waiting; and the jobs running in all."""
        pipe = self.redis.pipeline(transaction=False)
        for q in QUEUES:
            pipe.zcard(self.queue_key(q))
        pipe.zcard(self.leases_key)
        *depths, running = pipe.execute()
        return {"queues": dict(zip(QUEUES, depths, strict=True)), "running": running}

    @translated
    def running_by_queue(self) -> dict[str, int]:
        """Running jobs per queue."""
        counts = dict.fromkeys(QUEUES, 0)
        for by_queue in self.running_by_worker().values():
            for queue, n in by_queue.items():
                counts[queue] = counts.get(queue, 0) + n
        return counts

    @translated
    def running_by_worker(self, *, gpus: bool = False) -> dict[str, dict[str, int]]:
        """Jobs holding a lease, per worker and queue (from each job's ``worker`` and ``queue``): what a worker runs
        from the moment it claims, before its next heartbeat says so. ``gpus``: count a GPU job as the GPUs it
        holds (what the scaler weighs), not as one."""
        members = self.redis.zrange(self.leases_key, 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for m in members:
            pipe.hmget(self.job_key(m.split("|", 1)[0]), "worker", "queue", "gpus")
        counts: dict[str, dict[str, int]] = {}
        for worker, queue, held in pipe.execute():
            if worker and queue:
                by_queue = counts.setdefault(worker, {})
                by_queue[queue] = by_queue.get(queue, 0) + (_gpus(held) if gpus and queue == "gpu" else 1)
        return counts

    @translated
    def queued_gpus(self, *, limit: int = 10_000) -> tuple[tuple[int, ...], int]:
        """The GPUs each of the gpu queue's first ``limit`` jobs asks for, in queue order, and how many jobs wait
        past them (taken as one GPU each)."""
        ids = self.redis.zrange(self.queue_key("gpu"), 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.job_key(job_id), "gpus")
        pipe.zcard(self.queue_key("gpu"))
        *asked, total = pipe.execute()
        return tuple(_gpus(g) for g in asked), max(0, total - len(ids))

    @translated
    def ping(self) -> bool:
        """Whether Redis answers."""
        return bool(self.redis.ping())


def _gpus(raw: str | None) -> int:
    """A GPU job's ``gpus`` field: at least one (a record from before the field asked for one, the default)."""
    return max(1, int(raw)) if raw and raw.isdigit() else 1


def parse_slots(text: str | None) -> dict[str, int]:
    """A heartbeat's ``slots`` (like ``cpu=2,gpu=1``) as the slots per queue; a malformed part is left out, and a
    queue named twice keeps its first count."""
    slots: dict[str, int] = {}
    for part in (text or "").split(","):
        name, _, n = part.partition("=")
        if name.strip() and n.strip().isdecimal():
            slots.setdefault(name.strip(), int(n))
    return slots


def worker_slots(worker: dict[str, str], queue: str) -> int | None:
    """The slots a worker's heartbeat offers for ``queue`` (``slots`` is like ``cpu=2,gpu=1``)."""
    return parse_slots(worker.get("slots")).get(queue)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 and p95 (nearest rank) of ``values``; None when there are none."""
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))], 4)

    return {"p50": rank(0.50), "p95": rank(0.95)}


def _encode_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([score, member]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:  # (ours are short; a long one may nest deep enough to crash a parser)
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        score, member = json.loads(base64.urlsafe_b64decode(padded))
        if not math.isfinite(score := float(score)):
            raise ValueError("not a finite score")
        return score, str(member)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise InvalidJob("cursor is not one this API returned", field="cursor") from exc
