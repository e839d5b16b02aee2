"""Any OpenAI-compatible server that bakeoff does not start or stop (only benchmarks). Before its
cells run it must answer GET /v1/models with a JSON object (`tasks/deploy.py wait_external_healthy`):
else it is a failed start, `unreachable` or `health_timeout`."""

from tasks.engines.base import CacheReset, EngineAdapter
from tasks.matrix import Engine, Workload


class ExternalAdapter(EngineAdapter):
    kind = "external"
    health_path = "/v1/models"
    metrics_path = None

    def request_extras(self, workload: Workload, engine: Engine | None = None) -> dict:
        """Only what the engine says it honours (`accepts`): an unknown server may reject fields outside the
        OpenAI API. The matrix refuses a workload asking for more (tasks/matrix.py)."""
        accepts = engine.accepts if engine is not None else []
        return {"ignore_eos": True} if workload.ignore_eos and "ignore_eos" in accepts else {}

    def cache_reset_for(self, engine: Engine) -> CacheReset | None:
        """The engine's own `cache_reset`, if the matrix names one: bakeoff cannot know what the server is."""
        spec = engine.cache_reset
        return None if spec is None else CacheReset(spec.method, spec.path, answer="json-success")
