"""Any OpenAI-compatible server that bakeoff does not start or stop (only benchmarks)."""

from tasks.engines.base import EngineAdapter


class ExternalAdapter(EngineAdapter):
    kind = "external"
    health_path = "/v1/models"
    metrics_path = None
