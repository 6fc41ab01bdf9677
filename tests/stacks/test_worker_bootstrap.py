"""deploy/worker-bootstrap.sh: shellcheck-clean, and every placeholder is one the stack fills."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "worker-bootstrap.sh"


def test_shellcheck_passes() -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run([exe, "--severity=style", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_placeholders_match_what_the_stack_renders() -> None:
    from stacks.workers import render_bootstrap

    keys = set(re.findall(r"__DCC_([A-Z_]+)__", SCRIPT.read_text()))
    rendered = render_bootstrap({key: f"value-of-{key.lower()}" for key in keys})
    assert "__DCC_" not in rendered
    assert keys == {"CLASS", "REGION", "REDIS_HOST", "REDIS_PORT", "REDIS_SECRET_ARN", "BUCKET", "STORAGE_URL",
                    "ALLOWED_BUCKETS", "TES_LOCATIONS", "ASSET_URL", "GROUP_NAME", "LOG_LEVEL", "WEBSOCKET_ENDPOINT",
                    "GPU_RUNTIME"}
    with pytest.raises(KeyError):
        render_bootstrap({"NOT_THERE": "x"})


def test_bootstrap_runs_the_worker_as_a_restarting_service() -> None:
    text = SCRIPT.read_text()
    assert "-m worker_agent" in text
    assert "Restart=on-failure" in text
    assert "/etc/dcc/worker.env" in text or '$CONF_DIR/worker.env' in text


def test_workers_install_the_versions_the_tests_ran_against() -> None:
    import importlib.util
    from importlib import metadata

    root = SCRIPT.parents[1]
    assert '-c "$APP_DIR/src/worker-constraints.txt"' in SCRIPT.read_text()
    spec = importlib.util.spec_from_file_location("freeze", root / "scripts" / "freeze-worker-deps.py")
    assert spec is not None and spec.loader is not None
    freeze = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(freeze)
    pins = dict(line.split("==") for line in (root / "worker-constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    # up to date: every runtime dependency (and theirs), at the version installed here (scripts/setup.sh uses it)
    roots = freeze.runtime_requirements()
    assert pins == freeze.closure(roots), "run scripts/freeze-worker-deps.py"
    assert all(r.specifier.contains(pins[freeze.normalized(r.name)]) for r in roots)
    assert all(metadata.version(name) == version for name, version in pins.items())
    # and the Lambda bundle pins the same versions of what it shares
    for line in (root / "stacks" / "lambda-requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert pins[freeze.normalized(name)] == version, line
