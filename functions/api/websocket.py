"""The WebSocket API Lambda: ``$connect``, ``$disconnect`` and ``subscribe`` (live job status on AWS).

A client connects, then sends ``{"action": "subscribe", "jobIds": [...]}``; it gets each job's current
state at once and every later change, pushed by ``dcc.push.WebsocketPusher``. ``unsubscribe`` stops that;
any other message (the ``$default`` route) is answered with the usage.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3

from dcc.errors import DccError
from dcc.push import MAX_SUBSCRIPTIONS, USAGE, WebsocketPusher
from dcc.service import split_job_ids
from functions.api import handler as api

_pusher: WebsocketPusher | None = None


def configure(pusher: WebsocketPusher | None) -> None:
    """Use ``pusher`` (tests); None: build one from the environment and the event on first use."""
    global _pusher
    _pusher = pusher


def _get_pusher(event: dict[str, Any]) -> WebsocketPusher:
    global _pusher
    if _pusher is None:
        ctx = event["requestContext"]
        endpoint = (os.environ.get("DCC_WEBSOCKET_ENDPOINT") or os.environ.get("DCC_WEBSOCKET_CALLBACK_URL")
                    or f"https://{ctx['domainName']}/{ctx['stage']}")
        client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)
        service = api.current_service()
        _pusher = WebsocketPusher(service.store, client, find=lambda job_id: _view(service, job_id))
    return _pusher


def _view(service: Any, job_id: str) -> dict[str, Any] | None:
    try:
        return dict(service.get(job_id).view())
    except DccError:
        return None


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Route a WebSocket API event."""
    ctx = event["requestContext"]
    route, connection = ctx["routeKey"], ctx["connectionId"]
    if route == "$connect":
        return {"statusCode": 200}
    pusher = _get_pusher(event)
    if route == "$disconnect":
        pusher.disconnect(connection)
        return {"statusCode": 200}
    try:
        body = json.loads(event.get("body") or "{}")
        if route not in ("subscribe", "unsubscribe") or body.get("action") != route:
            raise ValueError("unknown action")
        if not isinstance(body["jobIds"], list) or len(body["jobIds"]) > MAX_SUBSCRIPTIONS:  # (refused whole)
            raise TypeError("jobIds must be a list of at most 1000 ids")
        ids, unknown = split_job_ids(body["jobIds"])  # an id that cannot be a job's is one not found
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        # told over the connection, as local mode does (a route's return value reaches no client without a
        # route response)
        pusher.tell(connection, {"type": "error", "error": USAGE})
        return {"statusCode": 400, "body": USAGE}
    if route == "unsubscribe":
        pusher.unsubscribe(connection, ids)
    else:
        pusher.subscribe(connection, ids, unknown)
    return {"statusCode": 200}
