"""The API Lambda: build the service once per container, resolve each API Gateway event.

Local mode calls the very same ``lambda_handler`` with events it builds from HTTP requests.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
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
from dcc.replies import LAMBDA_REPLY_BYTES
from dcc.service import JobService
from functions.api import tes
from functions.api.routes import RUNS_JOBS, router

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


MAX_MESSAGE = 2000
"""The longest error message a reply carries: a message may quote the value it refuses, which may be megabytes."""
MAX_DETAILS = 100
"""The most invalid fields a 400 lists in ``details`` (its message says how many there were)."""


def _short(text: str, most: int = MAX_MESSAGE) -> str:
    """``text``, or its start and how long it was, if it is longer than ``most`` characters."""
    return text if len(text) <= most else f"{text[:most - 40]}… ({len(text)} characters in all)"


def _error(status: int, message: str, **extra: Any) -> Response[Any]:
    return Response(status_code=status, content_type="application/json", body={"error": _short(message), **extra})


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _field_error(err: dict[str, Any]) -> tuple[str, str]:
    """The field and the message of one validation error (a body that is not JSON is the body's, saying why)."""
    if err.get("type") == "json_invalid":
        return "body", f"not valid JSON: {(err.get('ctx') or {}).get('error', 'cannot be decoded')}"
    return _location(tuple(err.get("loc", ()))), str(err.get("msg", "invalid")).removeprefix("Value error, ")


@app.exception_handler(RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response[Any]:
    errors = [(_short(field, 200), _short(msg, 500)) for field, msg in map(_field_error, exc.errors())]
    more = f" (and {len(errors) - MAX_DETAILS} more)" if len(errors) > MAX_DETAILS else ""
    return _error(400, _short("; ".join(f"{f}: {m}" for f, m in errors[:MAX_DETAILS]), MAX_MESSAGE - 40) + more,
                  details=[{"field": field, "message": msg} for field, msg in errors[:MAX_DETAILS]])


@app.exception_handler(InputTooLarge)
def _too_large(exc: InputTooLarge) -> Response[Any]:
    return _error(413, str(exc), **({"field": exc.field} if exc.field else {}))


@app.exception_handler(InvalidJob)
def _invalid(exc: InvalidJob) -> Response[Any]:  # (in the shape of a 400 of validation: ``details`` too)
    if exc.field is None:
        return _error(400, str(exc))
    message = _short(str(exc))
    return _error(400, message, field=exc.field,
                  details=[{"field": exc.field, "message": message.removeprefix(f"{exc.field}: ")}])


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


def _routes_at(path: str) -> list[Any]:
    """The routes whose rule matches ``path``, whatever their method."""
    return [route for route in app._static_routes + app._dynamic_routes if route.rule.match(path)]


def _methods_at(path: str) -> list[str]:
    """The methods some route answers at ``path`` (HEAD wherever GET is, but on a route that may run jobs)."""
    routes = _routes_at(path)
    methods = {route.method for route in routes}
    if any(route.method == "GET" and route.func not in RUNS_JOBS for route in routes):
        methods.add("HEAD")
    return sorted(methods)


@app.not_found
def _no_route(exc: Exception) -> Response[Any]:
    event = app.current_event
    allowed = _methods_at(app._remove_prefix(event.path))
    if allowed:
        reply = _error(405, f"{event.http_method} is not allowed on {event.path}; use {', '.join(allowed)}")
        reply.headers["Allow"] = ", ".join(allowed)
        return reply
    return _error(404, f"no such route: {event.http_method} {event.path}")


@app.exception_handler(UnicodeDecodeError)
def _not_utf8(exc: UnicodeDecodeError) -> Response[Any]:
    if not app.current_event.body:
        return _unexpected(exc)
    return _error(400, "the body is not valid UTF-8 (JSON bodies must be)")


@app.exception_handler(binascii.Error)
def _not_base64(exc: binascii.Error) -> Response[Any]:
    if not app.current_event.body:
        return _unexpected(exc)
    return _error(400, "the body is marked base64-encoded (isBase64Encoded) but is not valid base64")


@app.exception_handler(RecursionError)
def _too_deep(exc: RecursionError) -> Response[Any]:
    if not app.current_event.body:
        return _unexpected(exc)
    return _error(400, "the body nests too deeply")


@app.exception_handler(RequestUnsupportedContentType)
def _content_type(exc: RequestUnsupportedContentType) -> Response[Any]:
    return _error(415, "unsupported content type: send the body as application/json")


@app.exception_handler(ServiceError)
def _service_error(exc: ServiceError) -> Response[Any]:  # Powertools' own HTTP errors, in our shape
    return _error(exc.status_code, str(exc.msg))


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[Any]:  # a bug: say so in JSON (and log it), not a dropped connection
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):  # json.loads of a huge number
        return _error(400, "a number in the body has too many digits")
    log.exception("unexpected error")
    return _error(500, f"internal error ({type(exc).__name__}); it has been logged")


_ERROR_SCHEMA = {
    "title": "Error", "type": "object", "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what is wrong, naming the field"},
        "field": {"type": "string", "description": "the field at fault, when there is one"},
        "details": {"type": "array", "description": "one entry per invalid field",
                    "items": {"type": "object", "required": ["field", "message"],
                              "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
    },
}
_ERROR_REPLY = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document, with the errors as this API sends them.

    Powertools declares a 422 in FastAPI's shape on every route; this API answers a bad request with a 400
    in its own shape (``{"error": …, "details": […]}``), so the document says that instead.
    """
    doc: dict[str, Any] = json.loads(app.get_openapi_json_schema(title="dcc", version="0.1.0"))
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault("400", {"description": "the request is invalid", **_ERROR_REPLY})
            responses.setdefault("503", {"description": "the job store or storage is unavailable; try again",
                                         **_ERROR_REPLY})
    _declare_paths_and_replies(doc["paths"])
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(unused, None)
    schemas["Error"] = _ERROR_SCHEMA
    return doc


_OUTPUT_PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "the output's path under /outputs (slashes included)"}
_REDIRECT = {"description": "too long for a reply: a redirect to where storage serves it (a presigned URL)"}
_NOT_DONE = {"description": "a fast or waiting job not done within the wait limit: the job, queued or running"}
_ERRORS = {"404": "no such job", "409": "the job has not ended yet", "413": "too large (the message says which limit)",
           "415": "the body is not JSON"}


def _declare_paths_and_replies(paths: dict[str, Any]) -> None:
    """The outputs route with its path parameter (Powertools names it by its pattern), and each route's errors
    and redirects as it sends them."""
    for path in [p for p in paths if p.endswith("/outputs/.+")]:
        named = paths[path.removesuffix(".+") + "{path}"] = paths.pop(path)
        for operation in named.values():
            operation.setdefault("parameters", []).append(_OUTPUT_PATH)
    for path, operations in paths.items():
        for method, operation in operations.items():
            codes = ["404"] if "{job_id}" in path else []
            if path.rsplit("/", 2)[-1] in ("result", "stdout", "stderr") or "/outputs/" in path:
                codes.append("409")
                operation["responses"].setdefault("302", _REDIRECT)
            if method == "post" and path == "/v1/jobs":
                codes += ["413", "415"]
                operation["responses"].setdefault("202", _NOT_DONE)
            for code in codes:
                operation["responses"].setdefault(code, {"description": _ERRORS[code], **_ERROR_REPLY})


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(status_code=200, content_type="application/json", body=json.dumps(openapi_document()))


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _media_type_lowercased(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    media, sep, rest = value.partition(";")
    return media.strip().lower() + sep + rest


def _media_types_lowercased(event: dict[str, Any]) -> dict[str, Any]:
    """The event's headers with the Content-Type's media type in lower case: media types are case-insensitive
    (RFC 9110), and Powertools compares them as written (``APPLICATION/JSON`` was a 415)."""
    headers = {k: _media_type_lowercased(v) if k.lower() == "content-type" else v
               for k, v in (event.get("headers") or {}).items()}
    multi = {k: [_media_type_lowercased(v) for v in values] if k.lower() == "content-type" else values
             for k, values in (event.get("multiValueHeaders") or {}).items()}
    return {"headers": headers or event.get("headers"), "multiValueHeaders": multi or event.get("multiValueHeaders")}


def _plain_reply(status: int, message: str) -> dict[str, Any]:
    """A reply in the API's error shape, made without the resolver."""
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "isBase64Encoded": False,
            "body": json.dumps({"error": message})}


