"""Local mode: the API, a worker, a reaper and Redis on one machine.

The HTTP server turns each request into an API Gateway REST proxy event and calls the very
``lambda_handler`` that Lambda calls, so routing, validation and errors are the deployed code's.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute, request_response
from starlette.websockets import WebSocket

from dcc.bootstrap import build_service
from dcc.errors import DccError, ObjectNotFound, StorageError, StoreUnavailable
from dcc.local_storage import FileLinks, LocalStorage
from dcc.service import keep_results
from dcc.settings import Settings
from worker_agent.files import DirInUse, hold_dir

log = logging.getLogger("dcc.local")
REQUEST_THREADS = 1000
"""Requests resolved at once, each in a thread: one waiting on a job (a long-poll, a fast job) keeps its thread
while the others go on (Starlette's default pool, 40 threads, froze the API once 40 requests waited)."""
MAX_BODY_BYTES = 10 * 1024 * 1024
"""The largest request body, as on AWS, where API Gateway refuses a larger one."""
FILE_LINKS = FileLinks("/_files")
"""Output downloads redirect here (as S3's presigned URLs do on AWS): streamed from disk, not through the API."""


def proxy_event(*, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes,
                source_ip: str = "127.0.0.1") -> dict[str, Any]:
    """The API Gateway REST proxy event for one HTTP request."""
    multi_query: dict[str, list[str]] = {}
    for k, v in query:
        multi_query.setdefault(k, []).append(v)
    # as the deployed REST API sends every body (its binary media types are */*): base64, so that local mode runs the
    # handler's path on AWS
    text = base64.b64encode(body).decode()
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": path, "stage": "local",
            "requestId": uuid.uuid4().hex, "identity": {"sourceIp": source_ip},
        },
        "body": text if body else None,
        "isBase64Encoded": bool(body),
    }


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1") if raw else quote(request.url.path)


def build_app() -> Starlette:
    """The ASGI app that serves the API through ``functions.api.handler.lambda_handler``."""
    from functions.api.handler import resolve_serially

    threads: list[anyio.CapacityLimiter] = []  # (made in the event loop, on the first request)

    async def proxy(request: Request) -> Response:
        received = bytearray()
        async for chunk in request.stream():  # (not all at once: a huge body is refused as it arrives)
            received += chunk
            if len(received) > MAX_BODY_BYTES:
                return JSONResponse({"error": f"the request body is larger than {MAX_BODY_BYTES} bytes, the most "
                                              "API Gateway takes (put large data in URL inputs)"}, 413)
        event = proxy_event(
            # as API Gateway REST APIs do, pass the path still percent-encoded (the handler decodes it once)
            method=request.method, path=_raw_path(request), query=list(request.query_params.multi_items()),
            headers=dict(request.headers), body=bytes(received),
            source_ip=request.client.host if request.client else "127.0.0.1",
        )
        if not threads:
            threads.append(anyio.CapacityLimiter(REQUEST_THREADS))
        reply = await anyio.to_thread.run_sync(resolve_serially, event, limiter=threads[0])
        body = reply.get("body") or ""
        data = base64.b64decode(body) if reply.get("isBase64Encoded") else body.encode()
        headers = {k: v for k, v in (reply.get("headers") or {}).items()}
        for k, values in (reply.get("multiValueHeaders") or {}).items():
            headers[k] = ", ".join(values)
        if request.method == "HEAD":  # no body, and the Content-Length the handler gave: that of the GET's body
            data = b""
        else:  # the length of the body sent, which Starlette measures
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        return Response(content=data, status_code=int(reply["statusCode"]), headers=headers)

    async def live(ws: WebSocket) -> None:
        from dcc.live import LiveSession
        from functions.api import handler

        service = handler.current_service()
        await LiveSession(ws, service, service.settings.redis_url).run()

    async def files(request: Request) -> Response:
        from functions.api import handler

        key = request.path_params["key"]
        if not FILE_LINKS.check(key, request.query_params.get("expires", ""),
                                request.query_params.get("signature", "")):
            return JSONResponse({"error": "this link is not valid or has expired: ask the API for a new one"}, 403)
        try:
            body = handler.current_service().storage.open(key)
        except ObjectNotFound:
            return JSONResponse({"error": "no such file"}, 404)
        except StorageError as exc:
            return JSONResponse({"error": f"job storage failed: {exc}"}, 503)
        chunks = iter(lambda: body.read(1 << 20), b"")  # (read in the thread pool: the API stays free)
        return StreamingResponse(chunks, media_type="application/octet-stream",
                                 background=BackgroundTask(body.close))

    return Starlette(routes=[WebSocketRoute("/v1/ws", live), Route(f"{FILE_LINKS.route}/{{key:path}}", files),
                             Route("/{path:path}", _EveryMethod(request_response(proxy)))])


