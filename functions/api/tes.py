"""GA4GH TES 1.1 under ``/ga4gh/tes/v1``: routes over ``TesService``. Errors map to HTTP in ``handler``."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from dcc.errors import InvalidJob

if TYPE_CHECKING:
    from dcc.tes_service import TesService

API_PREFIX = "/ga4gh/tes/v1"  # dcc.tes.API_PREFIX; not imported, so that a cold start of other routes skips TES
router = APIGatewayRouter()
_tes: TesService | None = None


def tes() -> TesService:
    """The TES service over the process's job service, built on the first TES request."""
    global _tes
    from functions.api.handler import current_service  # (handler imports this module)

    service = current_service()
    if _tes is None or _tes.jobs is not service:
        from dcc.tes_service import TesService

        _tes = TesService(service)
    return _tes


def _json(body: Any) -> Response[Any]:
    return Response(status_code=200, content_type="application/json", body=json.dumps(body))


def _query(name: str) -> list[str]:
    return list((router.current_event.multi_value_query_string_parameters or {}).get(name) or [])


def _one(name: str) -> str | None:
    values = _query(name)
    return values[-1] if values else None


def _base_url() -> str:
    event = router.current_event
    headers = {k.lower(): v for k, v in (event.headers or {}).items()}
    proto = headers.get("x-forwarded-proto", "http" if event.request_context.stage == "local" else "https")
    host = headers.get("host") or event.request_context.domain_name or "localhost"
    stage = event.request_context.stage
    return f"{proto}://{host}" + ("" if stage in (None, "local", "$default") else f"/{stage}")


@router.get(f"{API_PREFIX}/service-info", include_in_schema=False)
def service_info():  # no return type: the body is the spec's, not validated against a model here
    return _json(tes().service_info(_base_url() + "/"))


@router.post(f"{API_PREFIX}/tasks", include_in_schema=False)
def create_task():
    try:
        body = router.current_event.json_body
    except (ValueError, TypeError) as exc:
        raise InvalidJob("the body is not valid JSON") from exc
    return _json({"id": tes().create(body)})


@router.get(f"{API_PREFIX}/tasks", include_in_schema=False)
def list_tasks():
    raw_size = _one("page_size")
    if raw_size is not None and not re.fullmatch(r"-?[0-9]{1,9}", raw_size):  # (ASCII digits: "²" is a digit too)
        raise InvalidJob(f"page_size: {raw_size!r} is not an integer", field="page_size")
    return _json(tes().list(
        name_prefix=_one("name_prefix"),
        state=_one("state"),
        tag_keys=_query("tag_key"),
        tag_values=_query("tag_value"),
        page_size=int(raw_size) if raw_size is not None else None,
        page_token=_one("page_token"),
        view=_one("view") or "MINIMAL",
    ))


@router.post(f"{API_PREFIX}/tasks/<task_id>:cancel", include_in_schema=False)
def cancel_task(task_id: str):
    return _json(tes().cancel(task_id))


@router.get(f"{API_PREFIX}/tasks/<task_id>", include_in_schema=False)
def get_task(task_id: str):
    if task_id.endswith(":cancel"):  # (the cancel route, asked with GET: say so, rather than no such task)
        return Response(status_code=405, content_type="application/json", headers={"Allow": "POST"}, body=json.dumps(
            {"error": f"GET is not allowed on {API_PREFIX}/tasks/{task_id}; use POST"}))
    return _json(tes().get(task_id, _one("view") or "MINIMAL"))
