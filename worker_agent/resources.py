"""What a worker machine offers: its CPUs and GPUs, detected at start-up, and the job slots that follow.

GPUs come from ``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``;
no driver (no binary, or an error from it) means no GPUs, never a crash; a row nvidia-smi prints that is not a GPU
(a warning) is skipped, and a field it cannot report (``[N/A]``) does not hide the GPU. The environment overrides
detection:

- ``DCC_CPUS=N``: the CPUs (a positive whole number);
- ``DCC_GPUS=0`` turns GPUs off; ``DCC_GPUS=N`` takes the first N detected; ``DCC_GPUS=1,3`` (indexes or UUIDs)
  takes those; asking for GPUs nvidia-smi did not find is an error at start-up, except with
  ``DISABLE_NVIDIA_RUNTIME=true``, where the GPUs are only slots (no device reaches a container).

A malformed value stops the worker with a message naming the variable (``ResourceError``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("dcc.worker")

QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]


class ResourceError(ValueError):
    """An override in the environment that cannot be honoured (malformed, or GPUs this machine does not have)."""


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it (``memory_mib`` None where it said ``[N/A]``)."""

    index: str
    uuid: str
    name: str
    memory_mib: int | None


@dataclass(frozen=True)
class Resources:
    """A machine's CPUs and GPUs, and the job slots they give."""

    cpus: int
    gpus: tuple[Gpu, ...]

    @property
    def gpu_slots(self) -> int:
        """GPU jobs at once: one per GPU."""
        return len(self.gpus)

    @property
    def cpu_slots(self) -> int:
        """CPU jobs at once: the CPUs not feeding a GPU job, at least one."""
        return max(1, self.cpus - len(self.gpus))


