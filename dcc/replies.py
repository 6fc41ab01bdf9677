"""What fits in a reply: a Lambda proxy reply through API Gateway, and a WebSocket message.

A job's view carries its logs and a fast job's output files; a TES task's FULL view its executors' logs and its
inline inputs. JSON escapes them twice in a Lambda reply (the body is JSON inside the reply's JSON), so one byte of
a log can take seven (``\\\\u0001``): a megabyte of binary on stdout makes a 7 MB reply. API Gateway answers a Lambda
reply over 6 MB with a bare 502, and drops a WebSocket message over 128 KB. A view that would not fit therefore
has such fields cut to a common cap, as high as the room allows, so the small ones stay whole (``fit``): a log keeps
its start (a log that already shows only its end keeps its end) and says where it was cut; an output file's or an
input's content is left out whole and marked so. The whole field is still served on its own (``/stdout``,
``/outputs/NAME``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

REPLY_BUDGET = 5 * 1024 * 1024
"""The most a view may take in a Lambda proxy reply (``reply_bytes``): the reply holds 6 MB in all."""
LAMBDA_REPLY_BYTES = 6 * 1024 * 1024
"""The most a Lambda function's reply may take, as the runtime sends it (its JSON)."""
MESSAGE_BUDGET = 120 * 1024
"""The most a view may take in a WebSocket message (``message_bytes``): API Gateway's limit is 128 KB a message."""
TAIL_MARK = "[dcc: truncated]\n"
"""How a log that shows only its end begins (the engine or the worker dropped its start)."""

SUMMARY = frozenset({"id", "state", "queue", "image", "attempts", "worker", "exitCode", "error", "outputsTruncated",
                     "timings", "cancelRequested", "fast", "priority"})
"""What a job's view keeps when even its logs, inline files and output names cut do not make it fit (with
``"partial": true``): its state and result, without its outputs, command and meta."""
TES_NOTE = "[dcc: cut here, too long to send whole]\n"
"""Begins an executor's log (its end) cut to fit."""

Measure = Callable[[Any], int]


def reply_bytes(value: Any) -> int:
    """What ``value`` takes in a Lambda proxy reply, whose body is its JSON as a JSON string: escaped twice."""
    return len(json.dumps(json.dumps(value))) + 2


def message_bytes(value: Any) -> int:
    """What ``value`` takes in a WebSocket message: its JSON."""
    return len(json.dumps(value))


@dataclass
class Field:
    """A string in a view that may be cut: ``holder[key]``."""

    holder: dict[str, Any]
    key: str
    note: str | None = None
    """Said where a text is cut (at its end, or at its start when ``keep_end``); None: the value goes whole."""
    keep_end: bool = False
    left_out: Callable[[], None] | None = None
    """Called when the value goes whole (to mark where it was)."""

    def __post_init__(self) -> None:
        self.whole: str = self.holder[self.key]  # (a text cut again is cut from the whole, with one note)


def fit(view: dict[str, Any], fields: list[Field], budget: int, measure: Measure) -> bool:
    """Cut ``fields`` of ``view`` (in place) until ``measure(view) <= budget``; whether any was cut.

    The room the rest of the view leaves is shared out: every field that takes more than a common cap is cut to it
    (a text to its longest start, or end, that fits with its note; a value without a note goes whole), with the cap
    as high as the room allows, so small fields stay whole and large ones keep as much as each other. If cutting
    them all is not enough, the view is left with them all cut (the caller's own limit then answers).
    """
    cut = False
    for _ in range(3):  # (a second round makes up for the marks and notes the first added, rarely more)
        total = measure(view)
        left = [f for f in fields if f.holder[f.key]]
        if total <= budget or not left:
            return cut
        _share(left, total - budget, measure)
        cut = True
    return cut


def _share(fields: list[Field], over: int, measure: Measure) -> None:
    """Take ``over`` off ``fields``: values without a note that take more than the highest common cap that would do
    go whole; then the texts share what is left, each cut to the highest common cap that fits it."""
    sized = [(f, measure(f.holder[f.key])) for f in fields]
    room = sum(c for _, c in sized) - over
    cap = _highest(lambda cap: sum(min(c, cap) if f.note is not None else (c if c <= cap else 0) for f, c in sized)
                   <= room, max(c for _, c in sized))
    texts = [(f, c) for f, c in sized if f.note is not None]
    for field, cost in sized:
        if field.note is None and cost > cap:
            if field.left_out is not None:
                field.left_out()
            field.holder[field.key] = ""
            room += cost  # (what it took is free for the texts: they may keep more than the cap)
    room -= sum(c for f, c in sized if f.note is None)
    text_cap = _highest(lambda cap: sum(min(c, cap) for _, c in texts) <= room, max((c for _, c in texts), default=0))
    for field, cost in texts:
        if cost > text_cap:
            field.holder[field.key] = _cut(field.whole, field.note or "", text_cap, measure, keep_end=field.keep_end,
                                           cost=cost)


