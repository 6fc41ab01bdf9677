"""Job state changes pushed to API Gateway WebSocket connections (the AWS side of live status).

Subscriptions live in Redis: ``P:ws:job:<id>`` is the set of connection ids watching a job,
``P:ws:conn:<connection>`` the set of jobs a connection watches (so a disconnect cleans up), ``P:ws:sent:<id>``
where the last view pushed for a job stands (``change_order``). Whoever changes a job's state (worker, API,
reaper) calls ``push`` when a WebSocket endpoint is configured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import botocore.exceptions

from dcc.jobs import TERMINAL_STATES
from dcc.replies import MESSAGE_BUDGET, fit_job_view, message_bytes
from dcc.store import JobStore

CONNECTION_TTL = 2 * 3600  # API Gateway closes WebSocket connections after 2 hours at most
log = logging.getLogger(__name__)
MAX_SUBSCRIPTIONS = 1000  # job ids one connection watches (here and in local mode, dcc.live)
USAGE = 'send {"action": "subscribe" | "unsubscribe", "jobIds": ["<id>", ...]} (at most 1000 ids)'
_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


# (both run even when Redis is full, as the job store's own bookkeeping does: live status must not stop then)
_NEWER = """#!lua flags=allow-oom
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


_WATCH = """#!lua flags=allow-oom
local prefix, connection, most, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local count = redis.call('SCARD', KEYS[1])
local out = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local known = redis.call('SISMEMBER', KEYS[1], id) == 1
  if known or count < most then
    if not known then
      redis.call('SADD', KEYS[1], id)
      count = count + 1
    end
    local job = prefix .. ':ws:job:' .. id
    redis.call('SADD', job, connection)
    redis.call('EXPIRE', job, ttl)
    out[#out + 1] = id
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return out
"""


def change_order(view: dict[str, Any]) -> int:
    """Where a job's view stands among its changes: a later change orders higher. Attempts only grow, and within
    one the job runs, may be queued again (a retry), or ends; so a message never has to go out after a newer one."""
    state = view.get("state")
    rank = 3 if state in _TERMINAL else 2 if state == "queued" else 1
    return int(view.get("attempts") or 0) * 4 + rank


def unknown_id(value: Any) -> dict[str, Any]:
    """The answer to a subscription to ``value``, which no job has (or, not being a string, no job can have)."""
    if isinstance(value, str):  # (no id is this long: the start is enough to say which, and a message stays small)
        return {"type": "error", "jobId": value if len(value) <= 256 else value[:256] + "…", "error": "not found"}
    if not isinstance(value, int | float | bool) and value is not None:
        value = json.dumps(value)[:256]
    return {"type": "error", "jobId": value, "error": "not a job id: ids are strings"}


def job_message(view: dict[str, Any]) -> dict[str, Any]:
    """The message that carries a job's view, its logs and inline files cut if it would pass ``MESSAGE_BUDGET``."""
    return {"type": "job", "job": fit_job_view(view, MESSAGE_BUDGET, message_bytes)}


