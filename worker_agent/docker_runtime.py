"""The container runtime on the Docker SDK: hardened job containers.

The job's own two folders are bind-mounted: its inputs read-only at ``/inputs``, an empty folder at
``/outputs``; nothing else of the host. (Copying through ``put_archive``/``get_archive`` instead costs
~110 ms a job here, as each call mounts the container's root file system.) So the worker must run beside
its engine, as it does on a worker instance and in local mode. After the container exits, the outputs
folder is cleaned on the host before anyone reads it: links, FIFOs and other non-regular files are
removed without being followed, and files past the size limit are dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest, LogConfig, Mount
from wcmatch import glob as wcglob

from dcc.errors import JobSystemError
from dcc.jobs import MAX_OUTPUT_NAME, ErrorCode, check_relative_path
from worker_agent.disk import DiskWatch
from worker_agent.files import remove_tree
from worker_agent.runtime import ContainerJob, ContainerOutcome, NotStarted

log = logging.getLogger("dcc.worker")

ETC_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

# The engine keeps a job's output (both streams) in its json-file log driver, in LOG_FILES files of max_log_bytes /
# LOG_FILES each: past that the oldest file goes, so the engine's disk use is bounded, reading the output back
# takes bounded time (~2.6-2.9 s per million lines here, bench_log_driver.py), and the end of the output is kept.
# Not the "local" driver, though it stores less and runs a busy job faster: as of Docker 20.10 it drops the newline
# ending a line of 16 KiB or more (which the engine stores in pieces), joining it to the next one. The limit
# counts what the driver stores: each line (or 16 KiB piece) JSON-escaped, in an object of ~69 bytes. Under
# MIN_LOG_BYTES a last stderr line can go while older stdout stays (the engine copies the streams apart, and lags
# on a busy one).
LOG_FILES = 8
LOG_ENTRY_OVERHEAD = 69  # {"log":"","stream":"stdout","time":"2026-11-27T19:26:29.727387776Z"} and a newline
MIN_LOG_BYTES = 8 << 20
_ESCAPED_AS_2 = b'"\\\n\r'  # written \", \\, \n, \r
_ESCAPED_AS_6 = bytes(c for c in range(0x20) if c not in b"\n\r") + b"<>&"  # written \u00XX (a tab too)
OUT_OF_MEMORY = "[dcc: the job was killed for going past its memory limit of {mb} MiB (parameters.memory)]\n"
MAX_NAMED = 100  # outputs left out for the limit named one by one in stderr; the rest counted
LEFT_OUT = "[dcc: output {name} left out: the outputs kept would have gone past {limit} bytes]\n"
LOG_CUT = "[dcc: the job's output reached the log limit of {limit} bytes: earlier output may have been dropped]\n"
DISK_LIMIT = ("[dcc: the job was stopped: its files (outputs and the container's own writes) reached {size} bytes, "
              "over the limit of {limit} bytes (DCC_MAX_JOB_DISK_BYTES)]\n")

# Outputs to keep: `**` spans folders, `*` also matches names starting with a dot, and a pattern starting with
# `!` excludes (only exclusions: everything else is kept). No `{a,b}`: an expansion could make more `**` than
# the two a pattern may hold (`*{*/*,}*`), and each one multiplies the work of matching a deep path.
KEEP_FLAGS = wcglob.GLOBSTAR | wcglob.DOTGLOB | wcglob.NEGATE | wcglob.NEGATEALL
KEEP_SECONDS = 60.0  # matching a job's outputs stops past this (their number, not the patterns, is unbounded)
NOTHING_KEPT = "[dcc: no output matched keepOutputs; {n} file(s) were removed]\n"
NAMES_A_FOLDER = "[dcc: keepOutputs pattern {p!r} names a folder, which is not a file: {p}/** keeps its files]\n"
MATCHED_NOTHING = "[dcc: keepOutputs pattern {p!r} matched no output that was kept]\n"

_NOT_FOUND_HINTS = ("not found", "manifest unknown", "does not exist", "pull access denied", "repository name")


class DockerRuntime:
    """Runs each job in its own hardened container."""

    def __init__(
        self,
        *,
        client: docker.DockerClient | None = None,
        network: str = "none",
        default_memory_mb: int = 2048,
        max_memory_mb: int = 16384,
        pids_limit: int = 1024,
        max_output_bytes: int = 1 << 30,
        max_log_bytes: int = 64 << 20,
        gpu_runtime: str | None = None,
        max_disk_bytes: int | None = None,
        disk_check_seconds: float = 2.0,
    ) -> None:
        self.client = client or docker.from_env(timeout=120)
        self.network = network
        # With no network, networking is also disabled in the container's config: the engine then skips its network
        # sandbox (~100 ms a start here); the container still gets a namespace of its own with only loopback, but
        # no /etc/hosts from the engine, so the job gets one naming localhost.
        self._no_network = network == "none"
        self.default_memory_mb = default_memory_mb
        self.max_memory_mb = max_memory_mb
        self.pids_limit = pids_limit
        self.max_output_bytes = max_output_bytes
        if max_log_bytes < MIN_LOG_BYTES:
            log.warning("DCC_MAX_LOG_BYTES %d is under the least a job's output may keep: %d", max_log_bytes,
                        MIN_LOG_BYTES)
        self.max_log_bytes = max(max_log_bytes, MIN_LOG_BYTES)
        self.gpu_runtime = gpu_runtime
        self.max_disk_bytes = max_disk_bytes or None
        """The most a job's files may take on the worker's disk (its outputs and its container's writable layer)."""
        self.disk_check_seconds = disk_check_seconds
        self._lock = threading.Lock()
        self._containers: dict[str, Any] = {}
        self._killed: set[str] = set()  # jobs whose container a kill was asked for
        self._kill_sent: dict[str, threading.Event] = {}  # set once the engine answered the last kill asked
        self._kill_landed: set[str] = set()  # jobs whose container a kill found running (and so stopped)

    # the container's settings ------------------------------------------------------------------------
    def create_kwargs(
        self, job: ContainerJob, outputs_dir: Path | None = None, hosts_file: Path | None = None
    ) -> dict[str, Any]:
        """Arguments of ``containers.create`` for ``job``: the job's own settings inside dcc's hardening."""
        mounts = [Mount(target=m.target, source=str(m.source.resolve()), type="bind", read_only=m.read_only)
                  for m in job.mounts]
        env = {**job.env, "DCC_JOB_ID": job.job_id}
        if job.inputs_dir is not None:
            mounts.append(Mount(target="/inputs", source=str(job.inputs_dir.resolve()), type="bind", read_only=True))
            env.update(INPUTS="/inputs", OUTPUTS="/outputs")
            if outputs_dir is not None:
                mounts.append(Mount(target="/outputs", source=str(outputs_dir.resolve()), type="bind"))
        if hosts_file is not None and self._no_network:
            mounts.append(Mount(target="/etc/hosts", source=str(hosts_file.resolve()), type="bind", read_only=True))
        memory = self._memory_mb(job)
        kwargs: dict[str, Any] = {
            "image": job.image,
            "command": job.command,
            "environment": env,
            "working_dir": job.working_dir,
            "labels": {**job.labels, "dcc.job": job.job_id},
            "mounts": mounts,
            "network_mode": self.network,
            "network_disabled": self._no_network or None,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": self.pids_limit,
            "log_config": LogConfig(type="json-file", config={
                "max-size": str(self._log_file_bytes(job)), "max-file": str(LOG_FILES), "compress": "false"}),
            "mem_limit": f"{memory}m",
            "memswap_limit": f"{memory}m",
            "detach": True,
        }
        if job.stdin_path is not None:  # attached before the start; closed once the file is sent (StdinOnce)
            kwargs.update(stdin_open=True, detach=None)
        if job.cpus:
            kwargs["nano_cpus"] = int(job.cpus * 1e9)
        if job.gpu_device_ids:
            kwargs["device_requests"] = [
                DeviceRequest(driver="nvidia", device_ids=list(job.gpu_device_ids), capabilities=[["gpu"]])
            ]
            if self.gpu_runtime:
                kwargs["runtime"] = self.gpu_runtime
        return {k: v for k, v in kwargs.items() if v is not None}

    def _memory_mb(self, job: ContainerJob) -> int:
        return min(job.memory_mb or self.default_memory_mb, self.max_memory_mb)

    def _out_of_memory(self, container: Any) -> bool:
        """Whether the kernel killed the container for its memory limit (asked only of one that died by SIGKILL)."""
        try:
            container.reload()
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False
        return bool(container.attrs.get("State", {}).get("OOMKilled"))

    def _log_file_bytes(self, job: ContainerJob) -> int:
        return max(job.max_log_bytes or self.max_log_bytes, MIN_LOG_BYTES) // LOG_FILES

    # running -----------------------------------------------------------------------------------------
    def run(self, job: ContainerJob, *, workdir: Path, stopped: Callable[[], bool] | None = None) -> ContainerOutcome:
        """Run ``job`` to its end; logs and outputs land under ``workdir``. ``stopped``: see ``ContainerRuntime``."""
        outputs = workdir / "outputs"
        outputs.mkdir()
        outputs.chmod(0o777)  # whatever user the image runs as may write its outputs
        hosts = None
        if self._no_network:
            hosts = workdir / "hosts"
            hosts.write_text(ETC_HOSTS)
            hosts.chmod(0o644)
        container = self._create(job, outputs, hosts)
        with self._lock:
            self._containers[job.job_id] = container
            self._forget_kills(job.job_id)
        # From here a kill finds the container (one before it starts is sent again after the start); one asked
        # while it was made is seen now. (``cleanup`` removes the container either way.)
        if stopped is not None and stopped():
            raise NotStarted(job.job_id)
        try:
            return self._run_created(job, container, workdir, outputs)
        except docker.errors.DockerException as exc:  # e.g. the command is not in the image
            raise _engine_error(exc, "running the job") from exc
        except requests.exceptions.RequestException as exc:
            raise JobSystemError("runtime_failed", f"Docker engine unreachable: {exc}", retryable=True) from exc

    def _run_created(self, job: ContainerJob, container: Any, workdir: Path, outputs: Path) -> ContainerOutcome:
        stdin = None
        if job.stdin_path is not None:
            stdin = self.client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
        container.start()
        started_at = time.time()
        if stdin is not None and job.stdin_path is not None:
            threading.Thread(target=_feed, args=(stdin, job.stdin_path), name=f"dcc-stdin-{job.job_id}",
                             daemon=True).start()
        with self._lock:
            killed_early = job.job_id in self._killed
        if killed_early:  # a kill that came before the start found nothing running to stop
            self._send_kill(job.job_id, container)
        timed_out = False
        exit_code: int | None
        watch = DiskWatch(_disk_roots(container, outputs), self.max_disk_bytes, on_exceed=lambda: self._kill(container),
                          interval=self.disk_check_seconds)
        with watch:
            try:
                exit_code = int(container.wait(timeout=job.max_duration)["StatusCode"])
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                timed_out = True
                self._kill(container)
                exit_code = _exit_code(container.wait(timeout=30))
            exited_at = time.time()
        with self._lock:
            sent = self._kill_sent.get(job.job_id)
        if sent is not None:  # a kill is on its way: wait for the engine's answer to know what ended the container
            sent.wait(timeout=30)
        with self._lock:  # killed only if a kill found it running: one that exited by itself keeps its result
            killed = job.job_id in self._kill_landed
        stdout, stderr = workdir / "stdout", workdir / "stderr"
        stored = self._save_logs(container, stdout, stderr)
        out_of_memory = (exit_code == 137 and not killed and not timed_out and watch.exceeded is None
                         and self._out_of_memory(container))
        cleaned = clean_outputs(outputs, self.max_output_bytes, keep=job.keep, max_name=job.max_output_name)
        # Lines are only dropped once the engine has filled LOG_FILES - 1 files: not before its store held that much
        file_bytes = self._log_file_bytes(job)
        cut = stored >= 0.99 * (LOG_FILES - 1) * file_bytes  # (a long line's pieces cost a little more)
        folders = _folders_named(outputs, job.keep)
        # one note for a set that kept nothing; else, when some were kept, one for each pattern that kept none
        idle = [p for p in cleaned.unmatched if p not in folders] if cleaned.asked else []
        if cleaned.unnamed or cleaned.unsafe or cut or cleaned.nothing_kept or folders or idle or out_of_memory \
                or cleaned.left_out or watch.exceeded is not None:
            with stderr.open("a") as f:  # say so where the job's author looks
                if watch.exceeded is not None:
                    f.write(DISK_LIMIT.format(size=watch.exceeded, limit=self.max_disk_bytes))
                if out_of_memory:
                    f.write(OUT_OF_MEMORY.format(mb=self._memory_mb(job)))
                if cleaned.nothing_kept:
                    f.write(NOTHING_KEPT.format(n=cleaned.not_asked))
                f.writelines(NAMES_A_FOLDER.format(p=p) for p in folders)
                f.writelines(MATCHED_NOTHING.format(p=p) for p in idle)
                if cut:
                    f.write(LOG_CUT.format(limit=file_bytes * LOG_FILES))
                f.writelines(f"[dcc: output {name} removed: {unnamed(job.max_output_name)}]\n"
                             for name in cleaned.unnamed)
                f.writelines(f"[dcc: output {name} removed: {UNSAFE}]\n" for name in cleaned.unsafe)
                f.writelines(LEFT_OUT.format(name=name, limit=self.max_output_bytes)
                             for name in cleaned.left_out[:MAX_NAMED])
                if len(cleaned.left_out) > MAX_NAMED:
                    f.write(f"[dcc: and {len(cleaned.left_out) - MAX_NAMED} more outputs left out]\n")
        return ContainerOutcome(
            exit_code=exit_code, timed_out=timed_out and not killed, killed=killed, started_at=started_at,
            exited_at=exited_at, stdout_path=stdout, stderr_path=stderr, outputs_dir=outputs,
            outputs_truncated=cleaned.truncated, logs_cut=cut, disk_exceeded=watch.exceeded,
        )

    def _create(self, job: ContainerJob, outputs: Path, hosts: Path | None) -> Any:
        kwargs = self.create_kwargs(job, outputs, hosts)
        try:
            try:
                return self.client.containers.create(**kwargs)
            except docker.errors.ImageNotFound:
                self._pull(job.image)
                return self.client.containers.create(**kwargs)
        except JobSystemError:
            raise
        except docker.errors.ImageNotFound as exc:
            raise JobSystemError("image_not_found", f"image {job.image!r} not found", retryable=False) from exc
        except docker.errors.DockerException as exc:  # e.g. no command, and the image has none
            raise _engine_error(exc, "creating the job's container") from exc
        except requests.exceptions.RequestException as exc:
            raise JobSystemError("runtime_failed", f"Docker engine unreachable: {exc}", retryable=True) from exc

    def _pull(self, image: str) -> None:
        log.info("pulling %s", image)
        try:
            self.client.images.pull(image)
        except docker.errors.NotFound as exc:
            raise JobSystemError("image_not_found", f"image {image!r} not found: {exc.explanation}",
                                 retryable=False) from exc
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc).lower()
            if any(hint in text for hint in _NOT_FOUND_HINTS):
                raise JobSystemError("image_not_found", f"image {image!r} not found: {exc.explanation}",
                                     retryable=False) from exc
            # retried (a registry may be back), but not counted against this worker: a name whose registry does not
            # answer fails the same on every worker, and must not put them out of service for everyone's jobs
            raise JobSystemError("image_pull_failed", f"cannot pull {image!r}: {exc.explanation}", retryable=True,
                                 machine=any(hint in text for hint in _MACHINE_PULL_HINTS)) from exc
        except requests.exceptions.RequestException as exc:
            raise JobSystemError("image_pull_failed", f"cannot pull {image!r}: {exc}", retryable=True) from exc

    def _save_logs(self, container: Any, stdout: Path, stderr: Path) -> int:
        """Both streams in one request (the SDK's ``logs`` makes two per stream): a container without a TTY has
        its output framed by the engine, each frame an 8-byte header (stream 1 or 2, size) and its bytes, one
        frame per stored line. Returns at least how many bytes the engine's store of these lines takes."""
        api = self.client.api
        reply = api.get(f"{api.base_url}/containers/{container.id}/logs", params={"stdout": 1, "stderr": 1},
                         stream=True)
        with closing(reply), stdout.open("wb") as out, stderr.open("wb") as err:
            reply.raise_for_status()
            files = {1: out, 2: err}
            buffer, pos, stored = bytearray(), 0, 0
            for chunk in reply.iter_content(chunk_size=1 << 16):
                buffer += chunk
                while len(buffer) - pos >= 8:
                    size = int.from_bytes(buffer[pos + 4:pos + 8], "big")
                    if len(buffer) - pos - 8 < size:
                        break
                    files.get(buffer[pos], out).write(buffer[pos + 8:pos + 8 + size])
                    pos += 8 + size
                    stored += _stored_size(buffer[pos - size:pos])
                del buffer[:pos]
                pos = 0
        return stored

    # control -----------------------------------------------------------------------------------------
    def kill(self, job_id: str) -> bool:
        """Kill the job's container now. False when it has none yet (nothing is remembered: ask again)."""
        with self._lock:
            container = self._containers.get(job_id)
            if container is None:
                return False
            self._killed.add(job_id)
            sent = self._kill_sent.get(job_id)
            if sent is not None and not sent.is_set():
                return True  # one is already on its way
            sent = self._kill_sent[job_id] = threading.Event()
        threading.Thread(target=self._send_kill, args=(job_id, container, sent), daemon=True).start()
        return True

    def _send_kill(self, job_id: str, container: Any, sent: threading.Event | None = None) -> None:
        landed = False
        try:
            landed = self._kill(container)
        finally:  # whatever happened, the run waiting for this answer gets it
            with self._lock:
                if landed and self._containers.get(job_id) is container:  # (not after its clean-up)
                    self._kill_landed.add(job_id)
            if sent is not None:
                sent.set()

    def _kill(self, container: Any) -> bool:
        """True if the kill found the container running; False if it was not (yet, or any more)."""
        try:
            container.kill()
        except (docker.errors.NotFound, docker.errors.APIError):
            return False
        except requests.exceptions.RequestException as exc:  # the engine is unreachable: nothing was stopped
            log.warning("could not kill container %s: %s", container.id, exc)
            return False
        return True

    def _forget_kills(self, job_id: str) -> None:
        self._killed.discard(job_id)
        self._kill_landed.discard(job_id)
        self._kill_sent.pop(job_id, None)

    def cleanup(self, job_id: str) -> None:
        """Remove the job's container."""
        with self._lock:
            container = self._containers.pop(job_id, None)
            self._forget_kills(job_id)
        if container is None:
            return
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            log.warning("could not remove the container of %s: %s", job_id, exc)

    def remove_leftovers(self, worker_id: str) -> int:
        """Remove the containers labelled with ``worker_id`` (left by a crashed earlier run of this worker)."""
        found = self.client.containers.list(all=True, filters={"label": f"dcc.worker={worker_id}"})
        for container in found:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        return len(found)

    def ping(self) -> str | None:
        """None if the engine answers, else why not."""
        try:
            self.client.ping()
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return f"docker unreachable: {type(exc).__name__}"


