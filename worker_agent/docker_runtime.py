"""The container runtime on the Docker SDK: hardened job containers, inputs in and outputs out via the API.

Inputs and outputs are copied through the Docker API (``put_archive``/``get_archive``) rather than bind
mounts, so the job never sees a host path, links it leaves in ``/outputs`` are dropped, and the engine may
be remote.
"""

from __future__ import annotations

import io
import logging
import posixpath
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest

from dcc.errors import JobSystemError
from worker_agent.runtime import ContainerJob, ContainerOutcome

log = logging.getLogger("dcc.worker")

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
        gpu_runtime: str | None = None,
    ) -> None:
        self.client = client or docker.from_env(timeout=120)
        self.network = network
        self.default_memory_mb = default_memory_mb
        self.max_memory_mb = max_memory_mb
        self.pids_limit = pids_limit
        self.max_output_bytes = max_output_bytes
        self.gpu_runtime = gpu_runtime
        self._lock = threading.Lock()
        self._containers: dict[str, Any] = {}
        self._killed: set[str] = set()

    # the container's settings ------------------------------------------------------------------------
    def create_kwargs(self, job: ContainerJob) -> dict[str, Any]:
        """Arguments of ``containers.create`` for ``job``: the job's own settings inside dcc's hardening."""
        memory = min(job.memory_mb or self.default_memory_mb, self.max_memory_mb)
        kwargs: dict[str, Any] = {
            "image": job.image,
            "command": job.command,
            "environment": {**job.env, "DCC_JOB_ID": job.job_id, "INPUTS": "/inputs", "OUTPUTS": "/outputs"},
            "working_dir": job.working_dir,
            "labels": {**job.labels, "dcc.job": job.job_id},
            "network_mode": self.network,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": self.pids_limit,
            "mem_limit": f"{memory}m",
            "memswap_limit": f"{memory}m",
            "detach": True,
        }
        if job.cpus:
            kwargs["nano_cpus"] = int(job.cpus * 1e9)
        if job.gpu_device_ids:
            kwargs["device_requests"] = [
                DeviceRequest(driver="nvidia", device_ids=list(job.gpu_device_ids), capabilities=[["gpu"]])
            ]
            if self.gpu_runtime:
                kwargs["runtime"] = self.gpu_runtime
        return {k: v for k, v in kwargs.items() if v is not None}

    # running -----------------------------------------------------------------------------------------
    def run(self, job: ContainerJob, *, workdir: Path) -> ContainerOutcome:
        """Run ``job`` to its end; logs and outputs land under ``workdir``."""
        container = self._create(job)
        with self._lock:
            self._containers[job.job_id] = container
            self._killed.discard(job.job_id)
        try:
            return self._run_created(job, container, workdir)
        except docker.errors.DockerException as exc:
            raise JobSystemError("runtime_failed", f"Docker failed running the job: {exc}", retryable=True) from exc
        except requests.exceptions.RequestException as exc:
            raise JobSystemError("runtime_failed", f"Docker engine unreachable: {exc}", retryable=True) from exc

    def _run_created(self, job: ContainerJob, container: Any, workdir: Path) -> ContainerOutcome:
        container.put_archive("/", _inputs_tar(job.inputs_dir))
        container.start()
        started_at = time.time()
        with self._lock:
            killed_early = job.job_id in self._killed
        if killed_early:  # a kill that came before the start found nothing running to stop
            self._kill(container)
        timed_out = False
        exit_code: int | None
        try:
            exit_code = int(container.wait(timeout=job.max_duration)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            self._kill(container)
            exit_code = _exit_code(container.wait(timeout=30))
        exited_at = time.time()
        with self._lock:
            killed = job.job_id in self._killed
        stdout, stderr = workdir / "stdout", workdir / "stderr"
        self._save_logs(container, stdout, stderr)
        outputs = workdir / "outputs"
        outputs.mkdir()
        truncated = self._save_outputs(container, outputs, workdir)
        return ContainerOutcome(
            exit_code=exit_code, timed_out=timed_out and not killed, killed=killed, started_at=started_at,
            exited_at=exited_at, stdout_path=stdout, stderr_path=stderr, outputs_dir=outputs,
            outputs_truncated=truncated,
        )

    def _create(self, job: ContainerJob) -> Any:
        kwargs = self.create_kwargs(job)
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
        except docker.errors.DockerException as exc:
            raise JobSystemError("runtime_failed", f"cannot create the container: {exc}", retryable=True) from exc
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
            raise JobSystemError("image_pull_failed", f"cannot pull {image!r}: {exc.explanation}",
                                 retryable=True) from exc
        except requests.exceptions.RequestException as exc:
            raise JobSystemError("image_pull_failed", f"cannot pull {image!r}: {exc}", retryable=True) from exc

    def _save_logs(self, container: Any, stdout: Path, stderr: Path) -> None:
        for path, which in ((stdout, {"stdout": True, "stderr": False}), (stderr, {"stdout": False, "stderr": True})):
            with path.open("wb") as f:
                for chunk in container.logs(stream=True, **which):
                    f.write(chunk)

    def _save_outputs(self, container: Any, dest: Path, workdir: Path) -> bool:
        """Extract the regular files of /outputs into ``dest``; True if some were left out for size."""
        try:
            stream, _ = container.get_archive("/outputs")
        except docker.errors.NotFound:
            return False  # the job removed /outputs
        with tempfile.TemporaryFile(dir=workdir) as spool:
            for chunk in stream:
                spool.write(chunk)
            spool.seek(0)
            return _extract_outputs(spool, dest, self.max_output_bytes)

    # control -----------------------------------------------------------------------------------------
    def kill(self, job_id: str) -> bool:
        """Kill the job's container now."""
        with self._lock:
            container = self._containers.get(job_id)
            if container is None:
                return False
            self._killed.add(job_id)
        threading.Thread(target=self._kill, args=(container,), daemon=True).start()
        return True

    def _kill(self, container: Any) -> None:
        try:
            container.kill()
        except (docker.errors.NotFound, docker.errors.APIError):
            pass  # it already exited

    def cleanup(self, job_id: str) -> None:
        """Remove the job's container."""
        with self._lock:
            container = self._containers.pop(job_id, None)
            self._killed.discard(job_id)
        if container is None:
            return
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            log.warning("could not remove the container of %s: %s", job_id, exc)

    def ping(self) -> str | None:
        """None if the engine answers, else why not."""
        try:
            self.client.ping()
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return f"docker unreachable: {type(exc).__name__}"


def _exit_code(reply: dict[str, Any]) -> int | None:
    code = reply.get("StatusCode")
    return int(code) if code is not None else None


def _inputs_tar(inputs_dir: Path) -> bytes:
    """A tar of ``inputs/`` (the job's input files, links skipped) and an empty ``outputs/``, both writable."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("inputs", "outputs"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o777, int(time.time())
            tar.addfile(info)
        for path in sorted(inputs_dir.rglob("*")):
            if path.is_symlink():
                continue
            rel = "inputs/" + path.relative_to(inputs_dir).as_posix()
            info = tarfile.TarInfo(rel)
            info.mtime = int(time.time())
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o777
                tar.addfile(info)
            elif path.is_file():
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


def _extract_outputs(fileobj: Any, dest: Path, max_bytes: int) -> bool:
    """Write the regular files of an ``outputs/`` tar under ``dest``; links, devices and escapes are skipped."""
    total = 0
    truncated = False
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            name = posixpath.normpath(member.name)
            parts = name.split("/")
            if not member.isfile() or parts[0] != "outputs" or len(parts) < 2 or ".." in parts or name.startswith("/"):
                continue
            if total + member.size > max_bytes:
                truncated = True
                continue
            target = dest.joinpath(*parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with target.open("wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            total += member.size
    return truncated
