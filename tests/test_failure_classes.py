"""Failure classes from real log lines: the engines' own messages (quoted from their sources, and
for llama.cpp, printed by the llama-server this project builds)."""

from __future__ import annotations

import pytest

from tasks.engines import adapter_for

GPU_CASES = [
    # vLLM v1 gpu_worker.init_device
    (
        "ValueError: Free memory on device (2.6/31.36 GiB) on startup is less than desired GPU memory utilization "
        "(0.25, 7.84 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
        "out_of_memory_at_start",
    ),
    # vLLM v1 kv_cache_utils.check_enough_kv_cache_memory
    (
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
        "initializing the engine.",
        "out_of_memory_at_start",
    ),
    (
        "ValueError: To serve at least one request with the models's max seq len (2048), (0.25 GiB KV cache is needed, "
        "which is larger than the available KV cache memory (0.11 GiB).",
        "out_of_memory_at_start",
    ),
    # SGLang model_runner (the study's failure)
    ("RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.", "out_of_memory_at_start"),
    (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 31.36 GiB",
        "out_of_memory_at_start",
    ),
    # PyTorch without sm_120 kernels (the study's reason for a custom SGLang image)
    ("RuntimeError: CUDA error: no kernel image is available for execution on the device", "cuda_arch_unsupported"),
    (
        "NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible with the current PyTorch installation.",
        "cuda_arch_unsupported",
    ),
    (
        "OSError: Qwen/Qwen2.5-3B-Instrct is not a local folder and is not a valid model identifier listed on "
        "'https://huggingface.co/models'",
        "model_not_found",
    ),
    ("huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error.", "model_not_found"),
    ("OSError: [Errno 98] Address already in use", "port_in_use"),
    ("RuntimeError: Found no NVIDIA driver on your system.", "cuda_unavailable"),
    ("api_server.py: error: unrecognized arguments: --gpu-memory-utilisation 0.3", "bad_flag"),
    ("launch_server.py: error: argument --mem-fraction-static: invalid float value: 'half'", "bad_flag"),
]


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
@pytest.mark.parametrize("line, expected", GPU_CASES)
def test_gpu_engine_failures(kind, line, expected):
    log = f"INFO 09-18 15:01:02 [api_server.py:1] starting\n{line}\nTraceback (most recent call last):\n"
    assert adapter_for(kind).classify_failure(log) == expected


LLAMACPP_CASES = [
    # printed by llama-server 0.3.36's vendored llama.cpp, seen here
    (
        "E gguf_init_from_file: failed to open GGUF file '/tmp/nonexist.gguf' (No such file or directory)\n"
        "E srv  llama_server: exiting due to model loading error",
        "model_not_found",
    ),
    (
        "E gguf_init_from_reader: invalid magic characters: 'garb', expected 'GGUF'\n"
        "E srv  llama_server: exiting due to model loading error",
        "model_load_failed",
    ),
    (
        "E srv  start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080\n"
        "E srv  llama_server: exiting due to HTTP server error",
        "port_in_use",
    ),
    ("error: invalid argument: --no-such-flag", "bad_flag"),
    ('error while handling argument "--parallel": stoi', "bad_flag"),
]


@pytest.mark.parametrize("log, expected", LLAMACPP_CASES)
def test_llamacpp_failures(log, expected):
    assert adapter_for("llamacpp").classify_failure(log) == expected


def test_an_unknown_failure_is_unclassified():
    assert adapter_for("vllm").classify_failure("INFO all good\nSegmentation fault") is None
