"""The job: what a user submits (``JobSpec``), its states, and the record dcc keeps (``JobRecord``).

Pure data and rules; no I/O. Field names of ``JobSpec`` follow the system dcc descends from
(``image``, ``command``/``cmd``, ``env``, ``workingDir``, ``inputs``, ``appendStdOut``, ``parameters``,
``meta``), so its clients keep working.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import posixpath
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dcc.storage import RESERVED_NAME_PREFIX


class JobState(StrEnum):
    """Where a job is in its life. The last five are terminal: nothing leaves them."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        """Whether no transition leaves this state."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED, JobState.ERROR}
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # a queued job is claimed, cancelled, or given up on (e.g. its inputs vanished)
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.ERROR}),
    # a running job ends, or goes back to the queue when its worker was lost or failed for a system reason
    JobState.RUNNING: frozenset({JobState.QUEUED} | TERMINAL_STATES),
    **{state: frozenset() for state in TERMINAL_STATES},
}
"""The allowed transitions. ``dcc.store`` enforces them atomically in Redis; this table is the reference."""


def can_transition(current: JobState, new: JobState) -> bool:
    """Whether a job may move from ``current`` to ``new``."""
    return new in TRANSITIONS[current]


class ErrorCode(StrEnum):
    """Machine-readable reasons for the ``error`` state."""

    IMAGE_NOT_FOUND = "image_not_found"
    IMAGE_PULL_FAILED = "image_pull_failed"
    INPUT_FETCH_FAILED = "input_fetch_failed"
    STORAGE_FAILED = "storage_failed"
    RUNTIME_FAILED = "runtime_failed"
    WORKER_LOST = "worker_lost"
    CONTAINER_REFUSED = "container_refused"  # Docker refused the job's container (no command, not in the image...)
    TOO_MANY_GPUS = "too_many_gpus"  # the job asks for more GPUs than the worker that claimed it has
    DISK_LIMIT = "disk_limit_exceeded"
    LOG_LIMIT = "log_limit_exceeded"  # a TES executor's stdout/stderr file would have missed its start


JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV = frozenset({"DCC_JOB_ID", "INPUTS", "OUTPUTS"})
MAX_OUTPUT_PATTERNS = 32
MAX_PATTERN_LENGTH = 256
MAX_GLOBSTARS = 2  # each '**' multiplies the work of matching a deep path: two keep it to milliseconds a file
_GLOBSTAR = re.compile(r"\*\*+")
MAX_OUTPUT_NAME = 900
"""Bytes of an output's path: its storage key (``jobs/<id>/outputs/...``) stays under S3's 1024."""
MAX_INPUT_NAME = MAX_OUTPUT_NAME
"""Bytes of an input's path: any output's path can be a later job's input's (each part at most 255 bytes)."""
PRIORITY_OFFSET_MS = 5 * 60 * 1000
"""How far ahead (high) or behind (low) of normal a job is queued: the bound on priority starvation."""
FAST_OFFSET_MS = 10**12
FAST_MAX_ATTEMPTS = 2  # a fast job is run at most twice (its submitter waits): retried once, for any system reason
"""Fast jobs go ahead of every standard job of their class (about 30 years ahead)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (a terminal takes \x9b for ESC [)
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")  # marks that reorder shown text ('a\u202etxt.exe')
MAX_NAME_PART = 255
"""Bytes of one part of a path: a file system's limit on a file name."""

# An image reference, by the grammar of distribution/reference (what the engine parses): [domain/]path[:tag][@digest]
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = (rf"(?:(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?"
               rf"{_PATH_PART}(?:/{_PATH_PART})*")