class WebsocketPusher:
    """Posts job views to subscribed connections through the API Gateway management API."""

    def __init__(self, store: JobStore, client: Any, *, find: Callable[[str], dict[str, Any] | None] | None = None):
        self.store = store
        self.client = client  # boto3 "apigatewaymanagementapi" client for the WebSocket stage
        self.find = find or self._from_store
        """The job's view by id, or None if unknown (the API also reads expired jobs' result.json)."""
        self._newer_script = store.redis.register_script(_NEWER)
        self._watch_script = store.redis.register_script(_WATCH)

    def _from_store(self, job_id: str) -> dict[str, Any] | None:
        record = self.store.get(job_id)
        return record.view() if record is not None else None

    def _newer(self, job_id: str, order: int) -> bool:
        """Record ``order`` as the job's last pushed, if it is newer than that; whether it was."""
        return bool(self._newer_script(keys=[f"{self.store.prefix}:ws:sent:{job_id}"], args=[order, CONNECTION_TTL]))

    def _job_key(self, job_id: str) -> str:
        return f"{self.store.prefix}:ws:job:{job_id}"

    def _conn_key(self, connection: str) -> str:
        return f"{self.store.prefix}:ws:conn:{connection}"

    def subscribe(self, connection: str, job_ids: list[str], unknown: Sequence[Any] = ()) -> None:
        """Record the subscriptions, then send each job's current state at once; ``unknown``: ids that cannot
        be jobs' (each is answered "not found", as a job that does not exist is).

        An id no job has yet stays watched (a job submitted under it later is pushed from ``queued`` on); a
        connection watches at most ``MAX_SUBSCRIPTIONS`` ids, and those past it are refused by name.
        """
        job_ids = list(dict.fromkeys(job_ids))
        watched = self._watch(connection, job_ids)
        for job_id in job_ids:
            if job_id not in watched:
                self.tell(connection, {"type": "error", "jobId": job_id,
                                        "error": f"not watched: a connection watches at most {MAX_SUBSCRIPTIONS} jobs"})
                continue
            view = self.find(job_id)
            self.tell(connection, job_message(view) if view else unknown_id(job_id))
            # a push of a newer change may have reached the client before this answer: then say that change again
            again = self.find(job_id) if view else None
            if again and change_order(again) > change_order(view or {}):
                self.tell(connection, job_message(again))
        for value in unknown:
            self.tell(connection, unknown_id(value))

    def _watch(self, connection: str, job_ids: list[str]) -> set[str]:
        """Record the connection as watching those of ``job_ids`` it may (those it watches already, then new ones
        while there is room), in one script: API Gateway may run two messages of a connection at once. Returns
        them."""
        if not job_ids:
            return set()
        watched = self._watch_script(keys=[self._conn_key(connection)],
                                     args=[self.store.prefix, connection, MAX_SUBSCRIPTIONS, CONNECTION_TTL, *job_ids])
        return {str(job_id) for job_id in watched}

    def unsubscribe(self, connection: str, job_ids: list[str]) -> None:
        """Stop pushing ``job_ids`` to the connection."""
        if not job_ids:
            return
        pipe = self.store.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.srem(self._job_key(job_id), connection)
        pipe.srem(self._conn_key(connection), *job_ids)
        pipe.execute()

    def disconnect(self, connection: str) -> None:
        """Forget a connection and its subscriptions."""
        jobs = self.store.redis.smembers(self._conn_key(connection))
        pipe = self.store.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.srem(self._job_key(job_id), connection)
        pipe.delete(self._conn_key(connection))
        pipe.execute()

    def push(self, job_id: str) -> int:
        """Send the job's current view to every connection watching it; returns how many got it.

        Whoever changes a job pushes it, reading the view as it is then: of two pushes close together both may
        read the later state, or the later one be read first. A view is sent only if it is newer than the last
        one pushed for the job (``change_order``), so watchers get no repeats and never an older state after a
        newer one (a change overtaken before it was read is not sent: the newer one is).
        """
        connections = self.store.redis.smembers(self._job_key(job_id))
        if not connections:
            return 0
        view = self.find(job_id)
        if view is None or not self._newer(job_id, change_order(view)):
            return 0
        message = job_message(view)
        return sum(self.tell(c, message) for c in connections)

    def tell(self, connection: str, message: dict[str, Any]) -> bool:
        """``post``, a failure logged rather than raised: one connection's trouble (a throttled post) must not cost
        the others, or the rest of a subscribe's answers."""
        try:
            return self.post(connection, message)
        except Exception:
            log.warning("could not push to websocket connection %s", connection, exc_info=True)
            return False

    def post(self, connection: str, message: dict[str, Any]) -> bool:
        """Send one message to the connection; False if it is gone (and then forgotten)."""
        try:
            self.client.post_to_connection(ConnectionId=connection, Data=json.dumps(message).encode())
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "GoneException":
                self.disconnect(connection)  # the client went away without a $disconnect reaching us
                return False
            raise
