"""API Gateway events for the Lambda handler tests, read from tests/events/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parent / "events"


def event(name: str, **replace: str) -> dict[str, Any]:
    """The event ``tests/events/<name>.json``, with each ``OLD=NEW`` text replacement made."""
    text = (EVENTS / f"{name}.json").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return dict(json.loads(text))