class _EveryMethod:
    """An ASGI app as a route's endpoint, which Starlette then routes every method to (a function endpoint takes
    only those listed, and answers others itself, in plain text): the API answers a method it does not take with
    its own JSON 405, naming those the route takes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def hold_data_dir(data_dir: Path) -> Any:
    """Lock ``data_dir`` for this process (the lock goes with it, however it ends); DccError if a live local mode
    holds it already. Returns the open lock file: keep it open."""
    try:  # (0700: jobs' inputs, outputs and work folders, and Redis's file are this user's alone)
        return hold_dir(data_dir, "local.lock")
    except DirInUse as exc:
        raise DccError(f"{data_dir} is in use by another dcc local (pid {exc.owner}): stop it, or use another "
                       "--data-dir") from None


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (an ended one may linger unreaped: state Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


class RedisProcess:
    """A redis-server of local mode's own, persisted (AOF) under ``directory``.

    One redis-server per directory: a server left by a local mode that was killed (SIGKILL gives it no chance
    to stop its child) is stopped before a new one starts, so two never write the same append-only file.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory.absolute()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, *, port: int = 0) -> str:
        """Start it (on ``port``, else a free one); its URL."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise DccError("redis-server is not installed: install it (Debian: apt-get install redis-server) "
                           "or set REDIS_URL to a Redis you run")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        if port:
            self.port = port
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        with (self.dir / "redis.log").open("ab") as said:  # (the server keeps its own copy of the file)
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
                 "--appendfsync", "everysec", "--save", "60 1", "--pidfile", str(self.pidfile)],
                stdout=said, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._answering():
                return f"redis://127.0.0.1:{self.port}/0"
            time.sleep(0.05)
        raise DccError(f"redis-server did not start on port {self.port}; see {self.dir / 'redis.log'}")

    def _answering(self) -> bool:
        """Whether our redis-server answers on its port (not another process that holds the port)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=0.2)
        try:
            return self.proc is not None and int(client.info("server")["process_id"]) == self.proc.pid
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False
        finally:
            client.close()

    @property
    def pidfile(self) -> Path:
        return self.dir / "redis.pid"

    def _stop_orphan(self) -> None:
        try:
            pid = int(self.pidfile.read_text().strip())
            # redis-server retitles itself, so it is known by its name and its working directory (--dir)
            ours = (Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server"
                    and os.readlink(f"/proc/{pid}/cwd") == str(self.dir.resolve()))
        except (OSError, ValueError):
            return  # no server left, or not one we can see
        if not ours or not _running(pid):
            return  # the pid was reused by something else, or it has ended
        log.warning("stopping redis-server %d, left running by an earlier local mode on %s", pid, self.dir)
        os.kill(pid, signal.SIGTERM)  # it writes out its append-only file and exits
        deadline = time.monotonic() + 30
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(pid):
            raise DccError(f"redis-server {pid} (left by an earlier local mode on {self.dir}) did not stop")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart_if_ended(self) -> bool:
        """Start it again, on its port and from its append-only file, if it ended (killed, or out of memory)
        while local mode runs; whether it had."""
        if self.proc is None or self.proc.poll() is None:
            return False
        log.warning("redis-server ended (exit status %s): starting it again on port %d; see %s",
                    self.proc.returncode, self.port, self.dir / "redis.log")
        self.start(port=self.port)
        return True


