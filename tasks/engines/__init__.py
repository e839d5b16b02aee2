"""Engine adapters, one module each, behind the small interface in `base`."""

from tasks.engines.base import EngineAdapter, LaunchSpec
from tasks.engines.external import ExternalAdapter
from tasks.engines.llamacpp import LlamaCppAdapter
from tasks.engines.sglang import SglangAdapter
from tasks.engines.vllm import VllmAdapter

ADAPTERS: dict[str, EngineAdapter] = {
    a.kind: a for a in (LlamaCppAdapter(), VllmAdapter(), SglangAdapter(), ExternalAdapter())
}


def adapter_for(kind: str) -> EngineAdapter:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise NotImplementedError(f"engine kind {kind!r} has no adapter yet (have: {sorted(ADAPTERS)})") from None


__all__ = ["ADAPTERS", "EngineAdapter", "LaunchSpec", "adapter_for"]
