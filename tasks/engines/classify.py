"""Failure classes shared by the GPU engines, each with the log lines that show it (quoted from
vLLM's and SGLang's sources and from CUDA/PyTorch, which both print)."""

# (failure class, regex), first match wins: the most specific first.
GPU_FAILURE_PATTERNS: list[tuple[str, str]] = [
    # vLLM v1 worker, at start: the requested share of total memory is not free.
    ("out_of_memory_at_start", r"Free memory on device .* on startup is less than desired GPU memory utilization"),
    # vLLM: nothing left for the KV cache after weights and activations.
    ("out_of_memory_at_start", r"No available memory for the cache blocks"),
    ("out_of_memory_at_start", r"KV cache is needed, which is larger than the available KV cache memory"),
    # SGLang model_runner: rest memory <= 0 (the study's failure).
    ("out_of_memory_at_start", r"Not enough memory\. Please try to increase --mem-fraction-static"),
    ("out_of_memory_at_start", r"CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError: CUDA"),
    # A PyTorch/kernel build without code for this GPU (e.g. sm_120 Blackwell on an older wheel).
    ("cuda_arch_unsupported", r"no kernel image is available for execution on the device"),
    ("cuda_arch_unsupported", r"CUDA capability sm_\d+ is not compatible with the current PyTorch installation"),
    ("model_not_found", r"is not a local folder and is not a valid model identifier"),
    ("model_not_found", r"Repository Not Found|RepositoryNotFoundError|GatedRepoError|401 Client Error"),
    ("model_not_found", r"No such file or directory: '[^']*(config\.json|\.safetensors|\.gguf)'"),
    ("port_in_use", r"Address already in use"),
    ("cuda_unavailable", r"Found no NVIDIA driver|CUDA driver initialization failed|No CUDA GPUs are available"),
    # argparse (both servers' CLIs): an unknown flag, or a value it cannot parse
    ("bad_flag", r"error: unrecognized arguments:|error: argument --[\w-]+: (invalid|expected)"),
]
