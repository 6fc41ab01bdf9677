"""GA4GH TES 1.1 on dcc: the task document, its checks, how it maps onto a job, and the views the API serves.

Pure data and rules; no I/O. A TES task is one dcc job: ``JobRecord.task`` holds the task as created (checked
and normalized here), the job's spec carries the first executor and the resources (so queues, limits, GPUs,
cancel and statistics work unchanged), and the worker runs every executor in the job's sandbox
(``worker_agent.tes_runner``). ``JobRecord.task_log`` holds the TES task log the worker writes.
"""

from __future__ import annotations

import functools
import math
import posixpath
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dcc.errors import InputTooLarge, InvalidJob
from dcc.jobs import (
    RESERVED_ENV,
    JobError,
    JobRecord,
    JobSpec,
    JobState,
    Parameters,
    check_env,
    check_image,
    find_invalid_text,
)

API_PREFIX = "/ga4gh/tes/v1"
TES_VERSION = "1.1.0"
BACKEND_PARAMETERS = {
    "gpu": "GPUs for the task (an integer; > 0 sends it to the GPU queue)",
    "max_duration": "seconds before the task is stopped (an integer)",
    "priority": "high, normal or low",
}
"""The ``resources.backend_parameters`` keys dcc supports (keys are case-insensitive), and what they mean."""
SERVICE_CREATED = "2026-11-25T10:43:19Z"
"""service-info ``createdAt``: when dcc first served TES (fixed: not when a process started)."""
SERVICE_UPDATED = "2026-11-27T22:40:00Z"
"""service-info ``updatedAt``: when dcc's TES service last changed (set with each change to it)."""
MAX_PATH = 4096
MAX_CONTENT_BYTES = 1024 * 1024
"""Inline ``content`` of all inputs together (kept in the task record)."""
_WILDCARD = re.compile(r"[*?\[]")
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
_ENGINE_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")  # the engine (and dcc) mount these themselves

View = Literal["MINIMAL", "BASIC", "FULL"]


def check_container_path(path: str, *, what: str) -> str:
    """``path`` normalized (no trailing ``/``) if it is a usable absolute path in the container, else ValueError."""
    if not path.startswith("/"):
        raise ValueError(f"{what} {path!r} must be an absolute path")
    if "\x00" in path or len(path) > MAX_PATH:
        raise ValueError(f"{what} must not contain NUL and must be at most {MAX_PATH} characters")
    if any(part == ".." for part in path.split("/")):
        raise ValueError(f"{what} {path!r} must not contain '..'")
    if any(len(part.encode()) > 255 for part in path.split("/")):  # (the worker makes these on its disk)
        raise ValueError(f"{what}: each part of a path may be at most 255 bytes in UTF-8 (a file name's limit)")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        raise ValueError(f"{what} must not be '/'")
    if any(normal == root or normal.startswith(root + "/") for root in _FORBIDDEN_ROOTS):
        raise ValueError(f"{what} {path!r} lies in {normal.split('/')[1]!r}, which the container runtime owns")
    if any(normal == name or normal.startswith(name + "/") for name in _ENGINE_FILES):
        raise ValueError(f"{what} {path!r} is a file the container runtime provides")
    return normal


def has_wildcard(path: str) -> bool:
    """Whether ``path`` holds a POSIX pattern character (``*``, ``?`` or ``[``)."""
    return bool(_WILDCARD.search(path))


ContainerPath = Annotated[str, AfterValidator(lambda p: check_container_path(p, what="path"))]
"""An absolute, normalized path in the container (checked by ``check_container_path``)."""


def _json_number(value: Any) -> Any:
    """A JSON number as it came (the spec's integer and number types): a string or a boolean is not one."""
    if isinstance(value, str | bool):
        raise ValueError(f"must be a JSON number, not {'a boolean' if isinstance(value, bool) else 'a string'}")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_number)]
JsonFloat = Annotated[float, BeforeValidator(_json_number)]
JsonBool = Annotated[bool, Field(strict=True)]
"""The spec's boolean: ``true`` or ``false`` (not ``"yes"``, ``1``)."""


