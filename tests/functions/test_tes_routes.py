"""The TES routes are loaded lazily: a cold start that serves /v1 does not pay for the TES models."""

from __future__ import annotations

import subprocess
import sys

from dcc.tes import API_PREFIX
from functions.api import tes


def test_the_route_prefix_is_the_one_dcc_tes_serves() -> None:
    assert tes.API_PREFIX == API_PREFIX == "/ga4gh/tes/v1"


def test_importing_the_api_handler_does_not_import_the_tes_modules() -> None:
    code = "import sys, functions.api.handler; print(sorted(m for m in sys.modules if m.startswith('dcc.tes')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
