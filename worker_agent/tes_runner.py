"""Running a GA4GH TES task on a worker: its sandbox, its executors in order, its outputs.

The task's container paths live under one host folder, the sandbox (``<workdir>/sandbox``), at the same
relative paths: ``/data/in.txt`` is ``sandbox/data/in.txt``. Volumes and output folders are mounted
read-write, inputs not under them read-only, every executor sees the same mounts. Nothing the containers
leave is followed on the host: logs and stdin go through ``LocalStorage`` (no link is followed), and links and
devices are dropped from the mounted folders before any output is read.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from dcc.errors import JobSystemError, ObjectNotFound, StorageError, StoreUnavailable
from dcc.jobs import Claim, ErrorCode, JobError, JobState, Outcome
from dcc.local_storage import LocalStorage
from dcc.storage import Progress, Storage, check_key
from dcc.store import JobStore
from dcc.tes import TesExecutor, TesOutput, TesTask, has_wildcard, holder_of, normalize_url, rfc3339, url_location
from dcc.url_inputs import Fetcher
from worker_agent.disk import DiskWatch
from worker_agent.docker_runtime import LOG_FILES, UNNAMED, clean_outputs
from worker_agent.runtime import BindMount, ContainerJob, ContainerOutcome, ContainerRuntime, NotStarted

log = logging.getLogger("dcc.worker.tes")

GIB = 1 << 30
LOG_TAIL_BYTES = 64 * 1024
"""Of each executor's stdout and stderr, the task log keeps the last this many bytes."""


def plan_mounts(task: TesTask, sandbox: Path) -> list[BindMount]:
    """The bind mounts of a task: its volumes and output folders read-write, its inputs read-only, each the
    outermost of its kind. An input in a writable folder is writable with it; a volume or output folder in a
    read-only input folder is a read-write mount of its own over it (the engine mounts the outer one first), so the
    rest of the input stays read-only."""
    writable = {*task.volumes, *(out.folder() for out in task.outputs)}
    targets = sorted(writable | {item.path for item in task.inputs}, key=lambda p: (len(p), p))
    kept: dict[str, bool] = {}
    for target in targets:
        holder = holder_of(set(kept), target)
        if holder is None or (target in writable and not kept[holder]):
            kept[target] = target in writable
    return [BindMount(source=host_path(sandbox, t), target=t, read_only=not rw) for t, rw in kept.items()]


def host_path(sandbox: Path, container_path: str) -> Path:
    """Where a (checked, normalized) container path lives in the sandbox."""
    return sandbox / container_path.lstrip("/")


@dataclass
class _Locations:
    """Storage for the configured TES locations, one adapter per bucket or folder."""

    locations: tuple[str, ...]
    s3_client: Any = None

    def __post_init__(self) -> None:
        self._cache: dict[str, Storage] = {}

    def resolve(self, url: str, *, folder: bool = False) -> tuple[Storage, str] | None:
        """The storage holding ``url`` and its key there (a folder URL may name the location itself)."""
        loc = url_location(url, self.locations, folder=folder)
        normal = normalize_url(url)
        if loc is None or normal is None:
            return None
        parts = urlsplit(loc)
        if parts.scheme == "s3":
            base = f"s3://{parts.netloc}/"
            storage = self._cache.get(base)
            if storage is None:
                from dcc.s3_storage import S3Storage

                storage = self._cache[base] = S3Storage(parts.netloc, client=self.s3_client)
        else:
            base = loc
            storage = self._cache.get(base)
            if storage is None:
                storage = self._cache[base] = LocalStorage(Path(parts.path))
        return storage, normal[len(base):] if normal.startswith(base) else ""


@dataclass
class _Run:
    """How the executors went so far."""

    progress: dict[str, Any]
    state: JobState = JobState.SUCCEEDED
    exit_code: int | None = None
    first_start: float | None = None
    last_exit: float | None = None
    system_logs: list[str] = field(default_factory=list)
    error: JobError | None = None


