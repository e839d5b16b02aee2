#!/usr/bin/env bash
# Make a minimal Debian base image locally (no registry is reachable from CI):
#   docker/make-base-image.sh [NAME]     (default bakeoff/debian-base:bookworm)
# Real users build FROM python:3.11-slim instead (the Dockerfiles take the base as a build arg).
set -euo pipefail
name=${1:-bakeoff/debian-base:bookworm}
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name: present"; exit 0
fi
command -v debootstrap >/dev/null || { echo "make-base-image: debootstrap is not installed" >&2; exit 2; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "base image $name: debootstrap bookworm (1-2 minutes)"
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" >"$root.log" 2>&1 \
  || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
tar -C "$root" -c . | docker import - "$name" >/dev/null
echo "base image $name: imported"
