"""Any OpenAI-compatible server that bakeoff does not start or stop (only benchmarks). Before its
cells run it must answer GET /v1/models with a JSON object (`tasks/deploy.py wait_external_healthy`):
else it is a failed start, `unreachable` or `health_timeout`."""

from tasks.engines.base import EngineAdapter
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
