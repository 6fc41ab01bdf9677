"""The use cases behind the API: submit, read, list, wait, cancel, fetch results. No HTTP here."""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from dcc.errors import (
    InputTooLarge,
    InvalidJob,
    JobNotFound,
    NotReady,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)
from dcc.jobs import (
    JOB_ID_PATTERN,
    MAX_OUTPUT_NAME,
    JobError,
    JobRecord,
    JobSpec,
    JobState,
    Parameters,
    check_relative_path,
)
from dcc.replies import REPLY_BUDGET, fit_job_view, reply_bytes
from dcc.settings import Settings
from dcc.storage import Storage, attempt_prefix, job_prefix
from dcc.store import JobStore, parse_slots, worker_slots

URL_CHECK = Callable[[str], None]
MAX_LIST_BYTES = REPLY_BUDGET
"""The most a page of jobs or tasks may take as JSON: a page of 1000 fast jobs with their output, or 2047 tasks
in FULL view, could pass the 6 MB a Lambda response may hold (API Gateway then answers 502). A page that would is
cut short, with a cursor for the rest."""
LOG_REPLY_BYTES = 4 * 1024 * 1024
"""The longest log the API returns in its reply. A Lambda reply holds 6 MB, and API Gateway gets a binary body in
base64 (4/3 of its size): a longer log is a redirect to where storage serves it (a presigned S3 URL; in local mode a
signed link its server streams), else returned whole."""
_JOB_ID = re.compile(JOB_ID_PATTERN)
log = logging.getLogger(__name__)


def result_key(job_id: str) -> str:
    """Storage key of a finished job's ``result.json``."""
    return f"{job_prefix(job_id)}result.json"


def result_document(record: JobRecord) -> dict[str, Any]:
    """The durable record of a finished job, written to ``result.json`` (inline input values left out)."""
    spec = record.spec.model_dump(mode="json")
    for item in spec["inputs"]:
        if item["source"] == "inline":
            item.pop("value", None)
    doc = {**record.view(), "job": spec, "inputsPrefix": record.inputs_prefix}
    if record.task is not None:
        doc["task"] = record.task
        doc["taskLog"] = record.task_log
        doc["taskHistory"] = record.task_history
    return doc


def shown(record: JobRecord) -> dict[str, Any]:
    """The job's view as an API reply carries it (``fit_job_view``: logs and inline files cut if it would not fit)."""
    return fit_job_view(record.view(), REPLY_BUDGET, reply_bytes)


def keep_results(store: JobStore, storage: Storage, job_ids: Iterable[str]) -> None:
    """Write ``result.json`` for those of ``job_ids`` that are standard jobs that just ended with no worker to write
    it (cancelled while queued, ended by the reaper), so they are served by id after their record expires, as
    every other finished job is. Call it only for jobs that just ended so: what it writes is the final record."""
    try:
        records = store.get_many(job_ids)
    except StoreUnavailable:
        log.warning("could not read %s to write their results: Redis is unavailable", job_ids)
        return
    for record in records:
        if record is None or record.spec.fast or not record.state.terminal:
            continue
        try:
            storage.put_bytes(result_key(record.id), json.dumps(result_document(record)).encode(),
                              content_type="application/json")
        except StorageError:
            log.warning("could not write the result of %s", record.id, exc_info=True)


def forget_result(storage: Storage, job_id: str, attempt: int) -> None:
    """Remove the ``result.json`` attempt ``attempt`` wrote before learning that its lease had gone (its worker was
    cut off): it is not the job's result, and must not be served as one (call ``keep_results`` after it, which writes
    the job's own if it has ended meanwhile)."""
    try:
        doc = json.loads(storage.get_bytes(result_key(job_id)))
        if doc.get("attempts") == attempt:
            storage.delete_prefix(result_key(job_id))
    except ObjectNotFound:
        pass
    except (StorageError, ValueError):
        log.warning("could not check the result of %s attempt %d", job_id, attempt, exc_info=True)


