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
from dcc.push import MAX_SUBSCRIPTIONS, USAGE, change_order, job_message, unknown_id
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
        self.sent: dict[str, tuple[float, int]] = {}
        """When the job sent last of each watched id was submitted, and where that view stands (``change_order``):
        none older goes after it (a job submitted later under the id starts afresh)."""

    async def run(self) -> None:
        """Serve the client until it disconnects."""
        await self.ws.accept()
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    await self.handle(message["text"])
                else:  # a binary frame
                    await self.send({"type": "error", "error": "send text frames: " + USAGE})
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
            # (a string would be taken letter by letter; a message of more ids than a connection may watch is
            # refused whole rather than answered id by id)
            if not isinstance(request["jobIds"], list) or len(request["jobIds"]) > MAX_SUBSCRIPTIONS:
                raise TypeError("jobIds must be a list of at most 1000 ids")
            action, (ids, unknown) = request["action"], split_job_ids(request["jobIds"])
        except (ValueError, KeyError, TypeError, RecursionError):
            await self.send({"type": "error", "error": USAGE})
            return
        if action == "subscribe":
            await self.subscribe(ids)
            for value in unknown:  # an id that cannot be a job's is one not found
                await self.send(unknown_id(value))
        elif action == "unsubscribe":
            gone = [c for c in map(self.store.events_channel, ids) if self.channels.pop(c, None)]
            for job_id in ids:
                self.sent.pop(job_id, None)
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
                await self.send_job(job_id, asked=True)
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

    async def send_job(self, job_id: str, *, asked: bool = False) -> None:
        """Send the job's current view (from Redis, or its result.json once the record expired), unless one as
        new or newer went already (``asked``: a subscribe, answered even if nothing changed since).

        Reading the view takes a moment, in which the listener (or a subscribe) may have sent a newer one: the
        check and the send have no wait between them, so nothing older goes out after it. A change overtaken
        before it was read is not sent: the newer one is.
        """
        h = await self.redis.hgetall(self.store.job_key(job_id))
        view: dict[str, Any] | None = dict(record_from_hash(job_id, h).view()) if h else None
        if view is None:
            try:
                view = dict(await asyncio.to_thread(lambda: self.service.get(job_id).view()))
            except DccError:
                if job_id not in self.sent:  # (it was submitted while this was read: the listener sent it)
                    await self.send(unknown_id(job_id))
                return
        stamp = (float((view.get("timings") or {}).get("submitted") or 0.0), change_order(view))
        last = self.sent.get(job_id, (-1.0, -1))
        if stamp < last or (stamp == last and not asked):
            return
        self.sent[job_id] = stamp
        await self.send(job_message(view))

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message))