class _Strict(BaseModel):
    """Unknown keys are refused; a null is taken as an absent key (some clients send every field)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class TesExecutor(_Strict):
    """One command of a task; executors run in order in the task's sandbox."""

    image: str = Field(min_length=1, max_length=512)
    command: list[str] = Field(min_length=1)
    workdir: ContainerPath | None = None
    stdin: ContainerPath | None = None
    stdout: ContainerPath | None = None
    stderr: ContainerPath | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ignore_error: JsonBool = False

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        return check_image(image)

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env(env, reserved=RESERVED_ENV - {"INPUTS", "OUTPUTS"})


class TesInput(_Strict):
    """A file or folder put at ``path`` before the first executor runs."""

    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: ContainerPath
    type: Literal["FILE", "DIRECTORY"] = "FILE"
    content: str | None = None
    streamable: JsonBool | None = None

    @model_validator(mode="after")
    def _source(self) -> TesInput:
        # (an empty content beside a url is taken as no content: some clients send every field)
        if self.type == "DIRECTORY" and self.content is not None and (self.content or not self.url):
            raise ValueError("a DIRECTORY input cannot have content")
        if self.content:  # the spec: with content, the url is ignored
            self.url = None
        elif not self.url and self.content is None:  # (empty content is an empty file)
            raise ValueError("needs a url or content")
        return self


class TesOutput(_Strict):
    """A file, folder or pattern under which files are uploaded to ``url`` after the executors."""

    name: str | None = None
    description: str | None = None
    url: str = Field(min_length=1)
    path: ContainerPath
    path_prefix: str | None = None
    type: Literal["FILE", "DIRECTORY"] = "FILE"

    @model_validator(mode="after")
    def _pattern(self) -> TesOutput:
        if has_wildcard(self.path):
            if not self.path_prefix:
                raise ValueError("path_prefix is required when path has wildcards")
            prefix = self.path_prefix.rstrip("/") or "/"
            if has_wildcard(prefix) or not (self.path == prefix or self.path.startswith(prefix.rstrip("/") + "/")):
                raise ValueError(f"path_prefix {self.path_prefix!r} must be a plain folder that path starts with")
        elif self.type == "FILE" and self.url.endswith("/"):
            raise ValueError(f"url {self.url!r} ends with '/', but a FILE output's url names the file it is uploaded "
                             "as: name the file (or make the output a DIRECTORY)")
        return self

    @property
    def names_folder(self) -> bool:
        """Whether ``url`` is a folder that files are put under (a DIRECTORY or a pattern), not one file."""
        return self.type == "DIRECTORY" or has_wildcard(self.path)

    def folder(self) -> str:
        """The container folder the executors write this output into (mounted read-write)."""
        if self.type == "DIRECTORY" and not has_wildcard(self.path):
            return self.path
        plain = self.path.split("/")
        for i, part in enumerate(plain):
            if has_wildcard(part):
                return "/".join(plain[:i]) or "/"
        return posixpath.dirname(self.path) or "/"


class TesResources(_Strict):
    """What the task asks for."""

    cpu_cores: JsonInt | None = Field(default=None, gt=0, le=256)
    preemptible: JsonBool | None = None
    ram_gb: JsonFloat | None = Field(default=None, gt=0, le=1 << 20, allow_inf_nan=False)
    disk_gb: JsonFloat | None = Field(default=None, gt=0, le=1 << 30, allow_inf_nan=False)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: JsonBool | None = None


