"""The container runtime port: run one job's container to its end and hand back what it left.

``worker_agent.docker_runtime.DockerRuntime`` implements it with the Docker SDK. The worker calls
``run`` from one thread per job and ``kill`` from any thread; an implementation must be thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dcc.jobs import MAX_OUTPUT_NAME


class NotStarted(Exception):
    """``run`` was told to stop (its ``stopped`` said so) before the job's container started."""


@dataclass(frozen=True)
class BindMount:
    """A host path shown in the container (GA4GH TES tasks: inputs, volumes and output folders)."""

    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class ContainerJob:
    """What to run: everything the runtime needs, already validated and resolved."""

    job_id: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    working_dir: str | None
    inputs_dir: Path | None
    """Local directory whose files (subfolders allowed) appear under ``/inputs`` in the container, with an
    ``/outputs`` folder beside it; None for a job that names its own ``mounts`` instead."""
    max_duration: float
    """Seconds from container start; past it the container is killed and the outcome is ``timed_out``."""
    cpus: float | None = None
    memory_mb: int | None = None
    gpu_device_ids: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    mounts: tuple[BindMount, ...] = ()
    stdin_path: Path | None = None
    """A file whose bytes are the container's standard input."""
    max_log_bytes: int | None = None
    """What the engine keeps of the output, if not the runtime's own limit."""
    keep: tuple[str, ...] | None = None
    """Glob patterns of the outputs to keep (``dcc.jobs.JobSpec.keepOutputs``); None keeps every file."""
    max_output_name: int = MAX_OUTPUT_NAME
    """The longest output name (bytes) kept: less than dcc's limit where the storage's keys cannot hold it."""


@dataclass(frozen=True)
class ContainerOutcome:
    """How the container ended. ``exit_code`` is None only when it never produced one (killed)."""

    exit_code: int | None
    timed_out: bool
    killed: bool
    """True when ``kill`` stopped it (a cancel), as opposed to the time limit."""
    started_at: float
    exited_at: float
    stdout_path: Path
    stderr_path: Path
    outputs_dir: Path
    """Local directory holding the regular files the job left under ``/outputs`` (links dropped)."""
    outputs_truncated: bool = False
    """True when outputs past the size limit were left out."""
    logs_cut: bool = False
    """True when the output reached the log limit, so its start may be missing from the logs."""
    disk_exceeded: int | None = None
    """The bytes the job's files had reached when they passed the runtime's disk limit (it was then killed)."""


class ContainerRuntime(Protocol):
    """Runs job containers. Raises ``dcc.errors.JobSystemError`` for anything that is not the job's fault."""

    def run(self, job: ContainerJob, *, workdir: Path, stopped: Callable[[], bool] | None = None) -> ContainerOutcome:
        """Run ``job`` to its end, writing logs and outputs under ``workdir`` (which exists and is empty).

        Blocks until the container exits, is killed by ``kill``, or reaches ``max_duration``. Removing the
        container is left to ``cleanup`` so that it stays off the path to the result. ``stopped`` is asked once
        the container exists and ``kill`` can find it: if it says so, the container is not started
        (``NotStarted``), so a stop asked while the container was being made is not lost.
        """

    def kill(self, job_id: str) -> bool:
        """Stop the running container of ``job_id`` now; False if none runs. Thread-safe, returns at once."""

    def cleanup(self, job_id: str) -> None:
        """Remove what ``run`` left for ``job_id`` (the container); safe to call twice."""

    def remove_leftovers(self, worker_id: str) -> int:
        """Remove containers an earlier run of this worker left (it crashed); returns how many."""

    def ping(self) -> str | None:
        """None when the engine answers, else a short reason it does not."""