def record_from_result(doc: dict[str, Any]) -> JobRecord:
    """Rebuild a (read-only) record from ``result.json``, for jobs whose Redis record expired."""
    spec = dict(doc["job"])
    spec["inputs"] = [{"value": "", **i} for i in spec.get("inputs", [])]
    timings = doc.get("timings") or {}
    error = doc.get("error")
    return JobRecord(
        id=doc["id"],
        spec=JobSpec.from_stored(spec),
        state=JobState(doc["state"]),
        queue=doc["queue"],
        submitted_at=timings.get("submitted") or 0.0,
        attempts=doc.get("attempts", 0),
        worker=doc.get("worker"),
        inputs_prefix=doc.get("inputsPrefix"),
        claimed_at=timings.get("claimed"),
        started_at=timings.get("started"),
        exited_at=timings.get("exited"),
        finished_at=timings.get("finished"),
        exit_code=doc.get("exitCode"),
        error=JobError(**error) if error else None,
        outputs=doc.get("outputs", []),
        outputs_truncated=doc.get("outputsTruncated", False),
        stdout=doc.get("stdout"),
        stderr=doc.get("stderr"),
        task=doc.get("task"),
        task_log=doc.get("taskLog"),
        task_history=doc.get("taskHistory") or [],
    )


@dataclass(frozen=True)
class Download:
    """An output file: its bytes, or a URL to fetch them from."""

    data: bytes | None = None
    url: str | None = None
    truncated: bool = False
    """Only the first part of the file was kept (a fast job's outputs past the inline limit)."""