def _disk_roots(container: Any, outputs: Path) -> tuple[Path, ...]:
    """Where a job's files land on this machine: its outputs folder, and its container's writable layer when the
    engine's storage driver names one (overlay2's upper folder; the worker runs beside its engine)."""
    driver = ((container.attrs or {}).get("GraphDriver") or {}).get("Data") or {}
    layer = driver.get("UpperDir")
    return (outputs, Path(layer)) if isinstance(layer, str) and layer else (outputs,)


def _feed(attached: Any, path: Path) -> None:
    """Send the file to the container's attached stdin, then close it (the container sees end of file)."""
    raw = getattr(attached, "_sock", attached)
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 16):
                raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the container exited without reading it all
    finally:
        attached.close()
        if raw is not attached:
            raw.close()


def _exit_code(reply: dict[str, Any]) -> int | None:
    code = reply.get("StatusCode")
    return int(code) if code is not None else None


_MACHINE_PULL_HINTS = ("no space left on device", "read-only file system", "input/output error")
"""A pull that fails on these fails for the worker's own disk, whatever the image."""

_JOB_FAULTS = (
    "no command specified", "executable file not found", "working directory", "minimum memory limit",
    "unable to start container process: exec:",  # the command: not in the image, not executable, a folder...
    "is not a directory", "container init: mkdir",  # workingDir: a file, or under a read-only folder
    "range of cpus is from",  # more CPUs than the workers of this class have
    "are you trying to mount a directory onto a file",  # a TES input, volume or output path where the image has a file
)
"""What the engine says (with a 400, or a 500 for some of these) when the job itself cannot run: no other attempt
would do better. Other errors (an unknown runtime, a GPU hook that fails) may be the machine's."""


