-- Migration 13: steal time, the share of the machine's CPU a VM's hypervisor gave to something else
-- while a cell ran (/proc/stat's steal column, per sample, as a share of every core's ticks since the
-- previous sample: the scale of cpu_util_pct). On a cloud VM a noisy neighbour slows the engine without
-- any process here to show for it (tasks/telemetry.py). NULL in rows of older runs.
-- Released migrations are never edited: add the next file.
ALTER TABLE host_samples ADD COLUMN steal_pct DOUBLE;
