"""Listing tasks (real Redis): a page never grows past what one Lambda response can carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcc import tes_service
from dcc.bootstrap import build_service
from dcc.settings import Settings
from dcc.tes_service import TesService

pytestmark = pytest.mark.redis


def test_a_page_too_large_for_one_response_is_cut_short_with_a_token_for_the_rest(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tes = TesService(build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))))
    ids = [tes.create({"name": f"t{i}", "description": "d" * 400,
                       "executors": [{"image": "busybox", "command": ["true"]}]}) for i in range(10)]
    monkeypatch.setattr(tes_service, "MAX_LIST_BYTES", 2000)  # (5 MiB in service: the test's tasks are small)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = tes.list(view="FULL", page_size=10, page_token=token)
        assert len(page["tasks"]) <= 4  # each task takes ~500 bytes
        seen += [t["id"] for t in page["tasks"]]
        pages += 1
        token = page.get("next_page_token")
        if token is None:
            break
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 10 and pages >= 3  # every task once
    assert len(tes.list(view="MINIMAL", page_size=10)["tasks"]) == 10  # (small views still fill the page)
