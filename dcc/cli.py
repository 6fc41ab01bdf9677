"""The ``dcc`` command: submit and follow jobs through the API; run local mode or a worker.

Scripts read stdout: ``submit`` prints the job id alone on a line (with ``--stdout``, on stderr: stdout is then
the job's own output, byte for byte), ``logs`` the raw log, ``outputs``
the files written. Progress and errors go to stderr. Exit codes: 0 done; a waited-for job's own exit
code (1 if it ended in error, timed_out or cancelled); 1 for an API or connection error; 2 for bad usage.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from dcc.client import DccApiError, DccClient, is_terminal
from dcc.errors import DccError
from dcc.jobs import MAX_OUTPUT_NAME, JobState, check_relative_path

ENV_API_URL = "DCC_API_URL"
DEFAULT_API_URL = "http://127.0.0.1:8000"
USAGE_ERROR = 2
PARALLEL_DOWNLOADS = 8

ClientFactory = Callable[[str], DccClient]

STATE_STYLES = {
    "queued": "dim", "running": "cyan", "succeeded": "green", "failed": "red",
    "timed_out": "red", "cancelled": "yellow", "error": "bold red",
}


class CliError(Exception):
    """A problem to report in one line before exiting with ``code``."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def _stdout() -> Console:
    # piped tables are read by programs and people alike: no 80-column squeeze there
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``message`` as one red line on stderr and exit with ``code``."""
    _stderr().print(Text(f"error: {' '.join(message.split())}", style="red"))
    raise typer.Exit(code)


class _DccGroup(TyperGroup):
    """Turns dcc's own errors into one red line and an exit code: no traceback for a refused connection."""

    def invoke(self, ctx: Any) -> Any:  # typer bundles its own click: take its Context as it comes
        try:
            return super().invoke(ctx)
        except CliError as exc:
            fail(str(exc), code=exc.code)
        except DccError as exc:
            fail(str(exc), code=1)


app = typer.Typer(cls=_DccGroup, no_args_is_help=True, add_completion=False,
                  help="Run container images as jobs on dcc.")


@dataclass
class Session:
    """The API the command talks to; the client is built on first use and closed with the context."""

    api: str
    make_client: ClientFactory
    _client: DccClient | None = None

    def client(self) -> DccClient:
        """The client for ``api``."""
        if self._client is None:
            self._client = self.make_client(self.api)
        return self._client

    def close(self) -> None:
        """Close the client if one was built."""
        if self._client is not None:
            self._client.close()


@app.callback()
def _root(
    ctx: typer.Context,
    api: Annotated[str, typer.Option("--api", envvar=ENV_API_URL, help="Base URL of the dcc API.")] = DEFAULT_API_URL,
) -> None:
    # a caller may pass a client factory as the context object (tests build clients on an httpx.MockTransport)
    factory: ClientFactory = ctx.obj if callable(ctx.obj) else DccClient
    session = Session(api, factory)
    ctx.obj = session
    ctx.call_on_close(session.close)


def _client(ctx: typer.Context) -> DccClient:
    session = ctx.find_object(Session)
    if session is None:  # only when a command is invoked without the root group
        raise CliError("internal: no API session")
    return session.client()


# ---------------------------------------------------------------------------------------------- submit


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``; CliError (usage) if it is missing, a symlink or not a regular file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise CliError(f"input file {path} does not exist", code=USAGE_ERROR) from None
    except OSError as exc:
        raise CliError(f"cannot read input file {path}: {exc.strerror}", code=USAGE_ERROR) from None
    if stat.S_ISLNK(st.st_mode):
        raise CliError(f"input file {path} is a symlink; pass the file it points to", code=USAGE_ERROR)
    if not stat.S_ISREG(st.st_mode):
        raise CliError(f"input file {path} is not a regular file", code=USAGE_ERROR)
    # O_NOFOLLOW: the path cannot be swapped for a symlink after the check; O_NONBLOCK: nor hang on a FIFO
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CliError(f"cannot read input file {path}: {exc.strerror}", code=USAGE_ERROR) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise CliError(f"input file {path} is not a regular file", code=USAGE_ERROR)
        return f.read()


