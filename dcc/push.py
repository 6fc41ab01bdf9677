"""Job state changes pushed to API Gateway WebSocket connections (the AWS side of live status).

Subscriptions live in Redis: ``P:ws:job:<id>`` is the set of connection ids watching a job,
``P:ws:conn:<connection>`` the set of jobs a connection watches (so a disconnect cleans up). Whoever
changes a job's state (worker, API, reaper) calls ``push`` when a WebSocket endpoint is configured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import botocore.exceptions

from dcc.store import JobStore

CONNECTION_TTL = 2 * 3600  # API Gateway closes WebSocket connections after 2 hours at most


class WebsocketPusher:
    """Posts job views to subscribed connections through the API Gateway management API."""

    def __init__(self, store: JobStore, client: Any, *, find: Callable[[str], dict[str, Any] | None] | None = None):
        self.store = store
        self.client = client  # boto3 "apigatewaymanagementapi" client for the WebSocket stage
        self.find = find or self._from_store
        """The job's view by id, or None if unknown (the API also reads expired jobs' result.json)."""

    def _from_store(self, job_id: str) -> dict[str, Any] | None:
        record = self.store.get(job_id)
        return record.view() if record is not None else None

    def _job_key(self, job_id: str) -> str:
        return f"{self.store.prefix}:ws:job:{job_id}"

    def _conn_key(self, connection: str) -> str:
        return f"{self.store.prefix}:ws:conn:{connection}"

    def subscribe(self, connection: str, job_ids: list[str], unknown: Sequence[str] = ()) -> None:
        """Record the subscriptions, then send each job's current state at once; ``unknown``: ids that cannot
        be jobs' (each is answered "not found", as a job that does not exist is)."""
        if job_ids:
            pipe = self.store.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.sadd(self._job_key(job_id), connection)
                pipe.expire(self._job_key(job_id), CONNECTION_TTL)
            pipe.sadd(self._conn_key(connection), *job_ids)
            pipe.expire(self._conn_key(connection), CONNECTION_TTL)
            pipe.execute()
        for job_id in job_ids:
            view = self.find(job_id)
            message = {"type": "job", "job": view} if view else {"type": "error", "jobId": job_id, "error": "not found"}
            self._post(connection, message)
        for job_id in unknown:
            self._post(connection, {"type": "error", "jobId": job_id, "error": "not found"})

    def disconnect(self, connection: str) -> None:
        """Forget a connection and its subscriptions."""
        jobs = self.store.redis.smembers(self._conn_key(connection))
        pipe = self.store.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.srem(self._job_key(job_id), connection)
        pipe.delete(self._conn_key(connection))
        pipe.execute()

    def push(self, job_id: str) -> int:
        """Send the job's current view to every connection watching it; returns how many got it."""
        connections = self.store.redis.smembers(self._job_key(job_id))
        if not connections:
            return 0
        view = self.find(job_id)
        if view is None:
            return 0
        message = {"type": "job", "job": view}
        return sum(self._post(c, message) for c in connections)

    def _post(self, connection: str, message: dict[str, Any]) -> bool:
        try:
            self.client.post_to_connection(ConnectionId=connection, Data=json.dumps(message).encode())
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "GoneException":
                self.disconnect(connection)  # the client went away without a $disconnect reaching us
                return False
            raise
