"""What a worker machine offers: its CPUs and GPUs, detected at start-up, and the job slots that follow.

GPUs come from ``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``;
no driver (no binary, or an error from it) means no GPUs, never a crash. ``DCC_GPUS`` and ``DCC_CPUS``
override detection (``DCC_GPUS=0`` turns GPUs off; ``DCC_GPUS=2`` takes the first two).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("dcc.worker")

QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it."""

    index: str
    uuid: str
    name: str
    memory_mib: int


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


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """GPUs from nvidia-smi's CSV query output; raises ValueError on output it does not understand."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 4:
            raise ValueError(f"unexpected nvidia-smi row: {row!r}")
        index, uuid, name, memory = (c.strip() for c in row)
        if not index.isdigit():
            raise ValueError(f"unexpected nvidia-smi row: {row!r}")
        gpus.append(Gpu(index=index, uuid=uuid, name=name, memory_mib=int(float(memory))))
    return tuple(gpus)


def run_nvidia_smi() -> str | None:
    """nvidia-smi's query output, or None when there is no driver or it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *QUERY[1:]], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi failed: %s; no GPUs", exc)
        return None
    if done.returncode != 0:
        log.warning("nvidia-smi exited %d: %s; no GPUs", done.returncode, done.stderr.strip() or done.stdout.strip())
        return None
    return done.stdout


def detect(*, environ: dict[str, str] | None = None, query: Callable[[], str | None] = run_nvidia_smi,
           cpu_count: Callable[[], int | None] = os.cpu_count) -> Resources:
    """This machine's resources: detected, then overridden by ``DCC_CPUS`` / ``DCC_GPUS``."""
    env = os.environ if environ is None else environ
    cpus = int(env.get("DCC_CPUS") or cpu_count() or 1)
    want = env.get("DCC_GPUS")
    if want is not None and int(want) == 0:
        return Resources(cpus=cpus, gpus=())
    output = query()
    try:
        gpus = parse_nvidia_smi(output) if output else ()
    except ValueError as exc:
        log.warning("%s; no GPUs", exc)
        gpus = ()
    if want is not None:
        gpus = gpus[: int(want)]
    return Resources(cpus=cpus, gpus=gpus)


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
