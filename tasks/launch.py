"""An instance's launch: the one place its command line, model argument, volumes, image, GPU and
environment are decided, from (matrix, planned instance, memory flag, port).

Every caller builds it here: the night's launcher (tasks/deploy.py), the preflight check,
`bakeoff compose` (tasks/compose.py) and `bakeoff plan` (tasks/gpu_memory.py), so what a user copies is
what a night runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.engines import LaunchSpec, adapter_for
from tasks.matrix import Matrix, MatrixError, Model
from tasks.plan import PlannedInstance

# The port an instance is shown with where nothing is started (`bakeoff compose`, `bakeoff plan`):
# its own `port`, else this + its position in the group. A night picks a free port instead.
DISPLAY_PORT = 8000


def display_port(planned: PlannedInstance, position: int = 0) -> int:
    return planned.spec.port or DISPLAY_PORT + position


def resolve_model_path(model: Model, base_dir: Path) -> Path:
    """A path relative to the matrix file, or pkg:MODULE/FILE for a model shipped in a Python package."""
    if model.path.startswith("pkg:"):
        module, _, filename = model.path[4:].partition("/")
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or spec.origin is None:
            raise MatrixError(f"models.path: package {module!r} of {model.path!r} is not installed")
        path = Path(spec.origin).parent / filename
    else:
        path = Path(model.path).expanduser()
        if not path.is_absolute():
            path = base_dir / path
    if not path.is_file():
        raise MatrixError(f"models.path: {model.path!r} resolves to {path}, which does not exist")
    return path


def container_model(model: Model, base_dir: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """A model file on this machine is mounted read-only at /models; a hub id is read from the
    mounted Hugging Face cache (nothing is downloaded by bakeoff itself)."""
    try:
        path = resolve_model_path(model, base_dir)
    except MatrixError:
        if model.path.startswith("pkg:") or model.path.startswith((".", "/")):
            raise
        hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
        return model.path, {str(hf_home): {"bind": "/root/.cache/huggingface", "mode": "rw"}}
    return f"/models/{path.name}", {str(path.parent): {"bind": "/models", "mode": "ro"}}


# Values never stored or logged: those of flags that carry credentials, and anything shaped like a token
# (a provider prefix, or a long unbroken run of letters and digits) wherever it stands in the command line.
SECRET_FLAGS = ("--api-key", "--token", "--hf-token", "--access-token", "--auth-token", "--password")
_TOKEN_PREFIXED = re.compile(r"^(hf_|sk-|sk_|ghp_|gho_|github_pat_|xox[abp]-|AKIA)[A-Za-z0-9_-]{8,}$")
_TOKEN_BARE = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9]{32,}$")  # hex or base62 keys; no word has 32
MASK = "***"


def looks_like_token(value: str) -> bool:
    return bool(_TOKEN_PREFIXED.match(value) or _TOKEN_BARE.match(value))


def is_credential_env(name: str, value: str) -> bool:
    """An `env` entry holding a credential: a token-looking value, or a *TOKEN name."""
    return looks_like_token(value) or name.endswith("TOKEN")


def masked(argv: Sequence[str]) -> list[str]:
    """The command line as it may be stored and logged: credential values replaced by ***."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif name in SECRET_FLAGS and eq:
            out.append(f"{name}={MASK}")
        elif arg in SECRET_FLAGS:
            out.append(arg)
            hide_next = True
        elif looks_like_token(arg) or (eq and looks_like_token(value)):
            out.append(f"{name}={MASK}" if eq else MASK)
        else:
            out.append(arg)
    return out


def literal_secrets(matrix: Matrix) -> list[str]:
    """One line per matrix field holding a credential literally (args, env, url): a token belongs in the
    environment, named by `secret_env`. Warned about at preflight; masked wherever bakeoff writes it."""
    found = []
    for name, engine in matrix.engines.items():
        if masked(engine.args) != list(engine.args):
            found.append(f"engines.{name}.args")
        found += [f"engines.{name}.env.{k}" for k, v in engine.env.items() if is_credential_env(k, v)]
        if engine.url and re.search(r"//[^/@]+:[^/@]+@|[?&](api_key|token|key)=", engine.url):
            found.append(f"engines.{name}.url")
    for d_i, dep in enumerate(matrix.deployments):
        for i_i, inst in enumerate(dep.instances):
            if masked(inst.args) != list(inst.args):
                found.append(f"deployments.{d_i}.instances.{i_i}.args")
    return found