_IMAGE = re.compile(rf"(?P<name>{_IMAGE_NAME})(?::[\w][\w.-]{{0,127}})?"
                    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?", re.ASCII)
MAX_IMAGE_NAME = 255


def check_image(image: str) -> str:
    """Return ``image`` if the engine can parse it as an image reference, else raise ValueError saying why."""
    if image != image.strip() or any(c.isspace() for c in image):
        raise ValueError("must not contain white space")
    if _CONTROL.search(image):
        raise ValueError("must not contain control characters")
    match = _IMAGE.fullmatch(image)
    if match is None:
        raise ValueError("is not an image reference: [registry/]name[:tag][@digest], the name in lower case "
                         "(e.g. 'python:3.12-slim', 'ghcr.io/org/tool:1.0')")
    if len(match["name"]) > MAX_IMAGE_NAME:
        raise ValueError(f"has a name longer than {MAX_IMAGE_NAME} characters")
    return image


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent as UTF-8 (an unpaired surrogate, e.g. JSON's "\\ud800"), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode (an unpaired surrogate \\u{ord(text[exc.start]):04x})"
    return None


def check_relative_path(name: str, *, max_length: int = MAX_INPUT_NAME) -> str:
    """Return ``name`` if it is a safe path relative to a job folder, else raise ValueError saying why."""
    if not name:
        raise ValueError("must not be empty")
    if len(name.encode(errors="surrogatepass")) > max_length:
        raise ValueError(f"must be at most {max_length} bytes in UTF-8")
    if "\\" in name or _CONTROL.search(name):
        raise ValueError("must not contain a backslash or control characters (NUL, newline, tab...)")
    if _BIDI.search(name):
        raise ValueError("must not contain marks that change the direction of text (U+202E...)")
    if (problem := unicode_problem(name)) is not None:
        raise ValueError(problem)
    if name.startswith("/"):
        raise ValueError("must be relative (it is placed under /inputs)")
    parts = name.split("/")
    if any(part == ".." for part in parts):
        raise ValueError("must not contain '..'")
    if any(part in ("", ".") for part in parts) or posixpath.normpath(name) != name:
        raise ValueError("must be a normalized path (no empty or '.' segments, no trailing '/')")
    if any(len(part.encode()) > MAX_NAME_PART for part in parts):
        raise ValueError(f"must have parts of at most {MAX_NAME_PART} bytes in UTF-8 (a file name's limit)")
    if any(part.startswith(RESERVED_NAME_PREFIX) for part in parts):
        raise ValueError(f"must not have a part starting with {RESERVED_NAME_PREFIX!r} (reserved by dcc's storage)")
    return name


MAX_META_DEPTH = 64


MAX_ARG_BYTES = 131_071
"""The longest argument or ``NAME=value`` string a process can be started with (the kernel's MAX_ARG_STRLEN, 128 KiB
with its NUL): a longer one fails the exec, so it is refused at submit."""
MAX_EXEC_BYTES = 2_031_616
"""What a job's command and env may take together, each string with its NUL and pointer: the kernel's ARG_MAX under
Docker's default 8 MiB stack (2 MiB), less 64 KiB for what the image's entry point and Docker add."""


def check_exec_size(command: list[str] | None, env: dict[str, str]) -> None:
    """Raise ValueError if the command and env cannot be passed to a process (see ``MAX_ARG_BYTES``)."""
    total = 0
    for i, arg in enumerate(command or ()):
        if (size := len(arg.encode())) > MAX_ARG_BYTES:
            raise ValueError(f"command[{i}] is {size} bytes: a process argument may have at most {MAX_ARG_BYTES} "
                             "(pass long data as an input file)")
        total += size + 9
    for name, value in env.items():
        if (size := len(name.encode()) + 1 + len(value.encode())) > MAX_ARG_BYTES:
            raise ValueError(f"env {name!r} is {size} bytes with its name: a variable may have at most "
                             f"{MAX_ARG_BYTES} (pass long data as an input file)")
        total += size + 9
    if total > MAX_EXEC_BYTES:
        raise ValueError(f"command and env take {total} bytes together: a process can be given at most "
                         f"{MAX_EXEC_BYTES} (pass long data as an input file)")


def find_non_finite(value: Any, where: str = "") -> str | None:
    """The first number in ``value`` (nested lists and dicts) that is NaN or infinite, as ``"<where> ..."``: JSON
    has no such numbers, so a record holding one could not be returned as JSON."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{at or 'value'} is {item}: JSON numbers are finite"
        if isinstance(item, dict):
            stack.extend((child, f"{at}.{key}".lstrip(".")) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{at}[{i}]") for i, child in enumerate(item))
    return None


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (0 for a scalar), without recursing."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def find_invalid_text(value: Any, where: str = "", *, nul: bool = True) -> str | None:
    """The first string in ``value`` (nested lists and dicts, keys too) that is not valid Unicode, or holds a
    NUL when ``nul`` is False, as ``"<where> <why>"``; None when all are fine. JSON can carry such strings
    (``"\\ud800"``, ``"\\u0000"``) that nothing downstream can encode, or pass to a process."""
    if isinstance(value, str):
        problem = unicode_problem(value) or (None if nul or "\x00" not in value else "contains NUL")
        return None if problem is None else f"{where or 'value'} {problem}"
    if isinstance(value, dict):
        for key, item in value.items():
            found = (find_invalid_text(key, f"{where}: a key", nul=nul)
                     or find_invalid_text(item, f"{where}.{key}".lstrip("."), nul=nul))
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if found := find_invalid_text(item, f"{where}[{i}]", nul=nul):
                return found
    return None


def check_env(env: dict[str, str], *, reserved: frozenset[str] = RESERVED_ENV) -> dict[str, str]:
    """Return ``env`` if every name is a valid variable name that dcc does not set, else raise ValueError."""
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid variable name")
        if name in reserved:
            raise ValueError(f"{name!r} is set by dcc")
        if "\x00" in value:
            raise ValueError(f"value of {name!r} contains NUL")
    return env


class Input(BaseModel):
    """One input file, placed at ``/inputs/<name>`` in the container."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Path of the file under /inputs; subfolders allowed, no '..'.")
    value: str = Field(description="The content (inline) or the URL (s3://bucket/key or https://...).")
    encoding: Literal["utf8", "base64"] = "utf8"
    source: Literal["inline", "url"] = "inline"

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_relative_path(name)

    @model_validator(mode="after")
    def _decodable(self) -> Input:
        if self.source == "inline" and self.encoding == "base64":
            try:
                base64.b64decode(self.value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"input {self.name!r}: value is not valid base64") from exc
        return self

    def content(self) -> bytes:
        """The bytes of an inline input."""
        if self.encoding == "base64":
            return base64.b64decode(self.value, validate=True)
        return self.value.encode()


def _whole(value: Any) -> Any:
    """A whole number written as a float (60.0: some JSON encoders write every number so) is that number."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole)]


class Parameters(BaseModel):
    """Resources and limits of a job."""

    model_config = ConfigDict(extra="forbid")

    # strict: a number given as a string or a boolean is a client's mistake, not something to guess at (but 60.0
    # is 60)
    maxDuration: WholeNumber | None = Field(default=None, gt=0, strict=True,
                                            description="Seconds before the job is killed.")
    cpus: float | None = Field(default=None, ge=0.01, le=256, strict=True, allow_inf_nan=False)
    memory: WholeNumber | None = Field(default=None, ge=6, strict=True, description="MiB (Docker's minimum is 6)")
    gpu: WholeNumber = Field(default=0, ge=0, le=64, strict=True,
                             description="GPUs; > 0 sends the job to the gpu queue.")


class JobSpec(BaseModel):
    """A job as submitted to ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    image: str = Field(min_length=1, max_length=512)
    command: list[str] | None = Field(default=None, validation_alias=AliasChoices("command", "cmd"))
    env: dict[str, str] = Field(default_factory=dict)
    workingDir: str | None = None
    inputs: list[Input] = Field(default_factory=list, max_length=1000)
    keepOutputs: list[str] | None = Field(
        default=None, max_length=MAX_OUTPUT_PATTERNS,
        description="Which files under /outputs to keep, as glob patterns relative to it (`**` any depth, "
                    "a leading `!` excludes); default: every file. At most 32 patterns, each with at most two `**`.")
    appendStdOut: bool = Field(default=False, strict=True)  # strict: "yes" or 0 is not taken for a boolean
    appendStdErr: bool = Field(default=False, strict=True)
    parameters: Parameters = Field(default_factory=Parameters)
    meta: Any = None
    fast: bool = Field(default=False, strict=True,
                       description="Inputs and results in Redis; ahead of standard jobs; the reply comes when the job "
                                   "ends.")
    wait: bool = Field(default=False, strict=True,
                       description="Reply when the job ends (or with 202 at the wait limit).")
    priority: Literal["high", "normal", "low"] = "normal"
    id: str | None = Field(default=None, pattern=JOB_ID_PATTERN,
                           description="Client id; submitting it twice is a no-op.")

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        return check_image(image)

    @model_validator(mode="after")
    def _storable(self, info: ValidationInfo) -> JobSpec:
        if info.context and info.context.get("stored"):  # checked when it was submitted
            return self
        if _depth(self.meta) > MAX_META_DEPTH:  # (a record must be readable back: parsers stop near 200)
            raise ValueError(f"meta nests deeper than {MAX_META_DEPTH} levels")
        # what reaches Docker may not hold a NUL; meta is only stored, as JSON
        found = find_invalid_text({"image": self.image, "command": self.command, "env": self.env,
                                   "workingDir": self.workingDir}, nul=False) or find_invalid_text(self.meta, "meta")
        found = found or find_non_finite(self.meta, "meta")
        for i, item in enumerate(self.inputs):
            found = found or find_invalid_text(item.value, f"inputs[{i}].value")
        if found:
            raise ValueError(found)
        check_exec_size(self.command, self.env)
        return self

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env(env)

    @field_validator("keepOutputs")
    @classmethod
    def _output_patterns(cls, patterns: list[str] | None) -> list[str] | None:
        for i, pattern in enumerate(patterns or ()):
            path = pattern.removeprefix("!")
            why = ("must not be empty" if not path else "must be relative to /outputs" if path.startswith("/")
                   else "must not contain '..'" if ".." in path.split("/")
                   else "must not start with './' (patterns are relative to /outputs)" if path.startswith("./")
                   else f"names a folder: '{path.rstrip('/')}/**' keeps the files in it" if path.endswith("/")
                   else "must not start with '!!' (one '!' excludes; a name starting with '!' is written '\\!...')"
                   if path.startswith("!")
                   else "must be a normalized path (no '.' or empty parts): it could match no output"
                   if any(part in ("", ".") for part in path.split("/"))
                   else "must not contain control characters" if _CONTROL.search(path)
                   else f"is longer than {MAX_PATTERN_LENGTH} characters" if len(path) > MAX_PATTERN_LENGTH
                   else f"has more than {MAX_GLOBSTARS} '**'" if len(_GLOBSTAR.findall(path)) > MAX_GLOBSTARS
                   else None)
            if why:
                raise ValueError(f"pattern {i} ({pattern!r}) {why}")
        return patterns

    @field_validator("workingDir")
    @classmethod
    def _workdir(cls, path: str | None) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError("must be an absolute path in the container")
        return path

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[Input]) -> list[Input]:
        names = [i.name for i in inputs]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"input name {name!r} appears twice")
            seen.add(name)
        # 'a' and 'a/b' cannot both be files
        for name in names:
            parent = name
            while "/" in parent:
                parent = parent.rsplit("/", 1)[0]
                if parent in seen:
                    raise ValueError(f"input {name!r} lies under input file {parent!r}")
        return inputs

    @classmethod
    def from_stored(cls, data: str | dict[str, Any]) -> JobSpec:
        """A spec as dcc stored it: checked when it passes today's rules, else taken as it was stored (a job
        accepted under older rules must stay readable, or it would stop every worker that claims it)."""
        try:
            if isinstance(data, str):
                return cls.model_validate_json(data, context={"stored": True})
            return cls.model_validate(data, context={"stored": True})
        except ValidationError:
            raw = json.loads(data) if isinstance(data, str) else data
            params = Parameters.model_construct(**(raw.get("parameters") or {}))
            inputs = [Input.model_construct(**i) for i in raw.get("inputs") or []]
            return cls.model_construct(**{**raw, "parameters": params, "inputs": inputs})

    @property
    def queue(self) -> str:
        """The queue the job goes to."""
        return "gpu" if self.parameters.gpu > 0 else "cpu"

    def queue_score(self, submitted_at: float) -> int:
        """Where the job stands in its queue (lowest first): fast jobs first, then by priority, then FIFO.

        Priority is an offset in time, so age promotes: a low-priority job goes ahead of every normal job
        submitted more than ``PRIORITY_OFFSET_MS`` after it, and nothing waits forever behind newer work.
        """
        ms = int(submitted_at * 1000)
        if self.fast:
            return ms - FAST_OFFSET_MS
        return ms + {"high": -PRIORITY_OFFSET_MS, "normal": 0, "low": PRIORITY_OFFSET_MS}[self.priority]

    def without_inline_values(self) -> JobSpec:
        """The spec with inline input contents dropped (they live in storage for standard jobs)."""
        inputs = [i.model_copy(update={"value": "", "encoding": "utf8"}) if i.source == "inline" else i
                  for i in self.inputs]
        return self.model_copy(update={"inputs": inputs})

    def inline_bytes(self) -> int:
        """Total decoded size of the inline inputs."""
        return sum(len(i.content()) for i in self.inputs if i.source == "inline")


