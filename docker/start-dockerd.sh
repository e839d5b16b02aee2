#!/usr/bin/env bash
# Start a Docker engine where none runs (CI and the development machines): Debian's docker.io,
# vfs storage, no iptables, no bridge -- containers use the host network. Idempotent.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  echo "dockerd: already running"; exit 0
fi
command -v dockerd >/dev/null || { echo "dockerd: not installed (apt-get install docker.io)" >&2; exit 2; }
log=${BAKEOFF_DOCKERD_LOG:-/tmp/bakeoff-dockerd.log}
setsid dockerd --storage-driver=vfs --iptables=false --bridge=none >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { echo "dockerd: started (log $log)"; exit 0; }
  sleep 1
done
echo "dockerd: did not come up in 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
