#!/usr/bin/env bash
# The test command: set everything up (Python deps, redis-server, a Docker engine, the test image) and run
# the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DOCKER_HOST=$(bash scripts/docker-engine.sh)
export DOCKER_HOST
bash scripts/test-image.sh dcc-busybox:latest
.venv/bin/ruff check .
.venv/bin/mypy dcc worker_agent functions
exec .venv/bin/python -m pytest "$@"