@dataclass(frozen=True)
class JobError:
    """Why a job ended in ``error``."""

    code: str
    message: str


@dataclass
class JobRecord:
    """What dcc knows of a job. Serialised to a Redis hash by ``dcc.store``."""

    id: str
    spec: JobSpec
    state: JobState
    queue: str
    submitted_at: float
    attempts: int = 0
    handbacks: int = 0
    """Attempts that ended in a worker's shutdown hand-back: they do not count toward the attempt limit."""
    worker: str | None = None
    inputs_prefix: str | None = None
    claimed_at: float | None = None
    started_at: float | None = None
    exited_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: JobError | None = None
    outputs: list[str] = field(default_factory=list)
    outputs_truncated: bool = False
    stdout: str | None = None
    stderr: str | None = None
    cancel_requested: bool = False
    inline_outputs: dict[str, dict[str, Any]] | None = None
    task: dict[str, Any] | None = None
    """GA4GH TES tasks: the task as created (``dcc.tes``); the job runs its executors."""
    task_log: dict[str, Any] | None = None
    """GA4GH TES tasks: the TES task log of the latest attempt (``attempt``, executor logs, outputs), as the worker
    last wrote it."""
    task_history: list[dict[str, Any]] = field(default_factory=list)
    """GA4GH TES tasks: the logs of the earlier attempts, which ended without a result and were retried."""

    def timings(self) -> dict[str, float | None]:
        """Timestamps (epoch seconds) and the derived queue wait and run time."""
        wait = self.claimed_at - self.submitted_at if self.claimed_at else None
        run = self.exited_at - self.started_at if self.exited_at and self.started_at else None
        return {
            "submitted": self.submitted_at,
            "claimed": self.claimed_at,
            "started": self.started_at,
            "exited": self.exited_at,
            "finished": self.finished_at,
            "queueWait": round(wait, 6) if wait is not None else None,
            "runTime": round(run, 6) if run is not None else None,
        }

    def view(self) -> dict[str, Any]:
        """The record as the API shows it."""
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "queue": self.queue,
            "image": self.spec.image,
            "command": self.spec.command,
            "attempts": self.attempts,
            "worker": self.worker,
            "exitCode": self.exit_code,
            "error": {"code": self.error.code, "message": self.error.message} if self.error else None,
            "outputs": self.outputs,
            "outputsTruncated": self.outputs_truncated,
            "timings": self.timings(),
            "meta": self.spec.meta,
        }
        if self.cancel_requested and not self.state.terminal:
            out["cancelRequested"] = True
        if self.stdout is not None:
            out["stdout"] = self.stdout
        if self.stderr is not None:
            out["stderr"] = self.stderr
        if self.spec.fast:
            out["fast"] = True
        if self.spec.priority != "normal":
            out["priority"] = self.spec.priority
        if self.spec.keepOutputs is not None:
            out["keepOutputs"] = self.spec.keepOutputs
        if self.inline_outputs is not None:
            out["outputFiles"] = self.inline_outputs
        if self.spec.fast and self.state.terminal:  # (one that never ran, cancelled or refused, has them too)
            out.setdefault("stdout", "")
            out.setdefault("stderr", "")
            out.setdefault("outputFiles", {})
        return out


@dataclass(frozen=True)
class Outcome:
    """How a worker's attempt at a job ended, as reported to the store."""

    state: JobState
    exit_code: int | None = None
    error: JobError | None = None
    started_at: float | None = None
    exited_at: float | None = None
    outputs: list[str] = field(default_factory=list)
    outputs_truncated: bool = False
    stdout: str | None = None
    stderr: str | None = None
    finished_at: float | None = None
    """When the worker finished the attempt (stamped once, for both result.json and the record)."""
    inline_outputs: dict[str, dict[str, Any]] | None = None
    """Fast jobs: each output's content, ``{"encoding": "utf8"|"base64", "content": ..., "truncated": bool}``."""
    task_log: dict[str, Any] | None = None
    """GA4GH TES tasks: the final TES task log of this attempt."""
    handed_back: bool = False
    """``queued`` because the worker stopped (a clean shutdown): the attempt does not count toward the limit."""


@dataclass(frozen=True)
class Claim:
    """A job a worker has claimed: run attempt ``attempt`` of it while holding its lease."""

    job: JobRecord
    attempt: int
