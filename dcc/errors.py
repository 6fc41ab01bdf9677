"""dcc's exceptions, one hierarchy for the core, the API and the worker.

    DccError
    ├── JobNotFound            unknown job id                         → 404
    ├── InvalidJob             a job description that cannot run       → 400
    │   └── InputTooLarge      inline inputs past the configured limit → 413
    ├── NotReady               asked for a result the job does not have yet → 409
    ├── StoreUnavailable       Redis cannot be reached                 → 503
    ├── StorageError           storage (S3 or local dir) failed        → 503 in the API, system error in a worker
    │   └── ObjectNotFound     no such object in storage               → 404
    └── JobSystemError         a worker could not run a job (image, inputs, storage, runtime)

Adapters translate library exceptions into these with ``raise Ours(msg) from exc``.
"""

from __future__ import annotations


class DccError(Exception):
    """Base of every error dcc raises on purpose."""


class JobNotFound(DccError):
    """No job with this id (never submitted, or its record expired)."""

    def __init__(self, job_id: str, *, kind: str = "job") -> None:
        super().__init__(f"{kind} {job_id!r} not found")
        self.job_id = job_id


class InvalidJob(DccError):
    """The job description is invalid; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InputTooLarge(InvalidJob):
    """Inline inputs are larger than the deployment allows."""


class NotReady(DccError):
    """The job has not produced what was asked for (yet)."""


class StoreUnavailable(DccError):
    """The job store (Redis) cannot be reached."""


class StorageError(DccError):
    """Reading or writing job data in storage failed."""


class ObjectNotFound(StorageError):
    """No object under this key."""


class JobSystemError(DccError):
    """A worker could not run a job for a reason that is not the job's own exit code.

    ``code`` is machine-readable (``image_not_found``, ``image_pull_failed``, ``input_fetch_failed``,
    ``storage_failed``, ``runtime_failed``, ``worker_lost``, ``too_many_gpus``); ``retryable`` says whether another
    attempt may succeed (a missing image will not; a storage hiccup may).
    """

    def __init__(self, code: str, message: str, *, retryable: bool, machine: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.machine = retryable if machine is None else machine
        """Whether it may be the worker's own fault, and so counts against its health (by default, if retryable)."""
