-- Migration 12: the machine a night ran on, beyond its host name and GPU name, and the engine build each
-- instance ran, so the report's Environment says what a figure was measured on (tasks/runs.new_run,
-- tasks/deploy.launch_instance). NULL in rows of older runs, and where the machine does not say (no
-- /proc/cpuinfo model name, no GPU, NVML without a CUDA driver version).
-- Released migrations are never edited: add the next file.
ALTER TABLE runs ADD COLUMN cpu_model VARCHAR;            -- /proc/cpuinfo "model name", else platform.processor()
ALTER TABLE runs ADD COLUMN cpu_count INTEGER;            -- logical CPUs (os.cpu_count)
ALTER TABLE runs ADD COLUMN memory_total_mib BIGINT;      -- /proc/meminfo MemTotal
ALTER TABLE runs ADD COLUMN gpu_memory_total_mib BIGINT;  -- NVML, the matrix's gpu.index
ALTER TABLE runs ADD COLUMN cuda_version VARCHAR;         -- NVML's CUDA driver version, e.g. '12.8'
-- what ran: 'sha256:<hex>' of a process engine's binary file, a docker engine's image id ('sha256:<hex>')
ALTER TABLE deployments ADD COLUMN engine_artifact VARCHAR;