class TesTask(_Strict):
    """A task as ``POST /tasks`` takes it. Read-only fields a client echoes back are accepted and ignored."""

    id: str | None = None
    state: str | None = None
    name: str | None = None
    description: str | None = None
    inputs: list[TesInput] = Field(default_factory=list, max_length=10000)
    outputs: list[TesOutput] = Field(default_factory=list, max_length=10000)
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=100)
    volumes: list[Annotated[str, AfterValidator(lambda v: check_container_path(v, what="volume"))]] = Field(
        default_factory=list, max_length=100)
    tags: dict[str, str] = Field(default_factory=dict)
    logs: list[Any] | None = None
    creation_time: str | None = None

    @model_validator(mode="after")
    def _paths_agree(self) -> TesTask:
        seen: dict[str, int] = {}
        for i, item in enumerate(self.inputs):
            if item.path in seen:
                raise ValueError(f"inputs.{i}.path {item.path!r} is also inputs.{seen[item.path]}.path")
            seen[item.path] = i
        files = {item.path for item in self.inputs if item.type == "FILE"}
        under_file = functools.partial(holder_of, files)
        for i, item in enumerate(self.inputs):
            if (found := under_file(posixpath.dirname(item.path))) is not None:
                raise ValueError(f"inputs.{i}.path {item.path!r} lies under the input file {found!r}")
        files_at: dict[str, int] = {}
        for i, out in enumerate(self.outputs):
            at = normalize_url(out.url) or out.url
            if not out.names_folder and at in files_at:  # (the later file would replace the earlier one)
                raise ValueError(f"outputs.{i}.url {out.url!r} is also outputs.{files_at[at]}.url: each file needs "
                                 "its own url")
            if not out.names_folder:
                files_at[at] = i
            if out.folder() == "/":
                raise ValueError(f"outputs.{i}.path {out.path!r}: an output directly under '/' is not supported (an "
                                 "output's folder is mounted into the containers, and '/' cannot be): have the "
                                 f"executors write it in a folder, e.g. '/out{out.path}'"
                                 + (" with path_prefix '/out'" if has_wildcard(out.path) else ""))
            if (found := under_file(out.folder())) is not None:
                raise ValueError(f"outputs.{i}.path {out.path!r}: its folder lies in the input file {found!r}")
        for i, volume in enumerate(self.volumes):
            if (found := under_file(volume)) is not None:
                raise ValueError(f"volumes.{i} {volume!r} is, or lies in, the input file {found!r}")
        self._executor_files_agree()
        return self

    def _executor_files_agree(self) -> None:
        """An executor's stdout/stderr file may not be one of the task's folders, nor overwrite an input: inputs are
        read-only unless a volume or output folder holds them (the worker writes these files itself, past the
        read-only mounts)."""
        writable = {*self.volumes, *(out.folder() for out in self.outputs)}
        inputs = {item.path: item.type for item in self.inputs}
        folders = writable | {p for p, kind in inputs.items() if kind == "DIRECTORY"}
        known = sorted(folders | set(inputs))  # (once: a task may have 10,000 inputs and 100 executors)
        for i, executor in enumerate(self.executors):
            for name in ("stdout", "stderr"):
                path = getattr(executor, name)
                if path is None:
                    continue
                held = next((p for p in known if (p == path and p in folders) or p.startswith(path + "/")), None)
                if held is not None:
                    raise ValueError(f"executors.{i}.{name} {path!r} is a folder of the task (it holds {held!r}), "
                                     "not a file")
                if holder_of(writable, path) is not None:
                    continue
                found = holder_of(set(inputs), path)
                if found is not None:
                    what = "is the input" if found == path else f"lies in the input {inputs[found].lower()}"
                    raise ValueError(f"executors.{i}.{name} {path!r} {what} {found!r}, which is read-only (write it "
                                     "in a volume or an output's folder)")


def holder_of(paths: set[str], path: str) -> str | None:
    """The one of ``paths`` that ``path`` is, or lies in (the innermost), if any."""
    while path != "/":
        if path in paths:
            return path
        path = posixpath.dirname(path)
    return None


def parse_task(body: Any) -> TesTask:
    """The task in a create request, or ``InvalidJob`` naming the first thing wrong with it."""
    if not isinstance(body, dict):
        raise InvalidJob("the body must be a JSON object (a tesTask)")
    # no name, path, command or variable of a task may hold a NUL
    if (problem := find_invalid_text(body, nul=False)) is not None:
        where = problem.split(" is not valid")[0].split(" contains NUL")[0].split(": a key")[0]
        raise InvalidJob(problem, field=where or "task")
    try:
        return TesTask.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "task"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "is not a field of this object in TES 1.1"
        raise InvalidJob(f"{where}: {message}", field=where) from exc


# ---------------------------------------------------------------------------------------------------------
# locations


def parse_locations(raw: tuple[str, ...]) -> tuple[str, ...]:
    """Configured locations, normalized to end in ``/``; ValueError for one that is not s3:// or file://."""
    out = []
    for item in raw:
        normal = normalize_url(item)
        if normal is None:
            raise ValueError(f"TES location {item!r} is not an s3://bucket/prefix or file:///folder URL")
        out.append(normal.rstrip("/") + "/")
    return tuple(out)