def parse_input(spec: str) -> dict[str, str]:
    """``NAME=@FILE`` (the file's bytes: utf8 if they decode, else base64) or ``NAME=TEXT`` → an input."""
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise CliError(f"--input {spec!r}: expected NAME=@FILE or NAME=TEXT", code=USAGE_ERROR)
    try:
        check_relative_path(name)
    except ValueError as exc:
        raise CliError(f"--input name {name!r} {exc}", code=USAGE_ERROR) from None
    if not value.startswith("@"):
        return {"name": name, "value": value, "encoding": "utf8", "source": "inline"}
    data = read_regular_file(Path(value[1:]).expanduser())
    try:
        return {"name": name, "value": data.decode("utf-8"), "encoding": "utf8", "source": "inline"}
    except UnicodeDecodeError:
        return {"name": name, "value": base64.b64encode(data).decode("ascii"), "encoding": "base64",
                "source": "inline"}


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``K=V`` pairs → a dict (a later K wins)."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--env {pair!r}: expected NAME=VALUE", code=USAGE_ERROR)
        env[key] = value
    return env


def build_job(image: str, command: Sequence[str] | None, *, inputs: Sequence[str] = (), env: Sequence[str] = (),
              max_duration: int | None = None, cpus: float | None = None, memory: int | None = None,
              gpu: int | None = None, job_id: str | None = None,
              keep: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body for the ``submit`` options; only what was given is sent."""
    job: dict[str, Any] = {"image": image}
    if command:
        job["command"] = list(command)
    if env:
        job["env"] = parse_env(env)
    if inputs:
        job["inputs"] = [parse_input(spec) for spec in inputs]
    parameters = {k: v for k, v in {"maxDuration": max_duration, "cpus": cpus, "memory": memory,
                                    "gpu": gpu}.items() if v is not None}
    if parameters:
        job["parameters"] = parameters
    if job_id is not None:
        job["id"] = job_id
    if keep:
        job["keepOutputs"] = list(keep)
    return job


# The exit codes of a command that mirrors a job (wait, submit --wait) when the job did not exit by itself,
# after the conventions scripts already know: GNU timeout's 124, docker run's 125 for "could not run it",
# and a shell's 143 for a command ended by SIGTERM.
EXIT_TIMED_OUT = 124
EXIT_NOT_RUN = 125  # the job ended in error, or dcc could not be asked (API unreachable, refused, not found)
EXIT_CANCELLED = 143


def job_exit_code(view: dict[str, Any]) -> int:
    """The exit code that mirrors a finished job: its own (1 if it has none in 1–255), 124 timed_out, 125
    error, 143 cancelled."""
    state = view.get("state")
    if state == "succeeded":
        return 0
    code = view.get("exitCode")
    if state == "failed" and isinstance(code, int) and 0 < code < 256:
        return code
    return {"timed_out": EXIT_TIMED_OUT, "error": EXIT_NOT_RUN, "cancelled": EXIT_CANCELLED}.get(str(state), 1)


@contextmanager
def _mirroring() -> Iterator[None]:
    """dcc's own failures as ``EXIT_NOT_RUN``, so a script can tell them from the job's exit codes."""
    try:
        yield
    except DccError as exc:
        raise CliError(str(exc), code=EXIT_NOT_RUN) from exc
    except CliError as exc:
        raise CliError(str(exc), code=EXIT_NOT_RUN if exc.code == 1 else exc.code) from exc


def _run_time(view: dict[str, Any]) -> str:
    """The run time of a job that ended; for a running one, the time since a worker claimed it, so far."""
    timings = view.get("timings") or {}
    if isinstance(run := timings.get("runTime"), int | float):
        return f"{run:.2f} s"
    claimed = timings.get("claimed")
    if view.get("state") == "running" and isinstance(claimed, int | float):
        return f"{max(0.0, time.time() - claimed):.0f} s so far (since claimed)"
    return ""


def _when(ts: Any, *, short: bool = False) -> str:
    if not isinstance(ts, int | float):
        return ""
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def _state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def describe(view: dict[str, Any]) -> Text:
    """One line saying where a job is: state, worker, exit code or error."""
    state = str(view.get("state"))
    line = Text(f"{time.strftime('%H:%M:%S')} job {view.get('id')} ")
    line.append_text(_state_text(state))
    if state == "running":
        line.append(f" on {view.get('worker')} (attempt {view.get('attempts')})")
        if view.get("cancelRequested"):
            line.append(", cancel requested")
    if view.get("exitCode") is not None and is_terminal(view):
        line.append(f" (exit {view['exitCode']})")
    error = view.get("error")
    if error:
        line.append(f": {error.get('code')}: {error.get('message')}", style="red")
    return line


def follow(client: DccClient, job_id: str) -> dict[str, Any]:
    """Wait for the job with a live display on stderr, a line per change; return the final view."""
    console = _stderr()
    try:
        with console.status(f"waiting for job {job_id}") as status:
            def on_change(view: dict[str, Any]) -> None:
                console.print(describe(view))
                status.update(f"job {job_id}: {view.get('state')}")

            return client.wait_until_done(job_id, on_change=on_change,
                                          on_outage=lambda why: console.print(Text(why, style="yellow")))
    except KeyboardInterrupt:
        console.print(f"stopped waiting; job {job_id} goes on (dcc cancel {job_id} stops it)")
        raise typer.Exit(130) from None


@app.command(no_args_is_help=True)
def submit(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="Container image, e.g. python:3.12-slim.")],
    command: Annotated[list[str] | None, typer.Argument(
        metavar="CMD", help="Command and its arguments, after -- (default: the image's own).",
        show_default=False)] = None,
    inputs: Annotated[list[str] | None, typer.Option(
        "--input", "-i", metavar="NAME=@FILE|NAME=TEXT",
        help="A file at /inputs/NAME (subfolders allowed): FILE's bytes, or TEXT. Repeatable.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", metavar="K=V", help="Repeatable.")] = None,
    max_duration: Annotated[int | None, typer.Option("--max-duration", min=1, help="Seconds.")] = None,
    cpus: Annotated[float | None, typer.Option("--cpus", min=0.01)] = None,
    memory: Annotated[int | None, typer.Option("--memory", min=6, help="MiB (at least 6).")] = None,
    gpu: Annotated[int | None, typer.Option("--gpu", min=0)] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Your id; submitting it again is a no-op.")] = None,
    keep: Annotated[list[str] | None, typer.Option(
        "--keep", metavar="PATTERN",
        help="Keep only the outputs this glob matches (relative to /outputs; ** spans folders, a leading ! "
             "excludes). Repeatable; default: every file.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait; exit with the job's exit code (as dcc wait).")] = False,
    show_stdout: Annotated[bool, typer.Option(
        "--stdout", help="Print the job's stdout, and its id on stderr (implies --wait).")] = False,
) -> None:
    """Submit a job and print its id: dcc submit IMAGE [OPTIONS] -- CMD..."""
    job = build_job(image, command, inputs=inputs or (), env=env or (), max_duration=max_duration, cpus=cpus,
                    memory=memory, gpu=gpu, job_id=job_id, keep=keep)
    client = _client(ctx)
    with _mirroring() if wait or show_stdout else nullcontext():
        view = client.submit(job)
        typer.echo(view["id"], err=show_stdout)  # (with --stdout, stdout is the job's own, byte for byte)
        if not (wait or show_stdout):
            return
        final = follow(client, view["id"])
        if show_stdout:
            typer.echo(client.stdout(view["id"]), nl=False)
    raise typer.Exit(job_exit_code(final))


# ---------------------------------------------------------------------------------------------- one job


@app.command()
def status(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="The API's view as JSON.")] = False,
) -> None:
    """Show a job's state and result summary."""
    view = _client(ctx).get(job_id)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    timings = view.get("timings") or {}
    error = view.get("error")
    rows: list[tuple[str, str | Text]] = [
        ("id", str(view.get("id"))),
        ("state", _state_text(str(view.get("state")))),
        ("queue", str(view.get("queue"))),
        ("image", str(view.get("image"))),
        ("command", shlex.join(view["command"]) if view.get("command") else "(image default)"),
        ("attempts", str(view.get("attempts"))),
        ("worker", str(view.get("worker") or "")),
        ("exit code", "" if view.get("exitCode") is None else str(view["exitCode"])),
        ("error", f"{error.get('code')}: {error.get('message')}" if error else ""),
        ("outputs", f"{len(view.get('outputs') or [])} file(s)" + (" (truncated)" if view.get("outputsTruncated")
                                                                    else "")),
        ("submitted", _when(timings.get("submitted"))),
        ("claimed", _when(timings.get("claimed"))),
        ("finished", _when(timings.get("finished"))),
        ("queue wait", "" if timings.get("queueWait") is None else f"{timings['queueWait']:.2f} s"),
        ("run time", _run_time(view)),
    ]
    if view.get("cancelRequested"):
        rows.append(("cancel", "requested"))
    if view.get("meta") is not None:
        rows.append(("meta", json.dumps(view["meta"])))
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    _stdout().print(table)


@app.command("wait")
def wait_cmd(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Follow a job until it ends; exit with its exit code (124 timed_out, 125 error or dcc unreachable, 143
    cancelled)."""
    with _mirroring():
        final = follow(_client(ctx), job_id)
    raise typer.Exit(job_exit_code(final))


@app.command()
def logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    stderr: Annotated[bool, typer.Option("--stderr", help="Standard error instead of output.")] = False,
) -> None:
    """Print a finished job's stdout (or stderr)."""
    client = _client(ctx)
    typer.echo(client.stderr(job_id) if stderr else client.stdout(job_id), nl=False)


def output_target(root: Path, path: Any) -> Path:
    """Where output ``path`` goes under the resolved ``root``; CliError if it would land anywhere else."""
    try:
        if not isinstance(path, str):
            raise ValueError("is not a string")
        check_relative_path(path, max_length=MAX_OUTPUT_NAME)
    except ValueError as exc:
        raise CliError(f"refusing output path {path!r} from the API: it {exc}") from None
    dest = root / path
    # resolve() follows symlinks already under root, so a root/link -> /etc cannot carry a file out
    real = dest.resolve()
    if real == root or not real.is_relative_to(root):
        raise CliError(f"refusing output path {path!r} from the API: it would be written outside {root}")
    # a clash with what is already there is found before anything is written, not halfway through
    for folder in reversed(dest.relative_to(root).parents[:-1]):
        if (root / folder).exists() and not (root / folder).is_dir():
            raise CliError(f"cannot write {dest}: {root / folder} exists and is not a folder")
    if dest.is_dir():
        raise CliError(f"cannot write {dest}: a folder of that name exists")
    return dest


def _download_all(client: DccClient, job_id: str, targets: list[tuple[str, Path]]) -> tuple[int, list[str], list[str]]:
    """Download each output to its target, a few at once, reporting each in order; the bytes written, and the
    paths cut short and failed."""
    total, cut, failed = 0, [], []

    def fetch(target: tuple[str, Path]) -> tuple[int, bool] | OSError | DccApiError:
        try:
            return client.download_output(job_id, *target)
        except (OSError, DccApiError) as exc:  # this file: the others are still fetched
            return exc

    pool = ThreadPoolExecutor(PARALLEL_DOWNLOADS)  # (each file costs two requests: overlap them)
    try:
        for (path, dest), got in zip(targets, pool.map(fetch, targets), strict=True):  # (in order, as they come)
            if isinstance(got, Exception):
                why = f"cannot write {dest}: {got.strerror}" if isinstance(got, OSError) else f"{path}: {got}"
                _stderr().print(Text(f"error: {why}", style="red"))
                failed.append(path)
                continue
            size, truncated = got
            total += size
            typer.echo(str(dest))
            if truncated:
                cut.append(path)
                _stderr().print(Text(f"warning: {path}: only its first {size} bytes were kept", style="yellow"))
    finally:  # (Ctrl-C, or the API gone: the files not started are not fetched)
        pool.shutdown(wait=False, cancel_futures=True)
    return total, cut, failed


@app.command()
def outputs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    to: Annotated[Path | None, typer.Option("--to", metavar="DIR", file_okay=False,
                                            help="Download every output under DIR (subfolders kept).")] = None,
) -> None:
    """List a finished job's output files, or download them all with --to DIR."""
    client = _client(ctx)
    view = client.get(job_id)
    paths = list(view.get("outputs") or [])
    if view.get("outputsTruncated"):
        _stderr().print(Text("warning: the job's outputs went past its limits: some were left out or cut short",
                             style="yellow"))
    if not is_terminal(view):
        raise CliError(f"job {job_id} is {view.get('state')}; its outputs are stored when it ends")
    if to is None:
        for path in paths:
            typer.echo(path)
        return
    try:
        to.expanduser().mkdir(parents=True, exist_ok=True)
        root = to.expanduser().resolve()
    except OSError as exc:
        raise CliError(f"cannot use {to}: {exc.strerror}") from None
    # every path is checked before anything is written
    targets = [(path, output_target(root, path)) for path in paths]
    total, cut, failed = _download_all(client, job_id, targets)
    _stderr().print(f"{len(targets) - len(failed)} file(s), {total} bytes, in {root}")
    if failed:
        raise CliError(f"{len(failed)} file(s) could not be downloaded: see above")
    if cut:
        raise CliError(f"{len(cut)} file(s) are incomplete: the job's outputs went past the inline limit of fast "
                       "jobs (submit it as a standard job to keep them whole)")


@app.command()
def cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a job: a queued one at once, a running one as soon as its worker hears."""
    view = _client(ctx).cancel(job_id)
    state = str(view.get("state"))
    if state == "cancelled":
        typer.echo(f"job {job_id} cancelled")
    elif is_terminal(view):
        typer.echo(f"job {job_id} had already ended: {state}")
    else:
        typer.echo(f"job {job_id} is {state}; its worker was asked to stop it")


@app.command()
def result(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print a finished job's result.json."""
    typer.echo(json.dumps(_client(ctx).result(job_id), indent=2))


# ---------------------------------------------------------------------------------------------- the fleet


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[JobState | None, typer.Option("--state", case_sensitive=False)] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Jobs (a page with --all).")] = 100,
    follow_all: Annotated[bool, typer.Option("--all", help="Every job, page after page.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List jobs, newest first."""
    client = _client(ctx)
    state_value = state.value if state is not None else None
    more = False
    if follow_all:
        jobs = list(client.iter_jobs(state=state_value, page_size=limit))
    else:
        page = client.list(state=state_value, limit=limit)
        jobs, more = list(page.get("jobs") or []), bool(page.get("cursor"))
    if as_json:
        typer.echo(json.dumps(jobs, indent=2))
    else:
        table = Table(box=None)
        # ids are what people copy from this table: never cut them; the image gives way first
        table.add_column("ID", no_wrap=True, min_width=max((len(str(j.get("id"))) for j in jobs), default=2))
        table.add_column("STATE", no_wrap=True, min_width=9)
        table.add_column("QUEUE", no_wrap=True)
        # piped (grep, awk): a job a line, whatever its image's length, and no empty cell to shift the columns
        piped = not sys.stdout.isatty()
        table.add_column("IMAGE", no_wrap=piped, overflow="ignore" if piped else "fold",
                         max_width=None if piped else 40)
        table.add_column("EXIT", no_wrap=True)
        table.add_column("SUBMITTED", no_wrap=True, min_width=14)
        table.add_column("RUN", no_wrap=True, min_width=7)
        blank = "-" if piped else ""
        for job in jobs:
            timings = job.get("timings") or {}
            run = timings.get("runTime")
            table.add_row(str(job.get("id")), _state_text(str(job.get("state"))), str(job.get("queue")),
                          str(job.get("image")), blank if job.get("exitCode") is None else str(job["exitCode"]),
                          (_when(timings.get("submitted")).replace(" ", "T") if piped  # (one field: ISO 8601)
                           else _when(timings.get("submitted"), short=True)) or blank,
                          blank if run is None else f"{run:.1f}s")
        (Console(highlight=False, width=100_000) if piped else _stdout()).print(table)
    if more:
        _stderr().print(f"more jobs than --limit {limit}: --all lists them all")


@app.command()
def workers(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List live workers and their health."""
    found = _client(ctx).workers()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        _stderr().print("no live workers")
        return
    columns: list[str] = ["id"]
    for worker in found:
        columns += [k for k in worker if k not in columns]
    table = Table(*[c.upper() for c in columns], box=None)
    now = time.time()
    for worker in found:
        table.add_row(*[_worker_cell(column, worker.get(column), now) for column in columns])
    _stdout().print(table)


def _worker_cell(column: str, value: Any, now: float) -> str:
    """One cell of ``dcc workers``: times as ages, lists and slots as the worker writes them (``cpu=4,gpu=1``,
    ``0:JOB`` for a GPU a job holds), a GPU as its index and name, a flag as ``yes`` or nothing. An API from
    before the fields were typed sends the strings its workers wrote: they are shown as they are."""
    if column in ("seen", "idleSince") and value not in (None, ""):
        try:
            return f"{max(0.0, now - float(value)):.0f} s ago"
        except (TypeError, ValueError):
            return str(value)
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(_worker_item(item) for item in value)
    return str(value)


def _worker_item(item: Any) -> str:
    if isinstance(item, dict) and {"gpu", "job"} <= item.keys():  # gpusHeld
        return f"{item['gpu']}:{item['job']}"
    if isinstance(item, dict) and "name" in item:  # gpuInfo
        return f"{item.get('index', '?')} {item['name']}"
    return str(item)


@app.command()
def queues(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show queue depths and running jobs."""
    depths = _client(ctx).queues()
    if as_json:
        typer.echo(json.dumps(depths, indent=2))
        return
    waiting = depths.get("queues") or {}
    running = depths.get("runningByQueue") or {}
    table = Table("QUEUE", "WAITING", "RUNNING", box=None)
    for name in sorted(set(waiting) | set(running)):
        table.add_row(name, str(waiting.get(name, 0)), str(running.get(name, 0)))
    _stdout().print(table)


# ---------------------------------------------------------------------------------------------- servers


@app.command()
def local(
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    data_dir: Annotated[Path, typer.Option("--data-dir", file_okay=False, help="Jobs, logs and outputs.")] = Path(
        "~/.dcc"),
    workers: Annotated[int | None, typer.Option("--workers", min=1, show_default="CPU count",
                                                help="CPU job slots.")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """Run dcc on this machine: the API, a worker and Redis, until interrupted."""
    from dcc.local import serve  # starts servers; not needed by the client commands

    serve(port=port, data_dir=data_dir.expanduser(), workers=workers, host=host)


@app.command()
def proxy(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8001,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """Serve the deployed API (--api) on this machine, signing each request with your AWS credentials: for
    tools that cannot sign, e.g. TES clients (point them at http://HOST:PORT)."""
    from dcc.proxy import serve as serve_proxy

    session = ctx.find_object(Session)
    target = session.api if session is not None else DEFAULT_API_URL
    _stderr().print(f"forwarding http://{host}:{port} to {target}")
    serve_proxy(target, host=host, port=port)


@app.command()
def worker() -> None:
    """Run a worker configured from the environment (REDIS_URL, DCC_STORAGE, ...)."""
    from worker_agent.__main__ import main as worker_main  # pulls in docker; not needed by the client

    worker_main()


def main() -> None:
    """The ``dcc`` console script."""
    app(prog_name="dcc")