def _stored_size(line: bytes | bytearray) -> int:
    """Bytes the json-file driver takes for one stored line: the object around it, and the line escaped as the
    engine escapes it (a byte that is not UTF-8 becomes \\ufffd; U+2028 and U+2029 are escaped too)."""
    size = LOG_ENTRY_OVERHEAD + len(line)
    size += len(line) - len(line.translate(None, _ESCAPED_AS_2))
    size += 5 * (len(line) - len(line.translate(None, _ESCAPED_AS_6)))
    if not line.isascii():
        text = bytes(line).decode("utf-8", "replace")
        size += 5 * (text.count("\ufffd") - line.count("\ufffd".encode()))  # (at most: a bad sequence may be longer)
        size += 3 * (text.count("\u2028") + text.count("\u2029"))
    return size


def _engine_error(exc: docker.errors.DockerException, doing: str) -> JobSystemError:
    """A job that the engine refused for a fault of its own ends without retry; anything else may be the
    machine's, and is retried (and counts against the worker's health)."""
    if isinstance(exc, docker.errors.APIError) and exc.status_code in (400, 500) \
            and any(fault in str(exc.explanation or "").lower() for fault in _JOB_FAULTS):
        return JobSystemError("container_refused", f"Docker refused {doing}: {exc.explanation}", retryable=False)
    return JobSystemError("runtime_failed", f"Docker failed {doing}: {exc}", retryable=True)