def url_location(url: str, locations: tuple[str, ...], *, folder: bool = False) -> str | None:
    """The configured location (``s3://bucket/prefix/`` or ``file:///dir/``) that ``url`` lies in (a folder
    URL may also be the location itself), or None."""
    normal = normalize_url(url)
    if normal is None:
        return None
    for loc in locations:
        if normal.startswith(loc) or (folder and normal + "/" == loc):
            return loc
    return None


def normalize_url(url: str) -> str | None:
    """``url`` with its path normalized (``s3://b/k``, ``file:///p``), or None if it cannot be a location."""
    parts = urlsplit(url)
    if parts.scheme not in ("s3", "file") or parts.query or parts.fragment or "\x00" in url:
        return None
    path = unquote(parts.path) if parts.scheme == "file" else parts.path  # file URIs are percent-encoded
    if any(seg == ".." for seg in path.split("/")) or "\\" in path or "\x00" in path:
        return None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            return None
        return "file://" + posixpath.normpath(path)
    if not parts.netloc:
        return None
    key = posixpath.normpath(path.lstrip("/")) if path.strip("/") else ""
    return f"s3://{parts.netloc}/{key}".rstrip("/") if key != "." else f"s3://{parts.netloc}"


def check_locations(task: TesTask, *, locations: tuple[str, ...], check_url: Any) -> None:
    """Every input and output URL is one dcc may read or write, else ``InvalidJob`` naming it.

    Inputs: ``content``; ``https://`` (public addresses, checked by ``check_url``); ``s3://`` in an allowed
    bucket (``check_url``) or a configured location; ``file://`` in a configured location. Outputs: ``s3://``
    or ``file://`` in a configured location.
    """
    for i, item in enumerate(task.inputs):
        if item.url is None:
            continue
        where = f"inputs.{i}.url"
        scheme = urlsplit(item.url).scheme.lower()
        if url_location(item.url, locations, folder=item.type == "DIRECTORY") is not None:
            continue
        if scheme in ("http", "https") and item.type == "DIRECTORY":
            raise InvalidJob(f"{where}: a DIRECTORY input cannot come from an {scheme} URL", field=where)
        if scheme in ("http", "https", "s3") and item.type == "FILE" and check_url is not None:
            try:
                check_url(item.url)
            except InvalidJob as exc:
                raise InvalidJob(f"{where}: {exc}", field=where) from exc
            continue
        raise InvalidJob(f"{where}: {item.url!r} is not in a location this service reads "
                         f"({', '.join(locations) or 'none configured'}; https:// for public files)", field=where)
    for i, out in enumerate(task.outputs):
        if url_location(out.url, locations, folder=out.names_folder) is None:
            where = f"outputs.{i}.url"
            raise InvalidJob(f"{where}: {out.url!r} is not in a location this service writes "
                             f"({', '.join(locations) or 'none configured'})", field=where)


# ---------------------------------------------------------------------------------------------------------
# task → job


def backend_parameters(task: TesTask) -> dict[str, str]:
    """The supported backend parameters (lower-cased keys), checked; ``InvalidJob`` for a bad value, or for an
    unsupported key when ``backend_parameters_strict`` is set. Unsupported keys are otherwise dropped."""
    res = task.resources
    given = (res.backend_parameters or {}) if res else {}
    strict = bool(res and res.backend_parameters_strict)
    kept: dict[str, str] = {}
    for key, value in given.items():
        name = key.lower()
        where = f"resources.backend_parameters.{key}"
        if name not in BACKEND_PARAMETERS:
            if strict:
                raise InvalidJob(f"{where}: unsupported key (this service supports "
                                 f"{', '.join(sorted(BACKEND_PARAMETERS))}) and backend_parameters_strict is set",
                                 field=where)
            continue
        if name in ("gpu", "max_duration") and not (
            value.isascii() and value.isdigit() and len(value) <= 9
            and (0 < int(value) if name == "max_duration" else int(value) <= 64)
        ):
            wanted = "an integer from 0 to 64" if name == "gpu" else "a positive integer"
            raise InvalidJob(f"{where}: {value[:20]!r} is not {wanted}", field=where)
        if name == "priority" and value not in ("high", "normal", "low"):
            raise InvalidJob(f"{where}: {value!r} is not high, normal or low", field=where)
        if name in kept and kept[name] != value:  # (keys are case-blind: gpu and Gpu name one parameter)
            raise InvalidJob(f"{where}: {name} is given twice, with different values", field=where)
        kept[name] = value
    return kept


