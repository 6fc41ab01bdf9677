"""The dcc REST API: routes over ``JobService``. No try/except here: errors map to HTTP in ``handler``."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import FiniteFloat

from dcc.jobs import JobRecord, JobSpec, JobState
from dcc.service import Download, JobService, shown

router = APIGatewayRouter()
TRUNCATED_HEADER = "X-Dcc-Truncated"  # on an output of which only the first part was kept
MAX_WAIT_SECONDS = 25.0  # under API Gateway's 29 s integration timeout
SMOKE_WINDOW_SECONDS = 300.0


def service() -> JobService:
    """The process's service (set by ``handler.configure``, or built from the environment)."""
    from functions.api.handler import current_service  # (handler imports this module)

    return current_service()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body), headers=headers)


@router.post("/v1/jobs", summary="Submit a job", responses={201: {"description": "queued"},
                                                            200: {"description": "a job with this id exists"}})
def submit(job: Annotated[JobSpec, Body()]) -> Response[Any]:
    record, created = service().submit_and_wait(job)
    if (job.fast or job.wait) and not record.state.terminal:
        status = 202  # not done within the wait limit: fetch it later with GET or /wait
    else:
        status = 201 if created else 200
    return _json(status, shown(record), {"Location": f"/v1/jobs/{record.id}"})


@router.get("/v1/jobs", summary="List jobs, newest first, a page at a time")
def list_jobs(
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    jobs, after = service().list_jobs(state=state, limit=limit, cursor=cursor)
    return {"jobs": jobs, "cursor": after}


@router.get("/v1/jobs/<job_id>", summary="A job's state and result summary")
def get_job(job_id: str) -> dict[str, Any]:
    return shown(service().get(job_id))


@router.get("/v1/jobs/<job_id>/wait", summary="Long-poll: return when the job ends, or at the timeout")
def wait_job(job_id: str, timeout: Annotated[FiniteFloat, Query(ge=0, le=MAX_WAIT_SECONDS)] = 20.0) -> dict[str, Any]:
    return shown(service().wait(job_id, timeout))


@router.get("/v1/jobs/<job_id>/result", summary="The finished job's result.json")
def get_result(job_id: str):  # no return type: a redirect skips response validation
    result = service().result(job_id)
    return _download(result, "application/json") if isinstance(result, Download) else _json(200, result)


@router.get("/v1/jobs/<job_id>/stdout", summary="The job's standard output (bytes, or a redirect to storage)")
def get_stdout(job_id: str):  # no return type: bytes bodies skip response validation
    return _download(service().log(job_id, "stdout"), "text/plain; charset=utf-8")


@router.get("/v1/jobs/<job_id>/stderr", summary="The job's standard error (bytes, or a redirect to storage)")
def get_stderr(job_id: str):  # no return type: bytes bodies skip response validation
    return _download(service().log(job_id, "stderr"), "text/plain; charset=utf-8")


@router.get("/v1/jobs/<job_id>/outputs/.+", summary="One output file (bytes, or a redirect to storage)")
def get_output(job_id: str):  # no return type: bytes bodies skip response validation
    path = router.current_event.path.split(f"/v1/jobs/{job_id}/outputs/", 1)[1]
    return _download(service().output(job_id, path), "application/octet-stream")


def _download(download: Download, content_type: str) -> Response[Any]:
    """A file's bytes, or a redirect to where storage serves it (a presigned URL)."""
    if download.url is not None:
        return Response(status_code=302, headers={"Location": download.url}, body="")
    headers = {TRUNCATED_HEADER: "true"} if download.truncated else None
    return Response(status_code=200, content_type=content_type, body=download.data, headers=headers)


@router.post("/v1/jobs/<job_id>/cancel", summary="Cancel a job (a finished one is left as it is)")
def cancel_job(job_id: str) -> dict[str, Any]:
    return shown(service().cancel(job_id))


@router.get("/v1/stats", summary="Counts by state; queue wait and run time percentiles; jobs per worker")
def get_stats(window: Annotated[FiniteFloat, Query(gt=0, le=7 * 86400)] = 900.0) -> dict[str, Any]:
    return service().stats(window)


@router.get("/v1/workers", summary="Live workers and their health")
def list_workers() -> dict[str, Any]:
    return {"workers": service().workers()}


@router.get("/v1/queues", summary="Queue depths and running jobs")
def get_queues() -> dict[str, Any]:
    return service().queues()


@router.get("/healthz", summary="Liveness: answers 200 when Redis answers")
def healthz() -> dict[str, Any]:
    service().store.ping()
    return {"ok": True}


# The seed's smoke paths ------------------------------------------------------------------------------
@router.get("/test/cpu", summary="Run one small CPU job and return it: 200 if it succeeded, else 503 (202: running)")
def smoke_cpu() -> Response[Any]:
    return _smoke_reply(service().smoke(gpu=False))


@router.get("/test/gpu", summary="Run one small GPU job and return it: 200 if it succeeded, else 503 (202: running)")
def smoke_gpu() -> Response[Any]:
    return _smoke_reply(service().smoke(gpu=True))


def _smoke_reply(job: JobRecord) -> Response[Any]:
    """The smoke job, with a status a monitor can read: it succeeded, it failed, or it still runs."""
    status = 200 if job.state == JobState.SUCCEEDED else 503 if job.state.terminal else 202
    return _json(status, shown(job))


@router.get("/test/<kind>/<count>/<seconds>", summary="Queue COUNT jobs of KIND (cpu|gpu) sleeping SECONDS")
def smoke_load(kind: Literal["cpu", "gpu"], count: Annotated[int, Path(ge=1, le=1000)],
               seconds: Annotated[int, Path(ge=0, le=3600)]) -> dict[str, Any]:
    return {"ids": service().smoke_load(gpu=kind == "gpu", count=count, seconds=seconds)}


@router.get("/test", summary="Health check: 200 if jobs run (a recent success, else a probe job), else 503")
def smoke_health() -> Response[Any]:
    ok, why = service().healthy(window=SMOKE_WINDOW_SECONDS)
    return _json(200 if ok else 503, {"ok": ok, "reason": why})


RUNS_JOBS = (smoke_cpu, smoke_gpu, smoke_load, smoke_health)
"""The GET routes that may queue jobs: a HEAD, which must have no side effects, is refused there (405), not run."""
