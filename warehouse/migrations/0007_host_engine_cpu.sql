-- Migration 7: the engine's own CPU beside the machine's, so a cell can say the machine was busy with
-- something else (a build, another benchmark, a backup) while it measured.
-- Released migrations are never edited: add the next file.
--
-- engine_cpu_pct: the CPU the engine's process tree (the engine process and its descendants) used since
-- the previous sample, as a share of the whole machine (the scale of cpu_util_pct: 100 = every core
-- busy). NULL when the process was gone or the sample is the first; rows of older runs have NULL.
ALTER TABLE host_samples ADD COLUMN engine_cpu_pct DOUBLE;
