"""The API Lambda: build the service once per container, resolve each API Gateway event.

Local mode calls the very same ``lambda_handler`` with events it builds from HTTP requests.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.typing import LambdaContext

from dcc.errors import (
    InputTooLarge,
    InvalidJob,
    JobNotFound,
    NotReady,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)
from dcc.service import JobService
from functions.api import tes
from functions.api.routes import router

log = logging.getLogger("dcc.api")

app = APIGatewayRestResolver(enable_validation=True)
app.include_router(router)
app.include_router(tes.router)
_service: JobService | None = None


def configure(service: JobService | None) -> None:
    """Use ``service`` for every request (local mode, tests); None: build from the environment on first use."""
    global _service
    _service = service


def current_service() -> JobService:
    """The service requests are served with (built from the environment on first use)."""
    return _get_service()


def _get_service() -> JobService:
    global _service
    if _service is None:
        from dcc.bootstrap import build_service
        from dcc.settings import Settings

        _service = build_service(Settings.from_env())
    return _service


def _error(status: int, message: str, **extra: Any) -> Response[Any]:
    return Response(status_code=status, content_type="application/json", body={"error": message, **extra})


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


@app.exception_handler(RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response[Any]:
    messages = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        messages.append(f"{_location(tuple(err.get('loc', ())))}: {msg}")
    return _error(400, "; ".join(messages), details=[{"field": _location(tuple(e.get("loc", ()))),
                                                       "message": str(e.get("msg"))} for e in exc.errors()])


@app.exception_handler(InputTooLarge)
def _too_large(exc: InputTooLarge) -> Response[Any]:
    return _error(413, str(exc), field=exc.field)


@app.exception_handler(InvalidJob)
def _invalid(exc: InvalidJob) -> Response[Any]:
    return _error(400, str(exc), field=exc.field)


@app.exception_handler([JobNotFound, ObjectNotFound])
def _not_found(exc: Exception) -> Response[Any]:
    return _error(404, str(exc))


@app.exception_handler(NotReady)
def _not_ready(exc: NotReady) -> Response[Any]:
    return _error(409, str(exc))


@app.exception_handler(StoreUnavailable)
def _store_down(exc: StoreUnavailable) -> Response[Any]:
    log.warning("store unavailable: %s", exc)
    return _error(503, "the job store (Redis) is unavailable; try again shortly")


@app.exception_handler(StorageError)
def _storage_down(exc: StorageError) -> Response[Any]:
    log.warning("storage error: %s", exc)
    return _error(503, f"job storage failed: {exc}")


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(status_code=200, content_type="application/json",
                    body=app.get_openapi_json_schema(title="dcc", version="0.1.0"))


def lambda_handler(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Resolve one API Gateway REST (proxy) event."""
    router.context["service"] = _get_service()
    if event.get("path"):
        event = {**event, "path": unquote(event["path"])}
    return app.resolve(event, context)  # type: ignore[arg-type]  # local mode passes no context