class TaskRunner:
    """Runs one attempt of a task. Built by the worker for each TES job it claims."""

    def __init__(
        self,
        *,
        runtime: ContainerRuntime,
        store: JobStore,
        fetch: Fetcher | None,
        locations: tuple[str, ...],
        max_output_bytes: int,
        max_disk_bytes: int | None = None,
        s3_client: Any = None,
        disk_check_seconds: float = 2.0,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.fetch = fetch
        self.locations = _Locations(locations, s3_client)
        self.max_output_bytes = max_output_bytes
        self.max_disk_bytes = max_disk_bytes or None
        """The worker's limit for any job's files (``DCC_MAX_JOB_DISK_BYTES``): a task's sandbox stays under it too."""
        self.disk_check_seconds = disk_check_seconds

    def run(self, claim: Claim, workdir: Path, base: ContainerJob, *, cancelled: Callable[[], bool],
            abandoned: Callable[[], bool] | None = None) -> Outcome:
        """Fetch the inputs, run the executors in order, upload the outputs; the attempt's outcome.

        ``base`` carries what the worker decided for the job (limits, GPUs, labels, time limit). ``cancelled``:
        whether to stop (cancelled, or the worker stops); ``abandoned``: whether to stop uploading too (cancelled,
        or the job is another attempt's now; not a worker's stop, which lets the uploads end), by default
        ``cancelled``.
        A system error no retry can mend (an input that is not there, a container the engine refuses) ends the
        attempt in ``error``; a retryable one (``JobSystemError``) is raised for the worker to retry, after the
        attempt's log is stamped with its end.
        """
        task = TesTask.model_validate(claim.job.task)
        sandbox = workdir / "sandbox"
        progress: dict[str, Any] = {"attempt": claim.attempt, "logs": [], "outputs": [],
                                    "start_time": rfc3339(time.time()), "metadata": {"worker": claim.job.worker or ""}}
        run = _Run(progress=progress)
        try:
            try:
                mounts = self._prepare(task, sandbox, cancelled)
            except _Cancelled:  # while its inputs were downloading
                run.state = JobState.CANCELLED
                return self._ended(run, run.error)
            except JobSystemError as exc:
                if exc.retryable:
                    raise
                log.warning("task %s attempt %d: %s: %s", claim.job.id, claim.attempt, exc.code, exc.message)
                run.state, run.error = JobState.ERROR, JobError(code=str(exc.code), message=exc.message)
                run.system_logs.append(f"{exc.code}: {exc.message}")
                return self._ended(run, run.error)
            self._run_executors(claim, task, base, mounts, sandbox, workdir, run, cancelled)
            error = run.error
            if run.state in (JobState.SUCCEEDED, JobState.FAILED):  # outputs are uploaded after an executor error too
                progress["outputs"], failures, stopped = self._upload_outputs(task, sandbox, mounts,
                                                                              abandoned or cancelled)
                run.system_logs.extend(failures)
                if stopped:  # a cancel answered CANCELING: it ends CANCELED, whatever the executors did
                    run.state, error = JobState.CANCELLED, None
                    run.system_logs.append(f"stopped while the outputs were uploaded: {len(progress['outputs'])} "
                                           "files were uploaded, the rest were not")
                elif failures and run.state == JobState.SUCCEEDED:
                    run.state = JobState.ERROR
                    error = JobError(code=ErrorCode.STORAGE_FAILED, message="; ".join(failures))
        except BaseException:  # the worker retries or ends the attempt: the log it keeps says when it ended
            progress.pop("running", None)
            progress["end_time"] = rfc3339(time.time())
            try:
                self.store.write_task_log(claim, progress)
            except StoreUnavailable as exc:
                log.warning("task %s: could not record the end of the attempt: %s", claim.job.id, exc)
            raise
        return self._ended(run, error)

    @staticmethod
    def _ended(run: _Run, error: JobError | None) -> Outcome:
        """The attempt's outcome, its log stamped with its end."""
        run.progress["end_time"] = rfc3339(time.time())
        if run.system_logs:
            run.progress["system_logs"] = run.system_logs
        return Outcome(state=run.state, exit_code=run.exit_code, error=error, started_at=run.first_start,
                       exited_at=run.last_exit, task_log=run.progress)

    def _prepare(self, task: TesTask, sandbox: Path, cancelled: Callable[[], bool] = lambda: False) -> list[BindMount]:
        """Make the sandbox: writable folders, then the inputs; the mounts every executor gets."""
        sandbox.mkdir(mode=0o755)
        mounts = plan_mounts(task, sandbox)
        for target in (*task.volumes, *(out.folder() for out in task.outputs)):
            host_path(sandbox, target).mkdir(parents=True, exist_ok=True)  # (and so every writable mount)
        self._fetch_inputs(task, sandbox, cancelled)
        for m in mounts:  # after the inputs: a folder input inside a writable mount must not undo this
            if not m.read_only:
                for folder, _, _ in os.walk(m.source):
                    Path(folder).chmod(0o777)  # whatever user the image runs as may write there
        for m in mounts:
            if m.read_only and not m.source.exists():
                m.source.mkdir(parents=True)
        return mounts

    def _run_executors(self, claim: Claim, task: TesTask, base: ContainerJob, mounts: list[BindMount], sandbox: Path,
                       workdir: Path, run: _Run, cancelled: Callable[[], bool]) -> None:
        deadline = time.monotonic() + base.max_duration
        files = LocalStorage(sandbox)
        disk_gb = task.resources.disk_gb if task.resources else None
        watch = DiskWatch((sandbox,), self._disk_limit(disk_gb)[0],
                          on_exceed=lambda: self.runtime.kill(base.job_id), interval=self.disk_check_seconds)
        for i, executor in enumerate(task.executors):
            if watch.check() and (over := _over_disk(i - 1, None, watch, disk_gb)) is not None:
                self._disk_exceeded(run, over)
                return
            left = deadline - time.monotonic()
            if cancelled() or left <= 0:
                run.state = JobState.CANCELLED if cancelled() else JobState.TIMED_OUT
                return
            try:
                self.store.write_task_log(claim, {**run.progress, "running": i})
            except StoreUnavailable as exc:  # progress only: the final log goes with the outcome
                log.warning("task %s: could not record progress: %s", claim.job.id, exc)
            try:
                with watch:
                    result, unwritten = self._run_executor(claim, i, executor, base, mounts, files, workdir, left,
                                                           cancelled)
            except NotStarted:  # cancelled (or the worker stops) as its container was made: it did not start
                run.state = JobState.CANCELLED
                return
            except _NotStarted as exc:
                run.state, run.error = JobState.ERROR, JobError(code=exc.code, message=exc.message)
                run.system_logs.append(exc.message)
                return
            run.first_start = run.first_start or result.started_at
            run.last_exit = result.exited_at
            run.exit_code = result.exit_code
            run.progress["logs"].append(self._executor_log(result))
            if (over := _over_disk(i, result, watch, disk_gb)) is not None:
                self._disk_exceeded(run, over)
                return
            if result.killed:  # (a stop asked after the executor ended is seen before the next one)
                run.state = JobState.CANCELLED
                return
            if result.timed_out:
                run.state = JobState.TIMED_OUT
                return
            if (failure := _files_failure(i, executor, result, unwritten)) is not None:
                run.state, run.error = JobState.ERROR, failure
                run.system_logs.append(failure.message)
                return
            if result.exit_code != 0 and not executor.ignore_error:
                run.state = JobState.FAILED
                run.system_logs.append(f"executor {i} exited with code {result.exit_code}; the executors after it "
                                       "did not run")
                return

    def _disk_limit(self, disk_gb: float | None) -> tuple[int | None, str]:
        """The most the task's files may take (None: no limit), and what sets it: its ``disk_gb``, or the
        worker's own limit when that is less."""
        asked = int(disk_gb * GIB) if disk_gb else None
        if self.max_disk_bytes is not None and (asked is None or self.max_disk_bytes < asked):
            return self.max_disk_bytes, "the worker's limit (DCC_MAX_JOB_DISK_BYTES)"
        return asked, f"its disk_gb of {disk_gb}"

    @staticmethod
    def _disk_exceeded(run: _Run, message: str) -> None:
        run.state = JobState.ERROR
        run.error = JobError(code=ErrorCode.DISK_LIMIT, message=message)
        run.system_logs.append(message)

    # inputs ----------------------------------------------------------------------------------------------
    def _fetch_inputs(self, task: TesTask, sandbox: Path, cancelled: Callable[[], bool]) -> None:
        """Write or download each input. Under ``disk_gb`` (or the worker's own limit, if less), an input that
        would take the task's files past it fails the task before it is downloaded (where its size is known first)
        or as soon as its download goes past it. A cancel is seen between inputs and while one downloads
        (``_Cancelled``)."""
        disk_gb = task.resources.disk_gb if task.resources else None
        budget, limit_name = self._disk_limit(disk_gb)
        used = 0
        for i, item in enumerate(task.inputs):
            if cancelled():  # seen between inputs (and between a folder's files): a cancel need not wait for all
                raise _Cancelled
            dest = host_path(sandbox, item.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            room = None if budget is None else budget - used
            try:
                if item.url is None:
                    data = (item.content or "").encode()
                    _fits(len(data), room)
                    dest.write_bytes(data)
                    used += len(data)
                elif item.type == "DIRECTORY":
                    used += self._fetch_folder(item.url, dest, room, cancelled)
                else:
                    used += self._fetch_file(item.url, dest, room, cancelled)
            except _TooBig as exc:
                raise JobSystemError(ErrorCode.DISK_LIMIT,
                                     f"inputs.{i} ({item.url or item.path}): {exc.size} bytes would take the task's "
                                     f"files past {limit_name} ({budget} bytes)", retryable=False) from exc
            except (StorageError, OSError) as exc:  # (a file where the task's layout puts a folder, or the reverse,
                # is the task's: no retry mends it)
                task_fault = isinstance(exc, ObjectNotFound | IsADirectoryError | NotADirectoryError | FileExistsError)
                raise JobSystemError(ErrorCode.INPUT_FETCH_FAILED, f"inputs.{i} ({item.url}): {exc}",
                                     retryable=not task_fault) from exc
            dest.chmod(0o755 if dest.is_dir() else 0o644)

    def _fetch_file(self, url: str, dest: Path, room: int | None = None,
                    cancelled: Callable[[], bool] = lambda: False) -> int:
        watch = _watch(room, cancelled)
        found = self.locations.resolve(url)
        if found is not None:
            storage, key = found
            if room is not None:
                _fits(next((size for name, size in storage.list(key) if name == key), 0), room)
            storage.download(key, dest, progress=watch)
            size = dest.stat().st_size
        elif self.fetch is not None:
            size = self.fetch(url, dest, progress=watch)
        else:
            raise JobSystemError(ErrorCode.INPUT_FETCH_FAILED, f"{url}: URL inputs are not enabled", retryable=False)
        _fits(size, room)
        return size

    def _fetch_folder(self, url: str, dest: Path, room: int | None = None,
                      cancelled: Callable[[], bool] = lambda: False) -> int:
        found = self.locations.resolve(url, folder=True)
        if found is None:
            raise JobSystemError(ErrorCode.INPUT_FETCH_FAILED, f"{url}: not a location folders are read from",
                                 retryable=False)
        storage, key = found
        prefix = f"{key}/" if key else ""
        objects = list(storage.list(prefix))
        if not objects:  # (a folder in a bucket is its files: none is a wrong URL as often as an empty folder)
            raise ObjectNotFound("no files under it")
        _fits(sum(size for _, size in objects), room)  # before any of it is downloaded
        dest.mkdir(parents=True, exist_ok=True)
        for name, _ in objects:
            if cancelled():
                raise _Cancelled
            rel = check_key(name[len(prefix):])  # an object named 'a/../../x' must not land outside the sandbox
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.download(name, target, progress=_watch(None, cancelled))
            target.chmod(0o644)
        for folder, _, _ in os.walk(dest):
            Path(folder).chmod(0o755)
        return sum(size for _, size in objects)

    # executors -------------------------------------------------------------------------------------------
    def _run_executor(self, claim: Claim, index: int, executor: TesExecutor, base: ContainerJob,
                      mounts: list[BindMount], files: LocalStorage, workdir: Path, seconds: float,
                      cancelled: Callable[[], bool]) -> tuple[ContainerOutcome, list[str]]:
        """Run one executor; its outcome, and why its stdout/stderr files could not be written (if so)."""
        run_dir = workdir / f"executor-{index}"
        run_dir.mkdir()
        stdin = None
        if executor.stdin is not None:
            stdin = run_dir / "stdin"
            try:
                with files.open(executor.stdin.lstrip("/")) as src:  # regular files only: a FIFO would hang
                    if os.fstat(src.fileno()).st_size > self.max_output_bytes:
                        raise StorageError(f"larger than {self.max_output_bytes} bytes")
                    with stdin.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            except StorageError as exc:  # a typo must not run the executor on empty input
                folder = (files.root / executor.stdin.lstrip("/")).is_dir()  # (metadata only: nothing is read)
                raise _NotStarted(ErrorCode.INPUT_FETCH_FAILED, f"executor {index}: its stdin {executor.stdin} "
                                  f"cannot be read: {'it is a folder' if folder else exc}") from exc
        files_out = executor.stdout is not None or executor.stderr is not None
        job = ContainerJob(
            job_id=base.job_id,
            image=executor.image,
            command=list(executor.command),
            env=dict(executor.env),
            working_dir=executor.workdir,
            inputs_dir=None,
            max_duration=seconds,
            cpus=base.cpus,
            memory_mb=base.memory_mb,
            gpu_device_ids=base.gpu_device_ids,
            labels=base.labels,
            mounts=tuple(mounts),
            stdin_path=stdin,
            # the output is a file of the task's: the engine keeps as much of it as an output may hold (a cut is
            # only known once LOG_FILES - 1 of its files are full: room for the limit in those)
            max_log_bytes=math.ceil(self.max_output_bytes * LOG_FILES / (LOG_FILES - 1)) if files_out else None,
        )
        try:
            result = self.runtime.run(job, workdir=run_dir, stopped=cancelled)
        except JobSystemError as exc:  # no retry can start it (a missing image, a container the engine refuses)
            if exc.retryable:
                raise
            log.warning("task %s executor %d: %s: %s", claim.job.id, index, exc.code, exc.message)
            raise _NotStarted(str(exc.code), f"executor {index}: {exc.code}: {exc.message}") from exc
        finally:
            self.runtime.cleanup(base.job_id)  # the next executor gets a container of its own
        unwritten: list[str] = []
        for name, path, source in (("stdout", executor.stdout, result.stdout_path),
                                   ("stderr", executor.stderr, result.stderr_path)):
            if path is not None:
                try:
                    files.put_file(path.lstrip("/"), source)
                except StorageError as exc:  # a later executor or an output would read a stale or missing file
                    log.warning("task %s executor %d: cannot write %s: %s", claim.job.id, index, path, exc)
                    host = files.root / path.lstrip("/")
                    folder = host.is_dir() and not host.is_symlink()  # (metadata only)
                    unwritten.append(f"its {name} {path} cannot be written: {'it is a folder' if folder else exc}")
        return result, unwritten

    @staticmethod
    def _executor_log(result: ContainerOutcome) -> dict[str, Any]:
        code = result.exit_code if result.exit_code is not None else (137 if result.killed or result.timed_out else -1)
        return {
            "start_time": rfc3339(result.started_at),
            "end_time": rfc3339(result.exited_at),
            "stdout": _tail(result.stdout_path),
            "stderr": _tail(result.stderr_path),
            "exit_code": code,
        }

    # outputs ---------------------------------------------------------------------------------------------
    def _upload_outputs(self, task: TesTask, sandbox: Path, mounts: list[BindMount],
                        cancelled: Callable[[], bool] = lambda: False) -> tuple[list[dict[str, str]], list[str], bool]:
        """Upload every output it can; the files uploaded, what went wrong (each output on its own), and whether a
        cancel (seen before each file) stopped the uploads.

        Only the files uploaded count toward the output limit: volumes are scratch space (``disk_gb`` bounds them).
        """
        failures: list[str] = []
        for m in mounts:
            # links and devices go, nothing is followed (no byte limit here: what is uploaded is counted below)
            if m.read_only or not m.source.is_dir():
                continue
            cleaned = clean_outputs(m.source, sys.maxsize)
            failures.extend(f"{m.target}/{name} was left out: {UNNAMED}" for name in cleaned.unnamed
                            if _named(task, f"{m.target}/{name}"))
        uploaded: list[dict[str, str]] = []
        room = self.max_output_bytes
        for i, out in enumerate(task.outputs):
            left_out: list[str] = []
            try:
                found = self.locations.resolve(out.url, folder=out.names_folder)
                if found is None:
                    raise StorageError(f"{out.url} is not in a location this service writes")
                storage, base_key = found
                for path, rel in _output_files(out, sandbox):
                    if cancelled():
                        return uploaded, failures, True
                    key = check_key(f"{base_key.rstrip('/')}/{rel}".lstrip("/")) if rel is not None else base_key
                    size = path.stat().st_size
                    container = "/" + path.relative_to(sandbox).as_posix()
                    if size > room:
                        left_out.append(container)
                        continue
                    storage.put_file(key, path)
                    room -= size
                    url = out.url if rel is None else f"{out.url.rstrip('/')}/{quote(rel)}"
                    uploaded.append({"url": url, "path": container, "size_bytes": str(size)})
            except (StorageError, OSError, UnicodeError) as exc:
                failures.append(f"outputs.{i} ({out.path} → {out.url}): {exc}")
            if left_out:
                shown = ", ".join(left_out[:10]) + (f" and {len(left_out) - 10} more" if len(left_out) > 10 else "")
                failures.append(f"outputs.{i} ({out.path} → {out.url}): past the output limit of "
                                f"{self.max_output_bytes} bytes (DCC_MAX_OUTPUT_BYTES, all outputs together), "
                                f"left out: {shown}")
        return uploaded, failures, False


def _files_failure(index: int, executor: TesExecutor, result: ContainerOutcome,
                   unwritten: list[str]) -> JobError | None:
    """Why an executor's stdout/stderr files are not what it wrote, if they are not: the engine cut its output, or
    they could not be written (either fails the task: a file missing its start, or missing, is no result)."""
    if result.logs_cut and (executor.stdout is not None or executor.stderr is not None):
        files_named = " and ".join(p for p in (executor.stdout, executor.stderr) if p is not None)
        message = (f"executor {index}'s output passed what the engine keeps of it (the output limit, "
                   f"DCC_MAX_OUTPUT_BYTES, as the engine stores it): {files_named} would miss its start")
        return JobError(code=ErrorCode.LOG_LIMIT, message=message)
    if unwritten:
        return JobError(code=ErrorCode.STORAGE_FAILED, message=f"executor {index}: " + "; ".join(unwritten))
    return None


def _over_disk(index: int, result: ContainerOutcome | None, watch: DiskWatch, disk_gb: float | None) -> str | None:
    """Why the task went past a disk limit after executor ``index``, if it did: its ``disk_gb``, or the worker's
    own limit for any job (which counts the container's writable layer too)."""
    if watch.exceeded is not None:
        if disk_gb and watch.limit == int(disk_gb * GIB):
            return (f"the task's files reached {watch.exceeded} bytes, over its disk_gb of {disk_gb} "
                    f"({watch.limit} bytes); it was stopped")
        return (f"the task's files reached {watch.exceeded} bytes, over the worker's limit of {watch.limit} bytes "
                "(DCC_MAX_JOB_DISK_BYTES); it was stopped")
    if result is not None and result.disk_exceeded is not None:
        return (f"executor {index}'s files reached {result.disk_exceeded} bytes, over the worker's limit "
                "(DCC_MAX_JOB_DISK_BYTES); it was stopped")
    return None


class _Cancelled(Exception):
    """The task was cancelled before its executors ran."""


class _NotStarted(Exception):
    """An executor that cannot start, for a reason of the task's own."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _TooBig(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _watch(room: int | None, cancelled: Callable[[], bool]) -> Progress:
    """A download's progress callback: stops it (``_TooBig``, ``_Cancelled``) past ``room`` or on a cancel."""
    def check(done: int) -> None:
        _fits(done, room)
        if cancelled():
            raise _Cancelled
    return check


def _fits(size: int, room: int | None) -> None:
    """Raise ``_TooBig`` if ``size`` bytes do not fit in ``room`` (None: no limit)."""
    if room is not None and size > room:
        raise _TooBig(size)


def _output_files(out: TesOutput, sandbox: Path) -> list[tuple[Path, str | None]]:
    """The regular files an output names, each with its path under the output's URL (None: the URL itself)."""
    host = host_path(sandbox, out.path)
    if has_wildcard(out.path):
        prefix = (out.path_prefix or "/").rstrip("/")
        matches = sorted(glob.glob(out.path.lstrip("/"), root_dir=sandbox))
        found: list[tuple[Path, str | None]] = []
        for rel in matches:
            for path in _files_under(sandbox / rel):
                container = "/" + path.relative_to(sandbox).as_posix()
                found.append((path, container[len(prefix):].lstrip("/")))
        return found
    if out.type == "DIRECTORY":
        return [(p, p.relative_to(host).as_posix()) for p in _files_under(host)]
    if not host.is_file() or host.is_symlink():
        raise StorageError(f"output {out.path} was not written by the executors")
    return [(host, None)]


def _named(task: TesTask, container_path: str) -> bool:
    """Whether an output of the task names the file at ``container_path`` (a pattern: any file in its folder)."""
    for out in task.outputs:
        top = out.folder() if has_wildcard(out.path) else out.path
        if container_path == top or (out.names_folder and container_path.startswith(top.rstrip("/") + "/")):
            return True
    return False


def _files_under(path: Path) -> list[Path]:
    if path.is_symlink():
        return []
    if path.is_file():
        return [path]
    found: list[Path] = []
    for folder, dirs, files in os.walk(path, followlinks=False):
        dirs.sort()
        found.extend(Path(folder) / f for f in sorted(files) if (Path(folder) / f).is_file())
    return found


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - LOG_TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    return ("[dcc: earlier output left out]\n" + text) if size > LOG_TAIL_BYTES else text

