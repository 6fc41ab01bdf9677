"""Deployment settings, read from the environment once. An explicit argument always wins."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Environment variable names, in one place.
REDIS_URL = "REDIS_URL"
STORAGE_URL = "DCC_STORAGE"  # s3://bucket/prefix or a local directory
DATA_DIR = "DCC_DATA_DIR"
DISABLE_WORKER = "DISABLE_WORKER"


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


def _env_int(name: str, default: int) -> int:
    value = _env_optional_int(name)
    return default if value is None else value


def _env_optional_int(name: str) -> int | None:
    value = _env_number(name, int, "a whole number")
    return None if value is None else int(value)


def _env_float(name: str, default: float) -> float:
    value = _env_number(name, float, "a number")
    return default if value is None else value


def _env_number(name: str, parse: Callable[[str], float], what: str) -> float | None:
    """``os.environ[name]`` parsed, finite and 0 or more; None when unset or blank. A malformed value is a
    ``ValueError`` naming the variable."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = parse(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, not {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be {what}, finite and 0 or more, not {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a deployment (API, worker and local mode share it)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    storage_url: str = str(Path.home() / ".dcc" / "data" / "storage")
    key_prefix: str = "{dcc}"
    """Every Redis key starts with this; the braces make it one hash tag (one cluster slot)."""
    default_max_duration: int = 600
    max_duration: int = 24 * 3600
    max_inline_bytes: int = 5 * 1024 * 1024
    max_spec_bytes: int = 256 * 1024
    """The job description without inline input contents (command, env, meta, input names and URLs)."""
    lease_seconds: float = 30.0
    max_attempts: int = 3
    retention_seconds: int = 7 * 24 * 3600
    max_memory_mb: int = 16384
    default_memory_mb: int = 2048
    pids_limit: int = 1024
    job_network: str = "none"
    allowed_buckets: frozenset[str] = field(default_factory=frozenset)
    allow_private_urls: bool = False
    max_output_bytes: int = 1 << 30
    max_job_disk_bytes: int = 20 << 30
    """The most a running job's files may take on its worker's disk (outputs and the container's writable layer);
    past it the job is stopped. 0: no limit."""
    append_log_bytes: int = 1 << 20
    max_log_bytes: int = 64 << 20
    """What a worker keeps of a job's output (stdout and stderr together); past it the earliest goes, and stderr
    ends with a note saying so."""
    redis_socket_timeout: float = 5.0
    disable_worker: bool = False
    max_fast_inline_bytes: int = 1024 * 1024
    fast_result_seconds: int = 3600
    wait_seconds: float = 25.0
    """How long a fast (or ``wait``) submit holds the reply before answering 202: under API Gateway's 29 s."""
    max_inline_output_bytes: int = 1024 * 1024
    smoke_image: str = "busybox:latest"
    max_gpus_per_worker: int | None = None
    """The most GPUs any worker of the deployment has: a job asking for more is refused at submit (the stack
    sets it from the GPU instance type; local mode takes its own worker's). A live worker reporting more raises it;
    unset, the live workers' most is the limit (none registered: no limit but 64)."""
    tes_locations: tuple[str, ...] = ()
    """GA4GH TES: where tasks may read inputs and write outputs, as ``s3://bucket/prefix/`` or ``file:///dir/``."""
    organization_url: str | None = None
    """GA4GH service-info ``organization.url`` (default: the API's own address)."""

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from ``DCC_*`` environment variables (and ``REDIS_URL``), then ``overrides``."""
        base = cls()
        buckets = os.environ.get("DCC_ALLOWED_BUCKETS", "")
        values: dict[str, Any] = {
            "redis_url": os.environ.get(REDIS_URL, base.redis_url),
            "storage_url": os.environ.get(STORAGE_URL, base.storage_url),
            "key_prefix": os.environ.get("DCC_KEY_PREFIX", base.key_prefix),
            "default_max_duration": _env_int("DCC_DEFAULT_MAX_DURATION", base.default_max_duration),
            "max_duration": _env_int("DCC_MAX_DURATION", base.max_duration),
            "max_inline_bytes": _env_int("DCC_MAX_INLINE_BYTES", base.max_inline_bytes),
            "max_spec_bytes": _env_int("DCC_MAX_SPEC_BYTES", base.max_spec_bytes),
            "lease_seconds": _env_float("DCC_LEASE_SECONDS", base.lease_seconds),
            "max_attempts": _env_int("DCC_MAX_ATTEMPTS", base.max_attempts),
            "retention_seconds": _env_int("DCC_RETENTION_SECONDS", base.retention_seconds),
            "max_memory_mb": _env_int("DCC_MAX_MEMORY_MB", base.max_memory_mb),
            "default_memory_mb": _env_int("DCC_DEFAULT_MEMORY_MB", base.default_memory_mb),
            "pids_limit": _env_int("DCC_PIDS_LIMIT", base.pids_limit),
            "job_network": os.environ.get("DCC_JOB_NETWORK", base.job_network),
            "allowed_buckets": frozenset(b for b in buckets.split(",") if b.strip()),
            "allow_private_urls": _env_bool("DCC_ALLOW_PRIVATE_URLS", base.allow_private_urls),
            "max_output_bytes": _env_int("DCC_MAX_OUTPUT_BYTES", base.max_output_bytes),
            "max_job_disk_bytes": _env_int("DCC_MAX_JOB_DISK_BYTES", base.max_job_disk_bytes),
            "append_log_bytes": _env_int("DCC_APPEND_LOG_BYTES", base.append_log_bytes),
            "max_log_bytes": _env_int("DCC_MAX_LOG_BYTES", base.max_log_bytes),
            "redis_socket_timeout": _env_float("DCC_REDIS_SOCKET_TIMEOUT", base.redis_socket_timeout),
            "disable_worker": _env_bool(DISABLE_WORKER, base.disable_worker),
            "max_fast_inline_bytes": _env_int("DCC_MAX_FAST_INLINE_BYTES", base.max_fast_inline_bytes),
            "fast_result_seconds": _env_int("DCC_FAST_RESULT_SECONDS", base.fast_result_seconds),
            "wait_seconds": _env_float("DCC_WAIT_SECONDS", base.wait_seconds),
            "max_inline_output_bytes": _env_int("DCC_MAX_INLINE_OUTPUT_BYTES", base.max_inline_output_bytes),
            "smoke_image": os.environ.get("DCC_SMOKE_IMAGE", base.smoke_image),
            "max_gpus_per_worker": _env_optional_int("DCC_MAX_GPUS_PER_WORKER"),
            "tes_locations": tuple(x.strip() for x in os.environ.get("DCC_TES_LOCATIONS", "").split(",") if x.strip()),
            "organization_url": os.environ.get("DCC_ORGANIZATION_URL") or None,
        }
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with ``changes``."""
        return replace(self, **changes)