UNNAMED = (f"output names must be UTF-8, without backslashes, control characters or text-direction marks, not start "
           f"with .dcc-tmp-, and at most {MAX_OUTPUT_NAME} bytes long")


def unnamed(max_name: int) -> str:
    """Why an output was removed for its name, where names may be at most ``max_name`` bytes long."""
    return UNNAMED.replace(f"at most {MAX_OUTPUT_NAME} bytes", f"at most {max_name} bytes", 1)
UNSAFE = "symbolic links, FIFOs, sockets and devices are not kept (copy the file instead)"


class Cleaned(NamedTuple):
    unnamed: list[str]
    """Files and folders removed because their names cannot be output names (shown escaped)."""
    unsafe: list[str]
    """Symbolic links, FIFOs, sockets and devices, removed without being followed."""
    asked: int = 0
    """Regular files ``keep`` matched (every file, without patterns), kept unless past the byte limit."""
    not_asked: int = 0
    """Files removed because no ``keep`` pattern matched them."""
    unmatched: tuple[str, ...] = ()
    """The ``keep`` patterns (not exclusions) that matched none of the files kept."""
    left_out: tuple[str, ...] = ()
    """Files removed because keeping them would have gone past the byte limit (``truncated``)."""

    @property
    def truncated(self) -> bool:
        """Files were left out past the byte limit."""
        return bool(self.left_out)

    @property
    def nothing_kept(self) -> bool:
        """``keep`` removed every file there was."""
        return bool(self.not_asked) and not self.asked