def truthy(value: str | None) -> bool:
    """An environment flag: 1, true, yes or on (any case, spaces ignored)."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """GPUs from nvidia-smi's CSV query output. Lines that are not GPU rows (warnings nvidia-smi prints among them)
    are skipped with a warning; raises ValueError when no line is one (an error message instead of rows)."""
    gpus = []
    skipped = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row or not "".join(row).strip():
            continue
        cells = [c.strip() for c in row]
        if not _gpu_row(cells):
            skipped.append(", ".join(cells))
            continue
        index, uuid, name, memory = cells
        gpus.append(Gpu(index=index, uuid=uuid, name=name, memory_mib=_mib(memory)))
    if skipped:
        if not gpus:
            raise ValueError(f"unexpected nvidia-smi output: {skipped[0][:200]!r}")
        log.warning("nvidia-smi: skipped %d line(s) that are not GPUs, e.g. %r", len(skipped), skipped[0][:200])
    return tuple(gpus)


def _gpu_row(cells: list[str]) -> bool:
    """Whether the cells are index, uuid, name, memory of a GPU (an ASCII index; a GPU- UUID)."""
    return len(cells) == 4 and cells[0].isascii() and cells[0].isdigit() and cells[1].startswith("GPU-")


def _mib(memory: str) -> int | None:
    """``memory.total`` in MiB (``40960``, or ``40960 MiB`` without ``nounits``); None for ``[N/A]`` and the like."""
    try:
        return int(float(memory.removesuffix("MiB").strip()))
    except ValueError:
        return None


def run_nvidia_smi() -> str | None:
    """nvidia-smi's query output, or None when there is no driver or it fails without listing a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:  # (bytes it cannot decode are replaced: a localized message must not stop the worker)
        done = subprocess.run([exe, *QUERY[1:]], capture_output=True, encoding="utf-8", errors="replace",
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi failed: %s; no GPUs", exc)
        return None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[:500]
        if not any(_gpu_row([c.strip() for c in line.split(",")]) for line in done.stdout.splitlines()):
            log.warning("nvidia-smi exited %d: %s; no GPUs", done.returncode, said)
            return None
        # (e.g. one GPU fallen off the bus: the others are still listed, and usable)
        log.warning("nvidia-smi exited %d: %s; using the GPUs it listed", done.returncode, said)
    return done.stdout


def detect(*, environ: Mapping[str, str] | None = None, query: Callable[[], str | None] = run_nvidia_smi,
           cpu_count: Callable[[], int | None] = os.cpu_count) -> Resources:
    """This machine's resources: detected, then overridden by ``DCC_CPUS`` / ``DCC_GPUS`` (see the module)."""
    env = os.environ if environ is None else environ
    cpus = positive_int(env, "DCC_CPUS") or cpu_count() or 1
    want = (env.get("DCC_GPUS") or "").strip()
    if want == "0":
        return Resources(cpus=cpus, gpus=())
    output = query()
    try:
        found = parse_nvidia_smi(output) if output else ()
    except ValueError as exc:
        log.warning("%s; no GPUs", exc)
        found = ()
    if not want:
        return Resources(cpus=cpus, gpus=found)
    slots_only = truthy(env.get("DISABLE_NVIDIA_RUNTIME"))
    if want.isascii() and want.isdigit():
        count = int(want)
        if count <= len(found):
            return Resources(cpus=cpus, gpus=found[:count])
        names = [str(i) for i in range(count)]
    else:
        names = [n.strip() for n in want.split(",")]
        named = all(n.isascii() and (n.isdigit() or n.startswith("GPU-")) for n in names)
        if not named or len(set(names)) != len(names):
            raise ResourceError(f"DCC_GPUS must be a number of GPUs (0 turns them off) or a comma-separated list of "
                                f"GPU indexes or UUIDs, each once, not {want!r}")
        chosen = [g for n in names for g in found if n in (g.index, g.uuid)]
        if len({g.index for g in chosen}) != len(chosen):  # (one GPU named by its index and by its UUID)
            raise ResourceError(f"DCC_GPUS={want} names a GPU twice")
        if len(chosen) == len(names):
            return Resources(cpus=cpus, gpus=tuple(chosen))
    if not slots_only:
        have = ", ".join(g.index for g in found) or "none"
        raise ResourceError(f"DCC_GPUS={want}: nvidia-smi found no such GPUs (it lists: {have}); with "
                            "DISABLE_NVIDIA_RUNTIME=true, DCC_GPUS gives GPU slots without devices")
    return Resources(cpus=cpus, gpus=tuple(Gpu(index=n, uuid="", name="(slot only: DISABLE_NVIDIA_RUNTIME)",
                                               memory_mib=None) for n in names))


def detect_gpu_worker(*, wait_seconds: float, every: float = 5.0, environ: Mapping[str, str] | None = None,
                      query: Callable[[], str | None] = run_nvidia_smi,
                      cpu_count: Callable[[], int | None] = os.cpu_count, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> Resources:
    """``detect`` for a worker of the gpu class, which serves nothing without a GPU: while it finds none (a driver
    still loading at boot), it looks again every ``every`` seconds for up to ``wait_seconds``, then gives up with a
    ``ResourceError``, so the worker exits and the instance, sending no health, is replaced by the scaler instead
    of idling in the GPU group as a CPU worker while GPU jobs wait."""
    env = os.environ if environ is None else environ
    if (env.get("DCC_GPUS") or "").strip() == "0":
        raise ResourceError("DCC_GPUS=0 turns GPUs off, but DCC_WORKER_CLASS=gpu is a worker for GPU jobs")
    deadline = clock() + wait_seconds
    while True:
        found = detect(environ=env, query=query, cpu_count=cpu_count)
        if found.gpus:
            return found
        if clock() >= deadline:
            raise ResourceError(f"DCC_WORKER_CLASS=gpu, but nvidia-smi found no GPU within {wait_seconds:g} s "
                                "(DCC_GPU_WAIT_SECONDS): no driver, or a GPU fallen off the bus")
        log.warning("no GPU found yet (a driver still loading?): looking again in %g s", every)
        sleep(every)


def positive_int(env: Mapping[str, str], name: str) -> int | None:
    """The whole number ``env[name]`` (at least 1), or None when it is unset or empty."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ResourceError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


IMDS_URL = "http://169.254.169.254"


def ec2_instance_id(*, base_url: str | None = None, timeout: float = 1.0) -> str | None:
    """This EC2 instance's id from instance metadata (IMDSv2: a session token first), or None off EC2."""
    import httpx

    base = base_url or os.environ.get("DCC_IMDS_URL") or IMDS_URL
    try:
        with httpx.Client(timeout=timeout) as client:
            token = client.put(f"{base}/latest/api/token",
                               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
            token.raise_for_status()
            reply = client.get(f"{base}/latest/meta-data/instance-id",
                               headers={"X-aws-ec2-metadata-token": token.text})
            reply.raise_for_status()
    except httpx.HTTPError:
        return None
    instance = reply.text.strip()
    return instance if instance.startswith("i-") else None
