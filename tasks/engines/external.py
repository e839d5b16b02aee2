"""Any OpenAI-compatible server that bakeoff does not start or stop (only benchmarks)."""

from tasks.engines.base import EngineAdapter
from tasks.matrix import Workload


class ExternalAdapter(EngineAdapter):
    kind = "external"
    health_path = "/v1/models"
    metrics_path = None

    def request_extras(self, workload: Workload) -> dict:
        return {}  # an unknown server may reject fields outside the OpenAI API
