"""Build an engine image from docker/ with the docker SDK.

The tag is the image name + a hash of everything that goes into the build (the Dockerfile, the
build args, the context files), so an unchanged image is never rebuilt: when the tag exists the
build is skipped ("cached"). The build log streams to the logger and is kept on disk. Transient
failures (network, registry) are retried with backoff; a Dockerfile error fails at once.
Every attempt ends as a row for the `builds` table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tasks import progress
from tasks.errors import BadInput

log = logging.getLogger("bakeoff.images")

# Errors worth another try: the network or a registry had a bad moment.
TRANSIENT = re.compile(
    r"i/o timeout|TLS handshake timeout|connection reset|connection refused|Temporary failure resolving|"
    r"Could not connect to|Could not resolve|toomanyrequests|503 Service Unavailable|502 Bad Gateway|"
    r"net/http: request canceled|unexpected EOF|Hash Sum mismatch",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ImageSpec:
    name: str  # e.g. bakeoff/llamacpp-cpu
    dockerfile: Path
    args: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # name in the build context -> path here


class DockerUnavailable(BadInput, RuntimeError):
    """No Docker daemon answers: the user's setup lacks what the matrix asks for (exit 2, one line)."""


class BuildFailed(RuntimeError):
    def __init__(self, error_class: str, message: str, row: dict) -> None:
        super().__init__(f"{error_class}: {message}")
        self.error_class, self.row = error_class, row


def content_hash(spec: ImageSpec) -> str:
    h = hashlib.sha256()
    h.update(spec.dockerfile.read_bytes())
    for key in sorted(spec.args):
        h.update(f"\0arg {key}={spec.args[key]}".encode())
    for name in sorted(spec.files):
        h.update(f"\0file {name}\0".encode())
        with open(spec.files[name], "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def image_tag(spec: ImageSpec) -> str:
    return f"{spec.name}:{content_hash(spec)[:16]}"


def build_image(
    client, spec: ImageSpec, *, run_id: str, log_dir: Path, retries: int = 3, backoff_s: float = 5.0
) -> dict:
    """Build (or find) the image; returns its `builds` row. Raises BuildFailed with the row."""
    missing = [str(p) for p in [spec.dockerfile, *spec.files.values()] if not Path(p).is_file()]
    if missing:
        raise BuildFailed(
            "missing_input",
            f"{spec.name}: {', '.join(missing)} not found",
            _row(run_id, spec, "", "failed", 0, 0.0, error_class="missing_input"),
        )
    digest = content_hash(spec)
    tag = f"{spec.name}:{digest[:16]}"
    log_path = log_dir / f"build-{spec.name.replace('/', '_')}-{digest[:16]}.log"
    if _exists(client, tag):
        log.info("image %s: present, build skipped", tag)
        return _row(run_id, spec, tag, "cached", 0, 0.0, digest=digest, image_id=client.images.get(tag).id)

    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for attempt in range(1, retries + 1):
        error = _build_once(client, spec, tag, log_path)
        if error is None:
            seconds = time.monotonic() - t0
            log.info("image %s: built in %.0f s (log %s)", tag, seconds, log_path)
            return _row(
                run_id,
                spec,
                tag,
                "built",
                attempt,
                seconds,
                digest=digest,
                image_id=client.images.get(tag).id,
                log_path=log_path,
            )
        transient = bool(TRANSIENT.search(error) or TRANSIENT.search(_tail(log_path)))
        if not transient or attempt == retries:
            error_class = "transient_exhausted" if transient else "build_error"
            row = _row(
                run_id,
                spec,
                tag,
                "failed",
                attempt,
                time.monotonic() - t0,
                digest=digest,
                error_class=error_class,
                error_message=error[:1000],
                log_path=log_path,
            )
            raise BuildFailed(error_class, f"{tag}: {error.strip().splitlines()[-1] if error.strip() else error}", row)
        wait = backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)  # jitter: retries do not march in step
        log.warning(
            "image %s: transient failure (%s); retry %d/%d in %.0f s",
            tag,
            error.strip()[:200],
            attempt,
            retries - 1,
            wait,
        )
        time.sleep(wait)
    raise AssertionError("unreachable")