def lambda_handler(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Resolve one API Gateway REST (proxy) event."""
    _get_service()
    if not isinstance(event.get("httpMethod"), str) or not isinstance(event.get("path"), str):
        return _plain_reply(400, "not an API Gateway REST proxy event: no httpMethod or path")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if event.get("body") and str(headers.get("content-type") or "").lower().startswith(_FORMS):
        # Powertools would read it as form fields and report every JSON key as an unknown field
        return _plain_reply(415, "unsupported content type: send the body as JSON with Content-Type: "
                                 "application/json (curl -d sends form data unless told otherwise)")
    event = {**event, "path": unquote(event["path"]), **_media_types_lowercased(event)}
    if event.get("httpMethod") == "HEAD":
        return _head(event, context)
    return _within_limit(app.resolve(event, context))  # type: ignore[arg-type]  # local mode passes no context


def _head(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """A HEAD (curl -I, link checkers, monitors): the GET's reply without its body, its ``Content-Length`` saying
    how long that body is. A HEAD must have no side effects, so on a route that may queue jobs (``RUNS_JOBS``) it is
    a 405 that allows GET, whose error body is for the event's reader (HTTP servers send none to a HEAD)."""
    routes = _routes_at(app._remove_prefix(event["path"]))
    if any(route.method == "GET" and route.func in RUNS_JOBS for route in routes):
        refused = _plain_reply(405, _short(f"HEAD is not allowed on {event['path']}: it would run jobs, as a GET "
                                           "there does; use GET"))
        refused["headers"]["Allow"] = "GET"
        return _with_header(refused, "Content-Length", str(len(refused["body"].encode())))
    get = {**event, "httpMethod": "GET", "requestContext": {**(event.get("requestContext") or {}), "httpMethod": "GET"}}
    reply = _within_limit(app.resolve(get, context))  # type: ignore[arg-type]
    body = reply.get("body") or ""
    size = len(base64.b64decode(body)) if reply.get("isBase64Encoded") else len(body.encode())
    return {**_with_header(reply, "Content-Length", str(size)), "body": "", "isBase64Encoded": False}


def _with_header(reply: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    """``reply`` with header ``name`` (in any case) set to ``value`` alone: in ``multiValueHeaders`` when the reply
    has them, as the resolver's replies do, else in ``headers``."""
    def others(headers: Any) -> dict[str, Any]:
        return {k: v for k, v in (headers or {}).items() if k.lower() != name.lower()}

    headers, multi = others(reply.get("headers")), others(reply.get("multiValueHeaders"))
    if "multiValueHeaders" in reply:
        return {**reply, "headers": headers, "multiValueHeaders": {**multi, name: [value]}}
    return {**reply, "headers": {**headers, name: value}}


def _within_limit(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply, or a 500 that says why if it would pass what a Lambda reply may hold: API Gateway would answer a
    bare 502 (views are cut to fit, ``dcc.replies``: a reply this large is a bug, and is logged)."""
    body = reply.get("body") or ""
    if 2 * len(body) + 65536 < LAMBDA_REPLY_BYTES:  # (its JSON string at most doubles it: no need to measure)
        return reply
    size = len(json.dumps(reply).encode())
    if size <= LAMBDA_REPLY_BYTES:
        return reply
    log.error("a reply of %d bytes is over the %d a Lambda reply may hold", size, LAMBDA_REPLY_BYTES)
    return _plain_reply(500, f"the reply would take {size} bytes, over the {LAMBDA_REPLY_BYTES} a reply may hold; "
                             "this has been logged")


# Local mode: many requests at once in one process --------------------------------------------------------
# Lambda gives each process one request at a time, and Powertools' resolver keeps the request's state on
# itself and on class attributes. Local mode serves requests from a thread pool, so it resolves one at a
# time, and a request that blocks on a job (a long-poll, a fast job) steps aside while it waits.
_one_at_a_time = threading.Lock()
_holder = threading.local()


def resolve_serially(event: dict[str, Any]) -> dict[str, Any]:
    """``lambda_handler`` for a server that calls it from several threads (local mode)."""
    with _one_at_a_time:
        _holder.inside = True
        try:
            return lambda_handler(event, None)
        finally:
            _holder.inside = False


@contextmanager
def stepped_aside() -> Iterator[None]:
    """While a request blocks, let others resolve; then restore its resolver state and go on.

    Install as ``JobService.blocking``; outside ``resolve_serially`` (e.g. the websocket) it does nothing.
    """
    if not getattr(_holder, "inside", False):
        yield
        return
    saved = BaseRouter.current_event, BaseRouter.lambda_context, dict(app.context)
    _holder.inside = False
    _one_at_a_time.release()
    try:
        yield
    finally:
        _one_at_a_time.acquire()
        _holder.inside = True
        BaseRouter.current_event, BaseRouter.lambda_context = saved[0], saved[1]
        app.context.clear()
        app.context.update(saved[2])

