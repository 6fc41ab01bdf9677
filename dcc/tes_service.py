"""The GA4GH TES use cases over ``JobService``: create, get, list, cancel a task, and the service's description."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from pydantic import ValidationError

from dcc.errors import InputTooLarge, InvalidJob, JobNotFound
from dcc.jobs import JobRecord
from dcc.replies import REPLY_BUDGET, fit_task_view, reply_bytes
from dcc.service import MAX_LIST_BYTES, JobService, check_job_id
from dcc.tes import (
    View,
    backend_parameters,
    check_locations,
    job_spec,
    matches,
    parse_locations,
    parse_task,
    service_info,
    tag_filter,
    task_document,
    task_view,
)

DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047
MAX_SCANNED = 5000

"""Task records one list request reads at most while filtering; past it the page ends early, with a token."""
VIEWS = ("MINIMAL", "BASIC", "FULL")
TES_STATES = ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR",
              "CANCELED", "PREEMPTED", "CANCELING")


# A job's parameters as a task names them
TASK_FIELDS = {"gpu": "resources.backend_parameters.gpu", "memory": "resources.ram_gb", "cpus": "resources.cpu_cores",
               "maxDuration": "resources.backend_parameters.max_duration"}


def task_field(job_field: str) -> str | None:
    """What a task calls a job's parameter (``memory`` or ``parameters.memory``); None if it is not one."""
    return TASK_FIELDS.get(job_field.removeprefix("parameters."))


class TesService:
    """Tasks are jobs: each create submits one job that runs the task's executors."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.locations = parse_locations(jobs.settings.tes_locations)

    def create(self, body: Any) -> str:
        """Check and queue a task; its id."""
        task = parse_task(body)
        backend = backend_parameters(task)
        check_locations(task, locations=self.locations, check_url=self.jobs.check_url)
        try:
            spec = job_spec(task, backend)
        except ValidationError as exc:  # e.g. a ram_gb under Docker's minimum, a NUL in a command
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "task"
            where = task_field(where) or where
            said = err["msg"].removeprefix("Value error, ")
            if where == "resources.ram_gb" and "ge" in (err.get("ctx") or {}):  # (the job's limit is in MiB)
                said = f"must be at least {err['ctx']['ge']} MiB ({err['ctx']['ge'] / 1024:.4g} GB)"
            raise InvalidJob(f"the task cannot run here: {where}: {said}", field=where) from exc
        document = task_document(task)
        # (measured without the inputs' contents, which have their own limit: escaped, they could seem large)
        described = {**document, "inputs": [{k: v for k, v in item.items() if k != "content"}
                                            for item in document.get("inputs", [])]}
        size = len(json.dumps(described).encode())
        if size > self.jobs.settings.max_spec_bytes:  # (it is kept with the job in Redis)
            raise InputTooLarge(f"the task's description (executors, inputs and outputs without contents, tags) is "
                                f"{size} bytes, over the limit of {self.jobs.settings.max_spec_bytes} bytes",
                                field="task")
        try:
            record, _ = self.jobs.submit(spec, task=document)
        except InvalidJob as exc:  # the deployment's limits, checked on the job: say it in the task's own terms
            field = task_field(exc.field or "")
            if field is None or exc.field is None:
                raise
            raise type(exc)(str(exc).replace(exc.field, field, 1), field=field) from exc
        return record.id

    def _task(self, task_id: str) -> JobRecord:
        try:
            check_job_id(task_id)
            record = self.jobs.get(task_id)
        except JobNotFound:
            raise JobNotFound(task_id, kind="task") from None
        if record.task is None:  # a plain dcc job is not a task
            raise JobNotFound(task_id, kind="task")
        return record

    def get(self, task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
        """The task in ``view``."""
        return fit_task_view(task_view(self._task(task_id), _view(view)), REPLY_BUDGET, reply_bytes)

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a queued task now, ask a running one to stop; a finished one stays as it is."""
        self._task(task_id)
        self.jobs.cancel(task_id)
        return {}

    def list(
        self,
        *,
        name_prefix: str | None = None,
        state: str | None = None,
        tag_keys: list[str] | None = None,
        tag_values: list[str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        view: str = "MINIMAL",
    ) -> dict[str, Any]:
        """A page of tasks, newest first, that pass the filters; ``next_page_token`` unless it is the last (a full
        page reads on until the next task that passes them, or the end)."""
        size = _page_size(page_size)
        chosen = _view(view)
        tags = tag_filter(tag_keys or [], tag_values or [])
        _check_state(state)
        tasks: list[dict[str, Any]] = []
        token, scanned, used = page_token, 0, 0
        page_end: str | None = None  # once the page is full: the cursor after its last task
        last: str | None = None  # the cursor after the page's last task so far
        while True:
            try:
                entries, more = self.jobs.store.task_entries(after=token, limit=min(max(size - len(tasks), 32), 500))
            except InvalidJob as exc:  # (the store calls it a cursor)
                raise InvalidJob("page_token: not one this service returned", field="page_token") from exc
            records = self.jobs.store.get_many(task_id for task_id, _ in entries)
            for (_, cursor), record in zip(entries, records, strict=True):
                scanned += 1
                token = cursor
                if record is None or record.task is None:  # expired in Redis (GET still serves it from result.json)
                    continue
                if not matches(record, name_prefix=name_prefix, state=state, tags=tags):
                    continue
                if page_end is not None:  # a task past the full page: there is a next page
                    return {"tasks": tasks, "next_page_token": page_end}
                shown = fit_task_view(task_view(record, chosen), REPLY_BUDGET, reply_bytes)
                used += reply_bytes(shown)
                if tasks and used > MAX_LIST_BYTES:  # (the next page starts with this one)
                    return {"tasks": tasks, "next_page_token": last}
                tasks.append(shown)
                last = cursor
                if len(tasks) == size:
                    page_end = cursor
            if not more:
                return {"tasks": tasks}
            if scanned >= MAX_SCANNED and token:  # (the next page may then be empty)
                return {"tasks": tasks, "next_page_token": page_end or token}

    def service_info(self, base_url: str) -> dict[str, Any]:
        """``GET /service-info``; ``base_url`` is the API's own address."""
        try:
            version = metadata.version("dcc")
        except metadata.PackageNotFoundError:
            version = "0"
        return service_info(
            name="dcc",
            url=self.jobs.settings.organization_url or base_url,
            version=version,
            locations=self.locations,
        )


def _page_size(page_size: int | None) -> int:
    size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidJob(f"page_size: must be from 1 to {MAX_PAGE_SIZE}", field="page_size")
    return size


def _check_state(state: str | None) -> None:
    if state is not None and state not in TES_STATES:
        raise InvalidJob(f"state: {state!r} is not a TES state ({', '.join(TES_STATES)})", field="state")


def _view(view: str) -> View:
    if view not in VIEWS:
        raise InvalidJob(f"view: {view!r} is not one of {', '.join(VIEWS)}", field="view")
    return view  # type: ignore[return-value]