class LocalDcc:
    """Everything local mode runs, started and stopped together (also what the tests use)."""

    def __init__(self, data_dir: Path, *, workers: int | None = None, settings: Settings | None = None,
                 reap_seconds: float = 2.0) -> None:
        self.data_dir = data_dir
        self.slots = workers
        self.base_settings = settings or Settings.from_env()
        self.reap_seconds = reap_seconds
        self.redis: RedisProcess | None = None
        self.worker: Any = None
        self.settings = self.base_settings
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._lock: Any = None

    def start(self) -> None:
        from functions.api import handler

        self._lock = hold_data_dir(self.data_dir)  # one local mode per data dir; what a dead one left is ours
        settings = self.base_settings
        if not os.environ.get("REDIS_URL") and settings.redis_url == Settings().redis_url:
            self.redis = RedisProcess(self.data_dir / "redis")
            settings = settings.with_(redis_url=self.redis.start())
        if settings.storage_url == Settings().storage_url and not os.environ.get("DCC_STORAGE"):
            settings = settings.with_(storage_url=str(self.data_dir / "storage"))
        if not settings.tes_locations:  # GA4GH TES tasks may read and write file:// URLs under DATA_DIR/tes/
            tes_dir = (self.data_dir / "tes").resolve()
            tes_dir.mkdir(parents=True, exist_ok=True)
            settings = settings.with_(tes_locations=(f"file://{tes_dir}/",))
        if not settings.disable_worker:
            from worker_agent.__main__ import build_worker

            # the worker keeps its id in its work dir (work/worker-id): the containers and folders a killed run
            # left are found and removed, and the jobs they ran, whose leases lapse, run again
            self.worker = build_worker(settings, slots=self.slots, workdir=self.data_dir / "work")
            if settings.max_gpus_per_worker is None:  # a GPU job no worker here can run is refused, not parked
                settings = settings.with_(max_gpus_per_worker=self.worker.config.slots.get("gpu", 0))
        self.settings = settings
        storage = None
        if not settings.storage_url.startswith("s3://"):  # its files are served by this process, by signed links
            storage = LocalStorage(Path(settings.storage_url.removeprefix("file://")), links=FILE_LINKS)
        self.service = build_service(settings, storage=storage)
        self.service.blocking = handler.stepped_aside
        handler.configure(self.service)
        if self.worker is not None:
            self.worker.start()
        self._reaper = threading.Thread(target=self._reap_loop, name="dcc-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reap_seconds):
            if self.redis is not None:
                try:
                    self.redis.restart_if_ended()
                except Exception:  # (e.g. no memory to fork: try again at the next round)
                    log.exception("could not start redis-server again")
            try:
                changed = self.service.store.reap()
                if changed:
                    log.info("reaper: %s", changed)
                    keep_results(self.service.store, self.service.storage,
                                 [job_id for job_id, state in changed.items() if state.terminal])
            except StoreUnavailable as exc:
                log.warning("reaper: %s", exc)
            except Exception:  # (e.g. Redis refusing writes with its disk full): never let the reaper die
                log.exception("reaper failed")

    def stop_worker(self, *, grace: float | None = None) -> None:
        """Stop the worker: it claims nothing more, lets its jobs finish within ``grace`` (its own,
        ``DCC_GRACE_SECONDS``, unless given) and hands the rest back. The API goes on answering meanwhile."""
        if self.worker is not None:
            self.worker.stop(grace=grace)

    def stop(self, *, grace: float | None = None) -> None:
        """Stop the worker (finishing or handing back its jobs; ``grace``: its own, ``DCC_GRACE_SECONDS``, unless
        given), the reaper and our redis-server."""
        from functions.api import handler

        self._stop.set()
        if self._reaper is not None:  # (it may be starting our redis-server again: not after this stops it)
            self._reaper.join(timeout=60)  # (a start takes at most ~40 s: 30 to stop an orphan, 10 to answer)
        if self.worker is not None:
            self.worker.stop(grace=grace)
        handler.configure(None)
        if self.redis is not None:
            self.redis.stop()
        if self._lock is not None:
            self._lock.close()  # (releases the lock)
            self._lock = None


def serve(port: int = 8000, data_dir: Path | None = None, workers: int | None = None,
          host: str = "127.0.0.1") -> None:
    """Run local mode in the foreground until interrupted."""
    import uvicorn

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    local = LocalDcc(data_dir or Path.home() / ".dcc", workers=workers)

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    # uvicorn stops on SIGTERM and then raises it again with the handler it found: make that one unwind
    # through ``finally`` (stop the worker gracefully, stop our redis-server) instead of killing the process
    signal.signal(signal.SIGTERM, terminated)
    try:
        local.start()
        config = uvicorn.Config(build_app(), host=host, port=port, log_level="warning")
        _draining_server(config, local).run()
    finally:
        local.stop()


def _draining_server(config: Any, local: LocalDcc) -> Any:
    """uvicorn's server, made to stop the worker first on SIGTERM or Ctrl-C: the API answers (status, cancel,
    results) while running jobs finish within their grace; then it stops. A second signal stops it at once."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        draining: threading.Thread | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.draining is not None:  # asked again: stop now
                super().handle_exit(sig, frame)
                return
            log.info("stopping: running jobs get their grace; the API answers until they are done")

            def drain() -> None:
                try:
                    local.stop_worker()
                finally:
                    super(DrainingServer, self).handle_exit(sig, None)

            self.draining = threading.Thread(target=drain, name="dcc-drain", daemon=True)
            self.draining.start()

    return DrainingServer(config)
