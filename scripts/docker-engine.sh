#!/usr/bin/env bash
# Make a Docker engine reachable and print the DOCKER_HOST to use.
# Uses $DOCKER_HOST or the default socket when an engine answers there; otherwise installs docker.io
# (Debian) if needed and starts a private dockerd under $DCC_DOCKER_DIR (default /tmp/dcc-docker).
set -euo pipefail

engine_answers() { DOCKER_HOST="$1" timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1; then
  for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock; do
    if [ -n "$host" ] && engine_answers "$host"; then echo "$host"; exit 0; fi
  done
fi

dir=${DCC_DOCKER_DIR:-/tmp/dcc-docker}
host="unix://$dir/docker.sock"
if [ -S "$dir/docker.sock" ] && engine_answers "$host"; then echo "$host"; exit 0; fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "dockerd is not installed and we are not root: install docker.io" >&2; exit 1; fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } >&2
fi

mkdir -p "$dir/data" "$dir/exec"
rm -f "$dir/docker.sock" "$dir/dockerd.pid"
nohup dockerd --iptables=false --ip-forward=false --bridge=none --storage-driver=overlay2 \
  --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
  -H "$host" >"$dir/dockerd.log" 2>&1 &
for _ in $(seq 1 100); do
  if engine_answers "$host"; then echo "$host"; exit 0; fi
  sleep 0.2
done
echo "dockerd did not start; see $dir/dockerd.log" >&2
tail -20 "$dir/dockerd.log" >&2
exit 1
