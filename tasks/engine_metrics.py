"""Scrape an engine's Prometheus /metrics before and after each bench cell (vLLM, SGLang and
llama-server all serve one), so the warehouse keeps the engine's own view next to the client's
(e.g. llamacpp:tokens_predicted_total, vllm:num_preemptions_total, prefix cache hits)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import httpx

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in the text exposition format; comments skipped."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = {k: v.encode().decode("unicode_escape") for k, v in _LABEL.findall(m.group(3) or "")}
        samples.append((m.group(1), labels, value))
    return samples


def scrape(
    base_url: str, path: str | None, *, run_id: str, cell_id: str, instance_id: str, phase: str, timeout_s: float = 5.0
) -> list[dict]:
    """Rows for the engine_metrics table; none (not an error) when the engine serves no metrics."""
    if not path:
        return []
    try:
        response = httpx.get(base_url + path, timeout=timeout_s)
    except httpx.HTTPError:
        return []
    if response.status_code != 200:
        return []
    at = datetime.now(UTC)
    return [
        {
            "run_id": run_id,
            "cell_id": cell_id,
            "instance_id": instance_id,
            "phase": phase,
            "scraped_at": at,
            "metric": name,
            "labels": json.dumps(labels, sort_keys=True) if labels else None,
            "value": value,
        }
        for name, labels, value in parse_prometheus(response.text)
    ]
