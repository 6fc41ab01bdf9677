#!/usr/bin/env bash
# Install what dcc needs on a Debian machine with Python 3.11+: system packages (redis-server, a Docker
# engine, a static busybox for the offline test image, shellcheck, Node.js for the CDK) and a virtualenv
# at .venv with dcc and its test tools. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)   # checks deploy/worker-bootstrap.sh
command -v node >/dev/null 2>&1 || need+=(nodejs)             # aws-cdk-lib (jsii) runs on Node.js
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or install them with apt-get)" >&2; exit 1
  fi
  echo "installing ${need[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 && "$py" -m venv .venv; }
fi
stamp=.venv/.dcc-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.txt -nt "$stamp" ] \
    || [ worker-constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
  # the runtime's versions are those the workers install (worker-constraints.txt), so the tests run what is deployed
  .venv/bin/python -m pip install -q --disable-pip-version-check -c worker-constraints.txt \
    -r requirements.txt -e '.[test]' >&2
  touch "$stamp"
fi
