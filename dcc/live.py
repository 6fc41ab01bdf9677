"""Live job status for websocket clients in local mode: subscribe to job ids, receive every state change.

Protocol (JSON text frames): the client sends ``{"action": "subscribe", "jobIds": [...]}`` (or
``"unsubscribe"``); the server answers each id at once with ``{"type": "job", "job": <job view>}`` (or
``{"type": "error", "jobId": ..., "error": "not found"}``), then sends the view again on every change
(queued, running, and the terminal state with its result summary). Subscriptions end with the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from starlette.websockets import WebSocket, WebSocketDisconnect

from dcc.errors import DccError
from dcc.push import MAX_SUBSCRIPTIONS, USAGE
from dcc.service import JobService, split_job_ids
from dcc.store import record_from_hash


class LiveSession:
    """One websocket client's subscriptions, fed by the jobs' Redis pub/sub channels."""

    def __init__(self, ws: WebSocket, service: JobService, redis_url: str) -> None:
        self.ws = ws
        self.service = service
        self.store = service.store
        self.redis: Any = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=3)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.channels: dict[str, str] = {}
        self.listener: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Serve the client until it disconnects."""
        await self.ws.accept()
        try:
            while True:
                await self.handle(await self.ws.receive_text())
        except WebSocketDisconnect:
            pass
        finally:
            if self.listener is not None:
                self.listener.cancel()
            await self.pubsub.aclose()
            await self.redis.aclose()

    async def handle(self, text: str) -> None:
        """Act on one client message."""
        try:
            request = json.loads(text)
            if not isinstance(request["jobIds"], list):  # (a string would be taken letter by letter)
                raise TypeError("jobIds must be a list")
            action, (ids, unknown) = request["action"], split_job_ids(request["jobIds"])
        except (ValueError, KeyError, TypeError):
            await self.send({"type": "error", "error": USAGE})
            return
        if action == "subscribe":
            await self.subscribe(ids)
            for job_id in unknown:  # an id that cannot be a job's is one not found
                await self.send({"type": "error", "jobId": job_id, "error": "not found"})
        elif action == "unsubscribe":
            gone = [c for c in map(self.store.events_channel, ids) if self.channels.pop(c, None)]
            if gone:
                await self.pubsub.unsubscribe(*gone)
        else:
            await self.send({"type": "error", "error": USAGE})

    async def subscribe(self, ids: list[str]) -> None:
        """Watch ``ids``, and send each one's current state at once (a finished job is answered too)."""
        room = MAX_SUBSCRIPTIONS - len(self.channels)
        new = [i for i in ids if self.store.events_channel(i) not in self.channels][:room]
        if new:
            self.channels.update({self.store.events_channel(i): i for i in new})
            await self.pubsub.subscribe(*(self.store.events_channel(i) for i in new))
            if self.listener is None:
                self.listener = asyncio.create_task(self._listen())
        for job_id in ids:
            if self.store.events_channel(job_id) in self.channels:
                await self.send_job(job_id)
            else:  # past the limit: say so rather than answer once and then stay silent
                await self.send({"type": "error", "jobId": job_id,
                                 "error": f"not watched: a connection watches at most {MAX_SUBSCRIPTIONS} jobs"})

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self.pubsub.listen():
                    if message.get("type") == "message" and message["channel"] in self.channels:
                        await self.send_job(self.channels[message["channel"]])
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                await self._resubscribe()
                continue
            if not self.pubsub.subscribed:  # nothing watched (listen() returns at once): the next subscribe
                self.listener = None  # starts another listener
                return

    async def _resubscribe(self) -> None:
        """After Redis went away: subscribe again once it is back, and send each watched job as it is now
        (a change published meanwhile was lost with the connection)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.pubsub.aclose()
                self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                if self.channels:
                    await self.pubsub.subscribe(*self.channels)
                for job_id in list(self.channels.values()):
                    await self.send_job(job_id)
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                continue

    async def send_job(self, job_id: str) -> None:
        """Send the job's current view (from Redis, or its result.json once the record expired)."""
        h = await self.redis.hgetall(self.store.job_key(job_id))
        if h:
            await self.send({"type": "job", "job": record_from_hash(job_id, h).view()})
            return
        try:
            view = await asyncio.to_thread(lambda: self.service.get(job_id).view())
            await self.send({"type": "job", "job": view})
        except DccError:
            await self.send({"type": "error", "jobId": job_id, "error": "not found"})

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message))