def task_document(task: TesTask) -> dict[str, Any]:
    """The task as stored: the client's fields without read-only ones, nulls, empty lists and unsupported backend
    keys (the spec: "Backends shall not store or return unsupported keys")."""
    doc = task.model_dump(mode="json", exclude_none=True, exclude={"id", "state", "logs", "creation_time"})
    resources = doc.get("resources")
    if resources is not None:
        kept = {k: v for k, v in resources.pop("backend_parameters", {}).items() if k.lower() in BACKEND_PARAMETERS}
        if kept:
            resources["backend_parameters"] = kept
    for key in ("inputs", "outputs", "volumes", "tags"):
        if not doc.get(key):
            doc.pop(key, None)
    size = sum(len((i.content or "").encode()) for i in task.inputs)
    if size > MAX_CONTENT_BYTES:
        raise InputTooLarge(f"inputs: content totals {size} bytes, over this service's limit of "
                            f"{MAX_CONTENT_BYTES} bytes (put large inputs in storage and give their url)",
                            field="inputs")
    return doc


def job_spec(task: TesTask, backend: dict[str, str]) -> JobSpec:
    """The job that runs ``task``: its first executor (for display) and its resources as the job's limits."""
    res = task.resources
    first = task.executors[0]
    memory = math.ceil(res.ram_gb * 1024) if res and res.ram_gb else None
    meta: dict[str, Any] = {"name": task.name} if task.name else {}
    ignored = sorted(k for k in ((res.backend_parameters or {}) if res else {}) if k.lower() not in BACKEND_PARAMETERS)
    if ignored:  # the spec: "Backends shall log system warnings if a key is passed that is unsupported"
        meta["ignoredBackendParameters"] = ignored
    return JobSpec(
        image=first.image,
        command=first.command,
        parameters=Parameters(
            cpus=float(res.cpu_cores) if res and res.cpu_cores else None,
            memory=memory,
            gpu=int(backend.get("gpu", "0")),
            maxDuration=int(backend["max_duration"]) if "max_duration" in backend else None,
        ),
        priority=backend.get("priority", "normal"),  # type: ignore[arg-type]
        meta={"tes": meta},
    )


# ---------------------------------------------------------------------------------------------------------
# job → task views


