"""An engine version as a matrix axis: `engines.NAME.versions: [A, B, ...]` expands, when the matrix is
validated, into one engine per version (`NAME-A`, `NAME-B`) and every deployment that uses NAME into one
deployment per version (`DEPLOYMENT-A`, ...; an instance's explicit id gets the same suffix). Nothing
downstream knows there was an axis: each version is an ordinary configuration with its own deployment and
instance ids, so the report pairs them like any two (same model, workload and load shape) and gives the
ratio and its interval ("did the new release regress on my GPU?").

An entry is a version, or {version, image, profile, args} where that version differs. Without an entry's
image the engine's `image` is used with "{version}" replaced (an image naming no "{version}" would run one
image for every version, so it is refused).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.matrix import Engine, Matrix

MAX_ID = 64


def version_slug(version: str) -> str:
    """The version as it appears in ids: letters, digits, '.', '_' and '-' (anything else becomes '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", version)


def _ident(base: str, version: str, what: str) -> str:
    ident = f"{base}-{version_slug(version)}"
    if len(ident) > MAX_ID:
        raise ValueError(f"{what}: {ident!r} (with the version) is longer than {MAX_ID} characters; use a shorter name")
    return ident


def engine_for(name: str, engine: Engine, index: int) -> tuple[str, Engine]:
    from tasks.matrix import EngineVersion

    entry = engine.versions[index]
    entry = entry if isinstance(entry, EngineVersion) else EngineVersion(version=entry)
    where = f"engines.{name}.versions.{index}"
    image = entry.image
    if image is None and engine.image is not None:
        if "{version}" not in engine.image:
            raise ValueError(
                f"{where}: version {entry.version!r} has no image, and engines.{name}.image ({engine.image!r}) "
                "names one version's image: write it with {version} (e.g. vllm/vllm-openai:v{version}) or give "
                "this entry an image"
            )
        image = engine.image.replace("{version}", entry.version)
    update = {
        "version": entry.version,
        "image": image,
        "profile": entry.profile if entry.profile is not None else engine.profile,
        "args": entry.args if entry.args is not None else engine.args,
        "versions": [],
    }
    return _ident(name, entry.version, where), engine.model_copy(update=update)


def expand(matrix: Matrix) -> None:
    """Rewrite `matrix` in place: each engine with a version axis becomes one engine per version, and each
    deployment using it one deployment per version. A deployment may use one such engine (two axes in one
    group would be a product nobody asked for: give each its own deployment)."""
    axes = {name: e for name, e in matrix.engines.items() if e.versions}
    if not axes:
        return
    engines: dict = {}
    per_version: dict[str, list[tuple[str, str]]] = {}  # axis engine -> [(version, engine name)]
    for name, engine in matrix.engines.items():
        if name not in axes:
            engines[name] = engine
            continue
        versions = [v if isinstance(v, str) else v.version for v in engine.versions]
        dupes = sorted({v for v in versions if versions.count(v) > 1})
        if dupes:
            raise ValueError(f"engines.{name}.versions: each version once, repeated: {dupes}")
        for i, version in enumerate(versions):
            new_name, new_engine = engine_for(name, engine, i)
            if new_name in matrix.engines:
                raise ValueError(f"engines.{name}.versions.{i}: {new_name!r} is already the name of an engine")
            engines[new_name] = new_engine
            per_version.setdefault(name, []).append((version, new_name))
    deployments = []
    for d_i, dep in enumerate(matrix.deployments):
        used = sorted({inst.engine for inst in dep.instances} & axes.keys())
        if not used:
            deployments.append(dep)
            continue
        if len(used) > 1:
            raise ValueError(
                f"deployments.{d_i}: group {dep.id!r} uses {len(used)} engines with a version axis ({', '.join(used)}); "
                "a group may use one: put the others in their own deployments"
            )
        for version, engine_name in per_version[used[0]]:
            instances = [
                inst.model_copy(
                    update={
                        "engine": engine_name if inst.engine == used[0] else inst.engine,
                        "id": _ident(inst.id, version, f"deployments.{d_i}.instances.{i_i}.id") if inst.id else None,
                    }
                )
                for i_i, inst in enumerate(dep.instances)
            ]
            new_id = _ident(dep.id, version, f"deployments.{d_i}.id")
            deployments.append(dep.model_copy(update={"id": new_id, "instances": instances}))
    matrix.engines = engines
    matrix.deployments = deployments