_URL_CREDENTIALS = re.compile(r"(//[^/@:]+:)[^/@]+@|([?&](?:api_key|token|key)=)[^&]*")


def masked_document(value: Any, key: str = "") -> Any:
    """A matrix as JSON (model_dump) with every credential it holds literally masked, as `masked` does
    to a command line: `args` lists, token-looking strings, `env` values of *TOKEN names, credentials
    in a URL. What bakeoff may write to disk of a matrix (night.json)."""
    if isinstance(value, dict):
        return {
            k: MASK if key == "env" and str(k).endswith("TOKEN") else masked_document(v, str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        if key == "args" and all(isinstance(v, str) for v in value):
            return masked(value)
        return [masked_document(v, key) for v in value]
    if isinstance(value, str):
        if looks_like_token(value):
            return MASK
        return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1) or m.group(2)}{MASK}" + ("@" if m.group(1) else ""), value)
    return value


@dataclass(frozen=True)
class InstanceLaunch:
    spec: LaunchSpec  # argv, env (secrets included: never store it), port
    launcher: str  # process | docker
    model_arg: str  # the model as the engine is told it (a path here, /models/..., or a hub id)
    served_name: str
    memory_args: tuple[str, ...]
    gpu_index: int | None  # the GPU it is given; None: none
    image: str | None = None  # docker: the image to run
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def flags(self) -> list[str]:
        """The command line as stored in `deployments.flags`: without the binary of a process, credentials masked."""
        return masked(self.spec.argv[1:] if self.launcher == "process" else self.spec.argv)


def instance_launch(
    matrix: Matrix,
    planned: PlannedInstance,
    *,
    base_dir: Path,
    port: int,
    memory_args: Sequence[str] = (),
    images: dict[str, str] | None = None,
    launcher: str | None = None,
) -> InstanceLaunch:
    """The launch of one instance. memory_args: the planner's memory flag (tasks/gpu_memory.py), as the
    caller holds it; images: engine name -> the tag the night's build produced; launcher: instead of
    the engine's own (`bakeoff compose` writes containers whatever a night runs). Raises MatrixError
    (one line) for what the user can fix: a missing model file, an unbuilt binary, no image."""
    engine = matrix.engines[planned.engine_name]
    if launcher is not None and launcher != engine.launcher:
        engine = engine.model_copy(update={"launcher": launcher})
    model = matrix.models[planned.model_name]
    adapter = adapter_for(engine.kind)
    served_name = model.served_name or planned.model_name
    gpu = matrix.gpu_index if adapter.uses_gpu(engine) else None
    secrets = {name: os.environ[name] for name in engine.secret_env if name in os.environ}
    image, volumes = None, {}
    if engine.launcher == "docker":
        model_arg, volumes = container_model(model, base_dir)
        image = (images or {}).get(planned.engine_name) or engine.image or (engine.build.name if engine.build else None)
        if not image and launcher == "docker":  # compose of a process engine: the engine's upstream image
            image = adapter.compose_image(engine)
        if not image:
            raise MatrixError(f"engines.{planned.engine_name}: a docker engine needs `image` or `build`")
    else:
        model_arg = str(resolve_model_path(model, base_dir))
    spec = adapter.launch_spec(engine, planned.spec, model_arg, served_name, port, memory_args=list(memory_args))
    # what the engine's cache reset needs at start (vLLM's dev mode), under what the matrix sets
    reset = adapter.cache_reset_for(engine)
    env = {**(reset.needs_env if reset else {}), **spec.env, **secrets}
    if gpu is not None and engine.launcher == "process":
        env.setdefault("CUDA_VISIBLE_DEVICES", str(gpu))  # a local GPU build sees only its card
    return InstanceLaunch(
        spec=LaunchSpec(argv=spec.argv, env=env, port=spec.port),
        launcher=engine.launcher,
        model_arg=model_arg,
        served_name=served_name,
        memory_args=tuple(memory_args),
        gpu_index=gpu,
        image=image,
        volumes=volumes,
    )
