"""The Prometheus text parser used for engine_metrics (the live scrape is tested against the real
llama-server in test_engine_llamacpp.py)."""

from tasks.engine_metrics import parse_prometheus, scrape

TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:prefix_cache_hits_total{engine="0",model_name="qwen \\"q\\""} 1.5e3
llamacpp:tokens_predicted_total 19200
broken line without value
vllm:x{a="1"} NaN
"""


def test_parse_prometheus_samples():
    samples = parse_prometheus(TEXT)
    assert samples[0] == ("vllm:num_requests_running", {"engine": "0", "model_name": "qwen"}, 3.0)
    assert samples[1][1]["model_name"] == 'qwen "q"' and samples[1][2] == 1500.0
    assert samples[2] == ("llamacpp:tokens_predicted_total", {}, 19200.0)
    assert len(samples) == 4  # the broken line is skipped; NaN is a value


def test_no_metrics_endpoint_is_no_rows():
    assert scrape("http://127.0.0.1:9", "/metrics", run_id="r", cell_id="c", instance_id="i", phase="before") == []
    assert scrape("http://127.0.0.1:9", None, run_id="r", cell_id="c", instance_id="i", phase="before") == []
