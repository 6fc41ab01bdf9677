"""What fits in a reply: a Lambda proxy reply through API Gateway, and a WebSocket message.

A job's view carries its logs and a fast job's output files; a TES task's FULL view its executors' logs and its
inline inputs. JSON escapes them twice in a Lambda reply (the body is JSON inside the reply's JSON), so one byte of
a log can take seven (``\\\\u0001``): a megabyte of binary on stdout makes a 7 MB reply. API Gateway answers a Lambda
reply over 6 MB with a bare 502, and drops a WebSocket message over 128 KB. A view that would not fit therefore
has its largest such fields cut, largest first, each only as far as needed: a log keeps its start (a log that
already shows only its end keeps its end) and says where it was cut; an output file's or an input's content is
left out whole and marked so. The whole field is still served on its own (``/stdout``, ``/outputs/NAME``).
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
    """Cut ``fields`` to the highest common cap that takes ``over`` off them in all."""
    costs = [measure(f.holder[f.key]) for f in fields]
    room = sum(costs) - over
    sized = list(zip(fields, costs, strict=True))

    def used(cap: int) -> int:  # (a text is cut to the cap, a value past it goes whole)
        return sum(min(c, cap) if f.note is not None else (c if c <= cap else 0) for f, c in sized)

    low, high = 0, max(costs, default=0)  # the highest cap whose fields fit the room
    while low < high:
        mid = (low + high + 1) // 2
        if used(mid) <= room:
            low = mid
        else:
            high = mid - 1
    for field, cost in sorted(sized, key=lambda fc: fc[1], reverse=True):
        if cost <= low:
            break
        if field.note is None:
            if field.left_out is not None:
                field.left_out()
            field.holder[field.key] = ""
        else:
            field.holder[field.key] = _cut(field.whole, field.note, low, measure, keep_end=field.keep_end)


def _cut(text: str, note: str, most: int, measure: Measure, *, keep_end: bool) -> str:
    """The longest start (or end) of ``text`` that with ``note`` takes at most ``most``; the note alone if none."""

    def joined(n: int) -> str:
        return (note + text[len(text) - n:]) if keep_end else (text[:n] + note)

    low, high = 0, len(text)  # measure(joined(low)) may pass ``most``: then the note alone, whatever it takes
    while low < high:
        mid = (low + high + 1) // 2
        if measure(joined(mid)) <= most:
            low = mid
        else:
            high = mid - 1
    return joined(low)


def fit_job_view(view: dict[str, Any], budget: int, measure: Measure) -> dict[str, Any]:
    """A job's view (``JobRecord.view``, or a ``result.json``) within ``budget``: its logs and a fast job's output
    files cut if it would not be (a copy then; else ``view`` itself)."""
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
    return view


def fit_task_view(view: dict[str, Any], budget: int, measure: Measure) -> dict[str, Any]:
    """A TES task's view within ``budget``: its executors' logs cut (they are ends of logs: each keeps its end) and
    its inputs' inline contents left out (each said in the last log's ``system_logs``) as ``fit`` shares the room
    out; a copy if cut."""
    if measure(view) <= budget:
        return view
    view = json.loads(json.dumps(view))
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
    return view
