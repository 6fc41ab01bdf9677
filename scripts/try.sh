#!/usr/bin/env bash
# Set everything up, start dcc in local mode, run one example job through the CLI and print its result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DOCKER_HOST=$(bash scripts/docker-engine.sh)
export DOCKER_HOST
# No registry may be reachable: the example uses an image made here from busybox.
bash scripts/test-image.sh dcc-busybox:latest

export DCC_SMOKE_IMAGE=${DCC_SMOKE_IMAGE:-dcc-busybox:latest}  # for GET /test, /test/cpu
port=${DCC_PORT:-8000}
data=${DCC_DATA_DIR:-$PWD/.dcc-try}
export DCC_API_URL="http://127.0.0.1:$port"
.venv/bin/dcc local --port "$port" --data-dir "$data" >"$data.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  .venv/bin/python -c 'import os, urllib.request; urllib.request.urlopen(os.environ["DCC_API_URL"] + "/healthz", timeout=2)' \
    2>/dev/null && break
  kill -0 $server 2>/dev/null || { echo "dcc local exited; see $data.log" >&2; tail -20 "$data.log" >&2; exit 1; }
  sleep 0.2
done

printf 'hello from dcc\n' > "$data.input.txt"
dcc=.venv/bin/dcc
set -x
id=$($dcc submit dcc-busybox:latest --input "greeting.txt=@$data.input.txt" --max-duration 60 -- \
  sh -c 'tr a-z A-Z < /inputs/greeting.txt | tee $OUTPUTS/shout.txt; wc -c /inputs/greeting.txt')
$dcc wait "$id"
$dcc status "$id"
$dcc logs "$id"
$dcc outputs "$id" --to "$data.outputs"
cat "$data.outputs/shout.txt"
