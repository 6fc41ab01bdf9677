#!/usr/bin/env bash
# Make the local image NAME (default dcc-busybox:latest) from Debian's static busybox, with `docker import`,
# unless the engine already has it. Needs DOCKER_HOST set to a reachable engine.
set -euo pipefail
name=${1:-dcc-busybox:latest}
if docker image inspect "$name" >/dev/null 2>&1; then exit 0; fi
# The image needs a static busybox (Debian's busybox-static): a dynamic one finds no libc in the image.
bb=/bin/busybox
if [ ! -x "$bb" ] || ldd "$bb" >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static; } >&2
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for app in $("$bb" --list); do
  [ "$app" = busybox ] || ln -sf busybox "$root/bin/$app"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> "$root/etc/passwd"
tar -C "$root" -c . | docker import - "$name" >/dev/null
echo "made image $name" >&2