class JobService:
    """What a user can do with jobs. Built once per process by ``dcc.bootstrap``."""

    def __init__(
        self,
        *,
        store: JobStore,
        storage: Storage,
        settings: Settings,
        check_url: URL_CHECK | None = None,
        notify: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.storage = storage
        self.settings = settings
        self.check_url = check_url
        self.notify = notify
        """Called with a job id after the API changed its state (pushes to websocket clients on AWS)."""
        self.clock = clock
        self.blocking: Callable[[], AbstractContextManager[object]] = nullcontext
        """Entered while a request blocks on a job (long-poll): local mode lets other requests run then."""

    # submit --------------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, *, task: dict[str, Any] | None = None) -> tuple[JobRecord, bool]:
        """Queue a job; returns it and whether it was created (False: a job with its client id exists).

        ``task``: the GA4GH TES task the job runs (``dcc.tes``); its inputs are fetched by the worker.
        """
        spec = self._normalized(spec)
        if spec.id is not None:
            existing = self._find(spec.id)
            if existing is not None:
                return existing, False
        job_id = spec.id or uuid.uuid4().hex
        if spec.fast:  # inputs travel in the job record, in Redis only
            record = JobRecord(id=job_id, spec=spec, state=JobState.QUEUED, queue=spec.queue,
                               submitted_at=self.clock())
            if not self.store.create(record, only_if_new=spec.id is not None):
                return self._existing(job_id), False
            self._push(job_id)
            return record, True
        # Inputs go to a fresh folder first, so a duplicate submit racing this one cannot mix its inputs in.
        inputs_prefix = f"{job_prefix(job_id)}inputs/{uuid.uuid4().hex[:12]}/"
        record = JobRecord(
            id=job_id, spec=spec.without_inline_values(), state=JobState.QUEUED, queue=spec.queue,
            submitted_at=self.clock(),
            inputs_prefix=inputs_prefix if any(i.source == "inline" for i in spec.inputs) else None,
            task=task,
        )
        written = self._write_inputs(spec, inputs_prefix)
        try:
            created = self.store.create(record, only_if_new=spec.id is not None)
        except BaseException:
            self._discard(inputs_prefix, written)
            raise
        if not created:
            self._discard(inputs_prefix, written)
            return self._existing(job_id), False
        self._push(job_id)
        return record, True

    def _push(self, job_id: str) -> None:
        """Tell websocket clients watching the job of its new state (on AWS; local mode follows Redis)."""
        if self.notify is None:
            return
        try:
            self.notify(job_id)
        except Exception:  # the change is made: a push that fails must not fail the request (clients can poll)
            log.warning("could not push the state of %s", job_id, exc_info=True)

    def _existing(self, job_id: str) -> JobRecord:
        existing = self._find(job_id)
        if existing is None:  # it expired between the two calls
            raise JobNotFound(job_id)
        return existing

    def _normalized(self, spec: JobSpec) -> JobSpec:
        s = self.settings
        params = spec.parameters
        duration = min(params.maxDuration or s.default_max_duration, s.max_duration)
        if params.gpu and (limit := self._gpu_limit()) is not None and params.gpu > limit:
            raise InvalidJob(f"parameters.gpu: {params.gpu} GPUs is more than any worker of this deployment has "
                             f"({limit})", field="parameters.gpu")
        if params.memory is not None and params.memory > s.max_memory_mb:
            raise InvalidJob(
                f"parameters.memory: {params.memory} MiB is over this deployment's maximum of "
                f"{s.max_memory_mb} MiB", field="parameters.memory")
        described = len(spec.without_inline_values().model_dump_json(exclude_defaults=True).encode())
        if described > s.max_spec_bytes:  # it lives in Redis with the job, and Docker caps a command's size
            raise InputTooLarge(
                f"the job's description (command, env, meta, input names and URLs) is {described} bytes, over "
                f"the limit of {s.max_spec_bytes} bytes (put large data in inputs)", field="job")
        size = spec.inline_bytes()
        limit = s.max_fast_inline_bytes if spec.fast else s.max_inline_bytes
        if size > limit:
            raise InputTooLarge(
                f"inputs: inline inputs total {size} bytes, over the limit of {limit} bytes for "
                f"{'fast' if spec.fast else 'standard'} jobs", field="inputs")
        if spec.fast and any(i.source == "url" for i in spec.inputs):
            raise InvalidJob("inputs: fast jobs take inline inputs only (submit a standard job for URL inputs)",
                             field="inputs")
        # (an inline input is kept at jobs/<id>/inputs/<12 hex>/<name>: S3 keys hold 1024 bytes with the prefix)
        room = getattr(self.storage, "max_key_bytes", None)
        most = None if room is None or spec.fast else room - len(f"{job_prefix(spec.id or 'x' * 32)}inputs/"
                                                                 f"{'x' * 12}/".encode())
        for i, item in enumerate(spec.inputs):
            if item.source == "inline" and most is not None and len(item.name.encode()) > most:
                raise InvalidJob(f"inputs.{i}.name: must be at most {most} bytes in UTF-8 here (storage keys hold "
                                 "no more)", field=f"inputs.{i}.name")
            if item.source == "url":
                if self.check_url is None:
                    raise InvalidJob(f"inputs.{i}.value: URL inputs are not enabled", field=f"inputs.{i}.value")
                try:
                    self.check_url(item.value)
                except InvalidJob as exc:
                    raise InvalidJob(f"inputs.{i}.value: {exc}", field=f"inputs.{i}.value") from exc
        return spec.model_copy(update={"parameters": params.model_copy(update={"maxDuration": duration})})

    def _write_inputs(self, spec: JobSpec, prefix: str) -> list[str]:
        written: list[str] = []
        try:
            for item in spec.inputs:
                if item.source == "inline":
                    key = prefix + item.name
                    self.storage.put_bytes(key, item.content())
                    written.append(key)
        except BaseException:
            self._discard(prefix, written)
            raise
        return written

    def _discard(self, prefix: str, written: list[str]) -> None:
        if written:
            try:
                self.storage.delete_prefix(prefix)
            except StorageError:
                pass  # unreferenced objects; the bucket's lifecycle rule removes them

    # read ----------------------------------------------------------------------------------------------
    def _find(self, job_id: str) -> JobRecord | None:
        """The job from Redis, else from its ``result.json``: once its record expired, or while Redis is away (a
        finished job is still served then; one without a result is unavailable, not unknown)."""
        try:
            record = self.store.get(job_id)
        except StoreUnavailable:
            record = self._from_result(job_id)
            if record is None:
                raise
            return record
        return record if record is not None else self._from_result(job_id)

    def _from_result(self, job_id: str) -> JobRecord | None:
        try:
            doc = json.loads(self.storage.get_bytes(result_key(job_id)))
        except ObjectNotFound:
            return None
        return record_from_result(doc)

    def get(self, job_id: str) -> JobRecord:
        """The job, from Redis or (once its record expired) from its ``result.json``."""
        check_job_id(job_id)
        record = self._find(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def list_jobs(self, *, state: JobState | None, limit: int, cursor: str | None,
                  ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of jobs' views (``shown``) and the cursor after it, cut short where the views would pass
        ``MAX_LIST_BYTES`` of JSON."""
        left = MAX_LIST_BYTES
        views: dict[str, dict[str, Any]] = {}

        def fits(record: JobRecord) -> bool:
            nonlocal left
            views[record.id] = view = shown(record)
            left -= reply_bytes(view)
            return left >= 0

        page = self.store.page(state=state, limit=limit, cursor=cursor, fits=fits)
        return [views[record.id] for record in page.jobs], page.cursor

    def submit_and_wait(self, spec: JobSpec) -> tuple[JobRecord, bool]:
        """Submit; for fast and ``wait`` jobs, hold on until the job ends or the wait limit passes."""
        record, created = self.submit(spec)
        if (spec.fast or spec.wait) and not record.state.terminal:
            try:
                record = self.wait(record.id, self.settings.wait_seconds)
            except StoreUnavailable:  # the job is made: say so (202, with its id), not 503, which invites a resubmit
                pass
        return record, created

    def _gpu_limit(self) -> int | None:
        """The most GPUs a job may ask for: the most any worker of the deployment has, as configured
        (``DCC_MAX_GPUS_PER_WORKER``: on AWS the GPU instance type's; in local mode its own worker's) or, when more,
        as a live worker reports (a worker started beside them). None when neither says (no worker has registered
        yet, and none is configured): the job waits for one."""
        configured = self.settings.max_gpus_per_worker
        try:
            live = [worker_slots(w, "gpu") or 0 for w in self.store.workers()]
        except StoreUnavailable:  # (the submit itself then says so)
            live = []
        if configured is None and not live:
            return None
        return max([configured or 0, *live])

    def _smoke_gpu(self, gpu: bool) -> None:
        if gpu and self._gpu_limit() == 0:  # (the job's own check would name a field never sent)
            raise InvalidJob("no worker of this deployment has a GPU: there is no GPU job to test")

    def smoke(self, *, gpu: bool) -> JobRecord:
        """Run one small fast job and return it as it is when done (or at the wait limit)."""
        self._smoke_gpu(gpu)
        spec = JobSpec(image=self.settings.smoke_image, command=["sh", "-c", "echo ok"], fast=True,
                       parameters=Parameters(gpu=1 if gpu else 0, maxDuration=60), meta={"smoke": True})
        return self.submit_and_wait(spec)[0]

    def smoke_load(self, *, gpu: bool, count: int, seconds: int) -> list[str]:
        """Queue ``count`` jobs that sleep ``seconds``; their ids."""
        self._smoke_gpu(gpu)
        spec = JobSpec(image=self.settings.smoke_image, command=["sleep", str(seconds)],
                       parameters=Parameters(gpu=1 if gpu else 0, maxDuration=seconds + 60), meta={"smoke": True})
        return [self.submit(spec)[0].id for _ in range(count)]

    def healthy(self, *, window: float) -> tuple[bool, str]:
        """Whether jobs run: a job succeeded within ``window`` s, or a probe job succeeds now."""
        if self.store.succeeded_since(self.clock() - window):
            return True, f"a job succeeded within the last {window:.0f} s"
        probe = self.smoke(gpu=False)
        if probe.state == JobState.SUCCEEDED:
            return True, f"probe job {probe.id} succeeded"
        return False, f"probe job {probe.id} is {probe.state.value}" + (
            f": {probe.error.message}" if probe.error else "")

    def stats(self, window: float) -> dict[str, Any]:
        """Counts by state, queue wait and run time percentiles per queue, jobs per worker."""
        return self.store.stats(window=window)

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        """Block until the job is terminal or ``timeout`` s pass; return it as it is then."""
        check_job_id(job_id)
        try:
            with self.blocking():
                record = self.store.wait(job_id, timeout)
        except StoreUnavailable:  # a job that ended is still known by its result.json
            record = self._from_result(job_id)
            if record is None:
                raise
        return record if record is not None else self.get(job_id)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job now; ask for a running one to be killed; leave a finished one as it is."""
        check_job_id(job_id)
        _, ended = self.store.cancel_ending(job_id)
        if ended:
            keep_results(self.store, self.storage, [job_id])  # (cancelled while queued: no worker writes it)
            self._push(job_id)
        return self.get(job_id)  # (None: a finished job whose record expired, or 404)

    def result(self, job_id: str) -> dict[str, Any] | Download:
        """The finished job's ``result.json``; where it is longer than a reply may carry, a presigned URL of it (or,
        where storage gives none, the document with its logs and inline files cut to fit: ``fit_job_view``)."""
        record = self.get(job_id)
        if not record.state.terminal:
            raise NotReady(f"job {job_id} is {record.state.value}; its result is written when it ends")
        try:
            doc = json.loads(self.storage.get_bytes(result_key(job_id)))
        except ObjectNotFound:
            doc = result_document(record)  # ended without running (cancelled while queued, reaped), or a fast job
        else:
            if reply_bytes(doc) > REPLY_BUDGET and (url := self.storage.presigned_url(result_key(job_id))):
                return Download(url=url)
        return fit_job_view(doc, REPLY_BUDGET, reply_bytes)

    def log(self, job_id: str, stream: str) -> Download:
        """The job's stdout or stderr: its bytes, or a presigned URL where storage has them and the log is longer than
        a reply may carry (``LOG_REPLY_BYTES``)."""
        record = self.get(job_id)
        if record.spec.fast:
            if not record.state.terminal:
                raise NotReady(f"job {job_id} is {record.state.value}; its {stream} is kept when it ends")
            return Download(data=((record.stdout if stream == "stdout" else record.stderr) or "").encode())
        try:
            try:  # (one read where the attempt kept it; the old layout only when it did not)
                return self._log(f"{attempt_prefix(job_id, record.attempts)}{stream}")
            except ObjectNotFound:
                return self._log(f"{job_prefix(job_id)}{stream}")
        except ObjectNotFound:
            if record.state.terminal:
                return Download(data=b"")
            raise NotReady(f"job {job_id} is {record.state.value}; its {stream} is stored when it ends") from None

    def _log(self, key: str) -> Download:
        with self.storage.open(key) as body:  # (one read: the part a reply may carry and one byte more, or all of it)
            head = body.read(LOG_REPLY_BYTES + 1)
            if len(head) <= LOG_REPLY_BYTES:
                return Download(data=head)
            url = self.storage.presigned_url(key)
            return Download(url=url) if url is not None else Download(data=head + body.read())

    def output(self, job_id: str, path: str) -> Download:
        """One output file: a presigned URL where storage has them, else its bytes."""
        try:
            check_relative_path(path, max_length=MAX_OUTPUT_NAME)
        except ValueError as exc:
            raise InvalidJob(f"path: {exc}", field="path") from exc
        record = self.get(job_id)
        if path not in record.outputs:
            raise ObjectNotFound(f"job {job_id} has no output {path!r}")
        if record.inline_outputs is not None:
            item = record.inline_outputs[path]
            content = item["content"]
            return Download(data=base64.b64decode(content) if item["encoding"] == "base64" else content.encode(),
                            truncated=bool(item.get("truncated")))
        key = self._files_key(record, f"outputs/{path}")
        url = self.storage.presigned_url(key)
        if url is not None:
            return Download(url=url)
        return Download(data=self.storage.get_bytes(key))

    def _files_key(self, record: JobRecord, name: str) -> str:
        """Where the job's attempt that counts keeps ``name`` (its ``stdout``, ``stderr`` or ``outputs/…``): under
        ``attempt-<n>/``, or, for a job run before attempts kept their files apart, under the job's own folder."""
        key = f"{attempt_prefix(record.id, record.attempts)}{name}"
        legacy = f"{job_prefix(record.id)}{name}"
        if not self.storage.exists(key) and self.storage.exists(legacy):
            return legacy
        return key

    def workers(self) -> list[dict[str, Any]]:
        """Live workers and their health, typed as ``worker_view`` says."""
        return [worker_view(worker) for worker in self.store.workers()]

    def queues(self) -> dict[str, Any]:
        """Queue depths and running jobs."""
        depths = self.store.queue_depths()
        depths["runningByQueue"] = self.store.running_by_queue()
        return depths


def worker_view(record: dict[str, str]) -> dict[str, Any]:
    """A worker's health record as the API shows it, typed rather than as its heartbeat wrote it in Redis.

    ``seen`` (when its last heartbeat was sent) and ``idleSince`` (when its last job ended; None while it runs one)
    are times in seconds since the epoch; ``running`` lists the ids of its jobs and ``gpus`` its GPU devices;
    ``slots`` counts its slots per queue (``{"cpu": 4, "gpu": 1}``); ``gpusHeld`` pairs each GPU a job holds with
    that job (``{"gpu": "0", "job": id}``); ``gpuInfo`` is what nvidia-smi said of each GPU; ``draining`` says
    whether it has stopped claiming. Each of these is there even when a worker did not write it (None, empty or
    False); any other field (``health``, ``host``, ``class``, or a newer worker's) is passed on as written.
    The scaler reads the record as written: this is for the API alone.
    """
    view: dict[str, Any] = dict(record)
    for name in ("seen", "idleSince"):
        view[name] = _time(record.get(name))
    for name in ("running", "gpus"):
        view[name] = _items(record.get(name))
    view["slots"] = parse_slots(record.get("slots"))
    held = (item.rpartition(":") for item in _items(record.get("gpusHeld")))  # (a job id has no colon; a GPU may)
    view["gpusHeld"] = [{"gpu": gpu, "job": job} for gpu, colon, job in held if colon and gpu and job]
    try:
        info = json.loads(record.get("gpuInfo") or "[]")
    except ValueError:
        info = []
    view["gpuInfo"] = info if isinstance(info, list) else []
    view["draining"] = bool(record.get("draining"))  # ("1", or "" once the mark is cleared)
    return view


def _time(text: str | None) -> float | None:
    """A heartbeat's time, or None when it is empty (or is no finite number, which JSON could not carry)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _items(text: str | None) -> list[str]:
    """A heartbeat's comma-separated list, without empty items (an empty string is an empty list)."""
    return [item for item in (text or "").split(",") if item]


def check_job_id(job_id: str) -> str:
    """Reject ids that cannot be job ids (they would otherwise reach storage keys)."""
    if not _JOB_ID.match(job_id):
        raise JobNotFound(job_id)
    return job_id


def split_job_ids(values: list[Any]) -> tuple[list[str], list[Any]]:
    """The values that can be job ids (each once, in order), and those that cannot (as given: strings that are no
    job's id, and values that are not strings)."""
    valid: dict[str, None] = {}
    invalid: list[Any] = []
    for value in values:
        if isinstance(value, str) and _JOB_ID.match(value):
            valid[value] = None
        else:
            invalid.append(value)
    return list(valid), invalid