def clean_outputs(root: Path, max_bytes: int, *, keep: tuple[str, ...] | None = None,
                  max_name: int = MAX_OUTPUT_NAME) -> Cleaned:
    """Leave only regular files (and folders) under ``root`` whose names can be output names (valid UTF-8, no
    backslash or control characters, not storage's reserved prefix) and that ``keep``'s glob patterns match
    (all, if None), at most ``max_bytes`` in all: files not asked for do not count toward it.

    Nothing is followed: a link is removed as a link, whatever it points to. Runs after the container exited.
    """
    total = asked = not_asked = 0
    left_out: list[str] = []
    unnamed: list[str] = []
    unsafe: list[str] = []
    wanted = _Keep(keep)
    for folder, dirs, files in os.walk(root, topdown=True, followlinks=False):
        for name in sorted(dirs):
            path = os.path.join(folder, name)
            if os.path.islink(path):
                os.unlink(path)
                unsafe.append(_shown(root, path))
                dirs.remove(name)
            elif not _nameable(os.path.relpath(path, root), max_name):
                remove_tree(path)  # (at any depth; nothing followed)
                unnamed.append(_shown(root, path))
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            info = os.lstat(path)
            # links, FIFOs, sockets and devices go. A hard link stays: link(2) never crosses mount points, so one
            # in the outputs folder (a bind mount of its own) can only name another file the job wrote there
            if not stat.S_ISREG(info.st_mode):
                os.unlink(path)
                unsafe.append(_shown(root, path))
                continue
            if info.st_mode & (stat.S_ISUID | stat.S_ISGID):  # a job's file runs as nobody else
                try:
                    os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
                except PermissionError:  # (a worker that is not root, a file of the job's root): not kept
                    os.unlink(path)
                    unsafe.append(_shown(root, path))
                    continue
            name = os.path.relpath(path, root)
            if not _nameable(name, max_name):
                os.unlink(path)
                unnamed.append(_shown(root, path))
                continue
            if not wanted(name):
                os.unlink(path)
                not_asked += 1
                continue
            asked += 1
            if total + info.st_size > max_bytes:
                os.unlink(path)
                left_out.append(_shown(root, path))
                continue
            total += info.st_size
    return Cleaned(unnamed, unsafe, asked, not_asked, tuple(wanted.unseen), tuple(left_out))


