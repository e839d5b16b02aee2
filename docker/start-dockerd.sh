#!/usr/bin/env bash
# Start a Docker engine where none runs (CI and the development machines): Debian's docker.io,
# vfs storage, no iptables. The default bridge network comes up too (ports are published through
# docker-proxy, no iptables needed); where it cannot, the engine starts with --bridge=none and
# containers use the host network only. Idempotent.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  echo "dockerd: already running"; exit 0
fi
command -v dockerd >/dev/null || { echo "dockerd: not installed (apt-get install docker.io)" >&2; exit 2; }
log=${BAKEOFF_DOCKERD_LOG:-/tmp/bakeoff-dockerd.log}
start() {  # start() EXTRA_ARGS...: 0 when the engine answers within 60 s
  setsid dockerd --storage-driver=vfs --iptables=false "$@" >"$log" 2>&1 < /dev/null &
  local pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 1
  done
  kill "$pid" 2>/dev/null; return 1
}
if start; then
  echo "dockerd: started with a bridge network (log $log)"; exit 0
fi
echo "dockerd: no bridge network here ($(tail -n 1 "$log" | cut -c1-200)); host network only" >&2
if start --bridge=none; then
  echo "dockerd: started, host network only (log $log)"; exit 0
fi
echo "dockerd: did not come up in 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