def rfc3339(t: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC time."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tes_state(record: JobRecord) -> str:
    """The TES state of the job behind a task."""
    state = record.state
    if state == JobState.QUEUED:
        return "QUEUED"
    if state == JobState.RUNNING:
        if record.cancel_requested:
            return "CANCELING"
        log = record.task_log or {}
        started = log.get("attempt") == record.attempts and ("running" in log or log.get("logs"))
        return "RUNNING" if started else "INITIALIZING"
    return {
        JobState.SUCCEEDED: "COMPLETE",
        JobState.FAILED: "EXECUTOR_ERROR",
        JobState.TIMED_OUT: "SYSTEM_ERROR",
        JobState.ERROR: "SYSTEM_ERROR",
        JobState.CANCELLED: "CANCELED",
    }[state]


def _attempt_log(stored: dict[str, Any], system: list[str], view: View) -> dict[str, Any]:
    """One TES task log from what the worker wrote for an attempt, shaped for ``view``."""
    entry = {k: v for k, v in stored.items() if k not in ("attempt", "running", "system_logs")}
    log: dict[str, Any] = {"logs": [], "outputs": [], **entry}
    if view == "FULL" and system:
        log["system_logs"] = system
    if view != "FULL":
        log["logs"] = [{k: v for k, v in e.items() if k not in ("stdout", "stderr")} for e in log["logs"]]
    return log


def _task_log(record: JobRecord, view: View) -> list[dict[str, Any]]:
    """The task's logs: one per attempt that ran, oldest first (the spec appends an entry when a task is retried)."""
    history = [dict(earlier) for earlier in record.task_history]
    stored = record.task_log or {}
    system = list(stored.get("system_logs", []))
    error = record.error
    # a task waiting for its retry (or cancelled meanwhile) ran no attempt since: the error is its last one's
    if error is not None and not stored and history and history[-1].get("attempt") == record.attempts:
        said = list(history[-1].get("system_logs", []))
        if not _says(said, error):
            history[-1]["system_logs"] = [*said, f"{error.code}: {error.message}"]
        error = None
    logs = []
    for n, earlier in enumerate(history, start=1):
        note = f"attempt {earlier.get('attempt', n)} did not finish (a system failure, or its worker was lost or " \
               "shut down); the task was queued to run again"
        logs.append(_attempt_log(earlier, [*earlier.get("system_logs", []), note], view))
    if error is not None and not _says(system, error):
        system.append(f"{error.code}: {error.message}")
    if record.state == JobState.TIMED_OUT:
        system.append("the task ran past its time limit and was stopped")
    if not {k for k in stored if k not in ("attempt", "running", "system_logs")} and not system:
        return logs
    if record.state.terminal and "end_time" not in stored and record.finished_at is not None:
        stored = {**stored, "end_time": rfc3339(record.finished_at)}  # (an attempt the worker could not log to the end)
    tes_meta = record.spec.meta.get("tes", {}) if isinstance(record.spec.meta, dict) else {}
    if tes_meta.get("ignoredBackendParameters"):
        system.insert(0, "resources.backend_parameters: unsupported keys ignored: "
                         + ", ".join(tes_meta["ignoredBackendParameters"]))
    return [*logs, _attempt_log(stored, system, view)]


def _says(system: list[str], error: JobError) -> bool:
    """Whether an attempt's ``system_logs`` already say why it ended: a line holds the error's message (alone, or
    as ``code: message``), or the message is its lines joined (outputs that failed one by one)."""
    return any(error.message in line for line in system) or error.message in "; ".join(system)


def task_view(record: JobRecord, view: View = "MINIMAL") -> dict[str, Any]:
    """The task as ``GET /tasks/{id}`` shows it in ``view``: exactly the spec's fields, no nulls."""
    state = tes_state(record)
    if view == "MINIMAL" or record.task is None:
        return {"id": record.id, "state": state}
    task = record.task
    out: dict[str, Any] = {"id": record.id, "state": state}
    for key in ("name", "description", "inputs", "outputs", "resources", "executors", "volumes", "tags"):
        if key in task:
            out[key] = task[key]
    if view != "FULL" and "inputs" in out:
        out["inputs"] = [{k: v for k, v in i.items() if k != "content"} for i in out["inputs"]]
    out["logs"] = _task_log(record, view)
    out["creation_time"] = rfc3339(record.submitted_at)
    return out


def tag_filter(keys: list[str], values: list[str]) -> dict[str, str]:
    """``tag_key``/``tag_value`` query pairs zipped as the spec says (a missing value matches any value)."""
    if len(values) > len(keys):
        raise InvalidJob("tag_value: more tag_value than tag_key parameters", field="tag_value")
    return {k: values[i] if i < len(values) else "" for i, k in enumerate(keys)}


def matches(record: JobRecord, *, name_prefix: str | None, state: str | None, tags: dict[str, str]) -> bool:
    """Whether the task passes ``GET /tasks``'s filters."""
    task = record.task or {}
    if name_prefix and not str(task.get("name", "")).startswith(name_prefix):
        return False
    if state and tes_state(record) != state:
        return False
    have = task.get("tags", {})
    return all(k in have and (v == "" or have[k] == v) for k, v in tags.items())


def service_info(*, name: str, url: str, version: str, locations: tuple[str, ...]) -> dict[str, Any]:
    """``GET /service-info``."""
    return {
        "id": "org.dcc.tes",
        "name": name,
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": TES_VERSION},
        "description": "dcc runs container images as jobs; this is its GA4GH Task Execution Service API.",
        "organization": {"name": "dcc", "url": url},
        "documentationUrl": url,
        "createdAt": SERVICE_CREATED,
        "updatedAt": SERVICE_UPDATED,
        "environment": "prod",
        "version": version,
        "storage": list(locations),
        "tesResources_backend_parameters": sorted(BACKEND_PARAMETERS),
    }
