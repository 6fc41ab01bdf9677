"""Run a worker: ``python -m worker_agent`` (or ``dcc worker``), configured from the environment.

    REDIS_URL, DCC_STORAGE           where jobs and their data live (see dcc.settings)
    DCC_WORKER_ID                    default: with DCC_IMDS=true (set on EC2 workers) the instance id from
                                     instance metadata (IMDSv2), else <hostname>-<random>
    DCC_WORKER_SLOTS                 CPU jobs at once (default: CPUs - GPUs, at least 1)
    DCC_CPUS, DCC_GPUS               override the detected CPUs and GPUs (nvidia-smi); GPU jobs = GPUs
    DISABLE_NVIDIA_RUNTIME=true      serve the gpu queue without GPU devices (DCC_GPUS slots), for testing
    DCC_GPU_RUNTIME=nvidia           also run GPU jobs with this Docker runtime (the legacy nvidia runtime)
    DCC_WORKER_CLASS                 the group served, shown at GET /v1/workers (cpu or gpu on AWS; default local);
                                     a gpu worker that finds no GPU looks again every 5 s, then exits non-zero
    DCC_GPU_WAIT_SECONDS             how long it looks (default 300: a driver still loading at boot)
    DCC_WORK_DIR                     scratch space for jobs (default /tmp/dcc-worker)

SIGTERM or SIGINT: stop claiming, let running jobs finish within DCC_GRACE_SECONDS, hand back the rest.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from pathlib import Path

from dcc.bootstrap import build_storage, build_store
from dcc.jobs import JOB_ID_PATTERN
from dcc.settings import Settings
from dcc.storage import Progress
from dcc.tes import parse_locations
from worker_agent.agent import Worker, WorkerConfig, default_worker_id
from worker_agent.files import DirInUse, hold_dir, remove_tree, stable_id
from worker_agent.resources import ResourceError, detect, detect_gpu_worker, ec2_instance_id, positive_int, truthy

log = logging.getLogger("dcc.worker")


def build_worker(settings: Settings, *, worker_id: str | None = None, slots: int | None = None,
                 workdir: Path | None = None) -> Worker:
    """A worker wired to the Redis, storage and Docker engine the settings (and DOCKER_HOST) name."""
    from dcc.url_inputs import fetch_url
    from worker_agent.docker_runtime import DockerRuntime

    def fetch(url: str, dest: Path, *, progress: Progress | None = None) -> int:
        return fetch_url(url, dest, allowed_buckets=settings.allowed_buckets,
                         allow_private=settings.allow_private_urls, max_bytes=settings.max_output_bytes,
                         progress=progress)

    worker_class = os.environ.get("DCC_WORKER_CLASS", "").strip() or "local"
    try:
        if worker_class == "gpu":
            raw = (os.environ.get("DCC_GPU_WAIT_SECONDS") or "").strip() or "300"
            try:
                wait = float(raw)
            except ValueError:
                raise ResourceError(f"DCC_GPU_WAIT_SECONDS must be a number of seconds, not {raw!r}") from None
            machine = detect_gpu_worker(wait_seconds=wait)
        else:
            machine = detect()
        cpu_slots = slots or positive_int(os.environ, "DCC_WORKER_SLOTS") or machine.cpu_slots
    except ResourceError as exc:
        raise SystemExit(f"worker: {exc}") from None
    runtime = DockerRuntime(
        network=settings.job_network,
        default_memory_mb=settings.default_memory_mb,
        max_memory_mb=settings.max_memory_mb,
        pids_limit=settings.pids_limit,
        max_output_bytes=settings.max_output_bytes,
        max_log_bytes=settings.max_log_bytes,
        max_disk_bytes=settings.max_job_disk_bytes,
        # the legacy way to GPUs (nvidia-container-runtime as a Docker runtime) beside the device requests
        gpu_runtime=os.environ.get("DCC_GPU_RUNTIME", "").strip() or None,
    )
    gpu_ids = tuple(g.index for g in machine.gpus)
    disable_nvidia = truthy(os.environ.get("DISABLE_NVIDIA_RUNTIME"))
    workdir = workdir or Path(os.environ.get("DCC_WORK_DIR", "/tmp/dcc-worker"))
    try:  # one worker per work dir
        held = hold_dir(workdir, "worker.lock")
    except DirInUse as exc:
        raise SystemExit(f"{workdir} is the work dir of another running worker (pid {exc.owner}): give each "
                         "worker its own DCC_WORK_DIR") from None
    # an id kept across restarts (the work dir's, without one given): what a killed run left is found again
    worker_id = worker_id or os.environ.get("DCC_WORKER_ID") or _instance_id() \
        or stable_id(workdir / "worker-id", default_worker_id)
    for left in workdir.iterdir():  # a killed run's job folders, and only those (its containers go at start)
        if _JOB_FOLDER.match(left.name) and left.is_dir() and not left.is_symlink():
            try:
                remove_tree(left)
            except OSError as exc:  # (e.g. files a job's root user made, and this worker is not root)
                log.warning("cannot remove %s, left by an earlier run: %s", left, exc)
    config = WorkerConfig(
        worker_id=worker_id,
        slots={"cpu": cpu_slots, **({"gpu": len(gpu_ids)} if gpu_ids else {})},
        gpu_device_ids=gpu_ids,
        disable_nvidia_runtime=disable_nvidia,
        gpus=machine.gpus,
        worker_class=worker_class,
        workdir=workdir,
        max_attempts=settings.max_attempts,
        append_log_bytes=settings.append_log_bytes,
        max_inline_output_bytes=settings.max_inline_output_bytes,
        grace_seconds=float(os.environ.get("DCC_GRACE_SECONDS", "60")),
        tes_locations=parse_locations(settings.tes_locations),
        max_output_bytes=settings.max_output_bytes,
        max_job_disk_bytes=settings.max_job_disk_bytes,
    )
    store = build_store(settings)
    notify = None
    endpoint = os.environ.get("DCC_WEBSOCKET_ENDPOINT")
    if endpoint:  # on AWS: push state changes to the WebSocket API's subscribers
        import boto3

        from dcc.push import WebsocketPusher

        notify = WebsocketPusher(store, boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)).push
    worker = Worker(store=store, storage=build_storage(settings.storage_url), runtime=runtime, config=config,
                    fetch=fetch, notify=notify)
    worker.held = held  # (the work dir's lock lives as long as the worker)
    return worker


_JOB_FOLDER = re.compile(JOB_ID_PATTERN.removesuffix("$") + r"-[0-9]+$")
"""A job attempt's folder in the work dir: ``<job id>-<attempt>``."""


def _instance_id() -> str | None:
    """The EC2 instance id, asked of instance metadata only where the worker bootstrap said we are on EC2."""
    if os.environ.get("DCC_IMDS", "").lower() in ("1", "true", "yes"):
        return ec2_instance_id()
    return None


def main() -> None:
    """Run one worker until SIGTERM/SIGINT."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker = build_worker(Settings.from_env())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    worker.start()
    done.wait()
    worker.stop()


if __name__ == "__main__":
    main()