def _highest(fits: Callable[[int], bool], high: int) -> int:
    """The highest ``n`` in ``[0, high]`` for which ``fits(n)`` (0 if none), ``fits`` being monotone."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _cut(text: Any, note: Any, most: int, measure: Measure, *, keep_end: bool, cost: int | None = None) -> Any:
    """The longest start (or end) of ``text`` (a string or a list) that with ``note`` takes at most ``most``; the
    note alone if none. ``cost``: what ``text`` alone takes, if known to take more than ``most``.

    A part's cost grows about in step with its length, so each guess is where the costs measured so far point
    (a few measures, each of a part of the text) with halving when that does not narrow the search fast enough.
    """

    def joined(n: int) -> Any:
        return (note + text[len(text) - n:]) if keep_end else (text[:n] + note)

    low, high = 0, len(text)  # joined(low) may take more than ``most``: then the note alone, whatever it takes
    low_cost, high_cost = measure(joined(0)), cost if cost is not None else measure(joined(high))
    if high_cost <= most and cost is None:
        return joined(high)
    high -= 1
    halve = False
    while low < high:
        width = high - low
        if halve or high_cost <= low_cost:
            mid = (low + high + 1) // 2
        else:  # (where the line through the two costs measured last meets ``most``)
            mid = min(high, max(low + 1, low + (most - low_cost) * (high + 1 - low) // (high_cost - low_cost)))
        cost = measure(joined(mid))
        if cost <= most:
            low, low_cost = mid, cost
        else:
            high, high_cost = mid - 1, cost
        halve = not halve and high - low > width // 2  # (the guess did not halve the search: halve next)
    return joined(low)


def fit_job_view(view: dict[str, Any], budget: int, measure: Measure) -> dict[str, Any]:
    """A job's view (``JobRecord.view``, or a ``result.json``) within ``budget``: its logs and a fast job's output
    files cut if it would not be, then its output names (``outputsNotListed`` says how many are not), then, if it
    still would not, only its ``SUMMARY`` with ``"partial": true`` (a copy then; else ``view`` itself)."""
    if measure(view) <= budget:
        return view
    view = {**view}
    fields = []
    for stream in ("stdout", "stderr"):
        text = view.get(stream)
        if isinstance(text, str) and text:
            where = f"too long to send whole: GET /v1/jobs/{view.get('id')}/{stream} serves it"
            tail = text.startswith(TAIL_MARK)
            note = f"[dcc: the log's start is cut here, {where}]\n" if tail else \
                f"\n[dcc: the log is cut here, {where}]"
            fields.append(Field(view, stream, note=note, keep_end=tail))
    files = view.get("outputFiles")
    if isinstance(files, dict) and files:
        view["outputFiles"] = files = {name: dict(item) for name, item in files.items()}
        for item in files.values():
            if isinstance(item.get("content"), str) and item["content"]:
                fields.append(Field(item, "content", left_out=partial(item.__setitem__, "omitted", True)))
    fit(view, fields, budget, measure)
    names = view.get("outputs")
    over = measure(view) - budget
    if over > 0 and isinstance(names, list) and names:  # (tens of thousands of output files)
        view["outputs"] = _cut(names, [], measure(names) - over - 32, measure, keep_end=False)
        view["outputsNotListed"] = len(names) - len(view["outputs"])
        over = measure(view) - budget
    if over > 0:  # what is left is too much still (a message's budget, a job's own meta): its summary
        view = {k: v for k, v in view.items() if k in SUMMARY} | {"partial": True}
    return view


def fit_task_view(view: dict[str, Any], budget: int, measure: Measure) -> dict[str, Any]:
    """A TES task's view within ``budget``: its executors' logs cut (they are ends of logs: each keeps its end) and
    its inputs' inline contents left out (each said in the last log's ``system_logs``) as ``fit`` shares the room
    out, then its logs' lists of output files (each log says how many it does not list); a copy if cut."""
    if measure(view) <= budget:
        return view
    view = _copied(view)
    fields = []
    for log in view.get("logs") or []:
        for executor in log.get("logs") or []:
            for stream in ("stdout", "stderr"):
                if isinstance(executor.get(stream), str) and executor[stream]:
                    fields.append(Field(executor, stream, note=TES_NOTE, keep_end=True))
    gone: list[dict[str, Any]] = []

    def left_out(i: int, item: dict[str, Any]) -> None:
        if view.get("logs"):
            view["logs"][-1].setdefault("system_logs", []).append(
                f"inputs[{i}].content ({len(item['content'].encode())} bytes) is left out of this reply: it could "
                "not hold it")
        gone.append(item)

    for i, item in enumerate(view.get("inputs") or []):
        if isinstance(item.get("content"), str) and item["content"]:
            fields.append(Field(item, "content", left_out=partial(left_out, i, item)))
    fit(view, fields, budget, measure)
    for item in gone:
        del item["content"]
    _list_fewer_files(view, budget, measure)
    return view


def _copied(task: dict[str, Any]) -> dict[str, Any]:
    """A task view whose parts that ``fit_task_view`` may cut, or add to, are copies (the caller's stays as it was)."""
    view = {**task}
    if "inputs" in view:
        view["inputs"] = [dict(item) for item in view["inputs"]]
    if "logs" in view:
        view["logs"] = [{**log, "logs": [dict(e) for e in log.get("logs") or []],
                         **({"system_logs": list(log["system_logs"])} if "system_logs" in log else {})}
                        for log in view["logs"]]
    return view


def _list_fewer_files(view: dict[str, Any], budget: int, measure: Measure) -> None:
    """Cut a task view's logs' lists of output files, the longest first, until it is within ``budget``."""
    over = measure(view) - budget
    for log in sorted(view.get("logs") or [], key=lambda log: measure(log.get("outputs") or []), reverse=True):
        files = log.get("outputs") or []
        if over <= 0 or not files:
            return
        note = f"[dcc: {{}} of the {len(files)} output file logs are not listed: this reply could not hold them]"
        log["outputs"] = kept = _cut(files, [], measure(files) - over - measure(note) - 8, measure, keep_end=False)
        log.setdefault("system_logs", []).append(note.format(len(files) - len(kept)))
        over = measure(view) - budget