class _Keep:
    """Whether ``keep``'s patterns ask for an output name (all are, without patterns), within KEEP_SECONDS, and
    which patterns (not exclusions) have matched none of the names asked for yet."""

    def __init__(self, keep: tuple[str, ...] | None) -> None:
        self.matcher = _keep_matcher(keep)
        # each pattern alone, tried on the names asked for until it matches one (so at most once per name)
        self.unseen = {p: _keep_matcher((p,)) for p in keep or () if not p.startswith("!")}
        self.deadline = time.monotonic() + KEEP_SECONDS

    def __call__(self, name: str) -> bool:
        if self.matcher is None:
            return True
        if time.monotonic() > self.deadline:
            raise JobSystemError(ErrorCode.RUNTIME_FAILED, f"keepOutputs: matching the job's outputs took over "
                                 f"{KEEP_SECONDS:.0f} s; fewer files or simpler patterns", retryable=False)
        if not self.matcher.match(name):
            return False
        for pattern in [p for p, match in self.unseen.items() if match.match(name)]:
            del self.unseen[pattern]
        return True


def _folders_named(root: Path, keep: tuple[str, ...] | None) -> list[str]:
    """The plain names (no wildcard) among ``keep`` that are folders the job wrote: a common slip for name/**."""
    return [p for p in keep or () if not p.startswith("!") and not any(c in p for c in "*?[\\")
            and (root / p).is_dir() and not (root / p).is_symlink()]


def _keep_matcher(keep: tuple[str, ...] | None) -> Any:
    if keep is None:
        return None
    try:
        return wcglob.compile(list(keep), flags=KEEP_FLAGS)
    except Exception as exc:  # (wcmatch's own errors: the job's patterns, not the worker, are at fault)
        raise JobSystemError(ErrorCode.RUNTIME_FAILED, f"keepOutputs: {exc}", retryable=False) from exc


def _nameable(name: str, max_name: int = MAX_OUTPUT_NAME) -> bool:
    try:
        check_relative_path(name, max_length=max_name)
    except ValueError:
        return False
    return len(name.encode()) <= max_name  # (characters were checked; UTF-8 may take more bytes)


def _shown(root: Path, path: str) -> str:
    """The name as the job wrote it, with bytes that are not UTF-8 and control characters escaped."""
    text = os.fsencode(os.path.relpath(path, root)).decode("utf-8", "backslashreplace")  # not UTF-8: \xNN
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