def _build_once(client, spec: ImageSpec, tag: str, log_path: Path) -> str | None:
    """One `docker build`, log streamed to the logger and appended to log_path; the error or None."""
    with tempfile.TemporaryDirectory(prefix="bakeoff-build-") as ctx:
        shutil.copy(spec.dockerfile, Path(ctx) / "Dockerfile")
        for name, path in spec.files.items():
            shutil.copy(path, Path(ctx) / name)
        error = None
        with open(log_path, "a") as logf:
            logf.write(f"# docker build -t {tag} {' '.join(f'--build-arg {k}={v}' for k, v in spec.args.items())}\n")
            try:
                # network_mode host: the machines here have no bridge network (dockerd --bridge=none).
                stream = client.api.build(
                    path=ctx,
                    tag=tag,
                    buildargs=dict(spec.args),
                    network_mode="host",
                    rm=True,
                    forcerm=True,
                    decode=True,
                )
                for chunk in stream:
                    text = chunk.get("stream") or chunk.get("status") or ""
                    if text:
                        logf.write(text if text.endswith("\n") else text + "\n")
                        if text.strip():
                            log.info("build %s | %s", spec.name, text.rstrip()[:300])
                            progress.build_line(spec.name, text)
                    if "error" in chunk:
                        error = str(chunk.get("error"))
                        logf.write(f"ERROR: {error}\n")
            except Exception as exc:  # the daemon refused the build (bad context, API error)
                error = f"{type(exc).__name__}: {exc}"
                logf.write(f"ERROR: {error}\n")
        progress.build_done(spec.name)
        return error


def _exists(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _row(
    run_id: str,
    spec: ImageSpec,
    tag: str,
    status: str,
    attempts: int,
    seconds: float,
    *,
    digest: str = "",
    image_id: str | None = None,
    error_class: str | None = None,
    error_message: str | None = None,
    log_path: Path | None = None,
) -> dict:
    return {
        "run_id": run_id,
        "image": tag or spec.name,
        "dockerfile": str(spec.dockerfile),
        "content_hash": digest,
        "status": status,
        "attempts": attempts,
        "seconds": round(seconds, 3),
        "image_id": image_id,
        "error_class": error_class,
        "error_message": error_message,
        "log_path": str(log_path) if log_path else None,
    }


def image_spec(build, base_dir: Path) -> ImageSpec:
    """A matrix `build` section as an ImageSpec; paths relative to the matrix file, $VARS and ~ expanded."""

    def here(path: str) -> Path:
        p = Path(os.path.expandvars(path)).expanduser()
        return p if p.is_absolute() else base_dir / p

    return ImageSpec(build.name, here(build.dockerfile), dict(build.args), {k: here(v) for k, v in build.files.items()})


def build_engine_images(matrix, *, run_id: str, log_dir: Path, base_dir: Path) -> tuple[dict[str, str], list[dict]]:
    """Build the images of the matrix's docker engines (skipped when the tag exists), after removing
    the engines (processes and containers) an earlier crashed run left behind. Returns (engine name ->
    image tag, builds rows); an engine whose build failed has no tag, and its instances are recorded
    as image_build_failed."""
    from tasks.launchers import process
    from tasks.launchers.docker import remove_leftovers

    process.remove_leftovers()
    docker_engines = {n: e for n, e in matrix.engines.items() if e.launcher == "docker"}
    if not docker_engines:
        return {}, []
    client = docker_client()
    remove_leftovers(client)
    tags, rows = {}, []
    for name, engine in docker_engines.items():
        if engine.build is None:
            continue
        try:
            row = build_image(client, image_spec(engine.build, base_dir), run_id=run_id, log_dir=log_dir)
            tags[name] = row["image"]
        except BuildFailed as exc:
            row = exc.row
            log.error("engine %s: image build failed: %s", name, exc)
        if row["image"] not in {r["image"] for r in rows}:  # two engines may share one image
            rows.append(row)
    return tags, rows


def docker_client():
    """The docker SDK client, or a one-line reason why there is none."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as exc:
        raise DockerUnavailable(
            f"no Docker engine reachable ({os.environ.get('DOCKER_HOST', 'unix socket')}): "
            f"{str(exc).splitlines()[0][:200]}; start one (docker/start-dockerd.sh)"
        ) from None
