"""Every flag an adapter emits exists in the engine version it is pinned to (lists extracted from
the engines' own argument definitions by tasks/engines/flags/refresh.py), and the command lines carry
the planner's memory flag and the study's profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.engines import sglang as sglang_adapter
from tasks.engines import vllm as vllm_adapter
from tasks.engines.flags import flag_list
from tasks.gpu_memory import plan_group
from tasks.launch import instance_launch
from tasks.matrix import load_matrix
from tasks.plan import plan

ROOT = Path(__file__).resolve().parent.parent
FLAGS_DIR = ROOT / "tasks" / "engines" / "flags"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def known_flags(kind: str, version: str) -> set[str]:
    found = flag_list(kind, version)
    if found is None:
        pytest.fail(f"no flag list for {kind} {version}: run python -m tasks.engines.flags.refresh {kind} {version}")
    return set(found.flags)


def emitted_flags(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--")]


def command_lines():
    """(config, instance, kind, version, argv) for every GPU engine instance in the shipped configs."""
    for config in CONFIGS:
        matrix, _ = load_matrix(config)
        for group in plan(matrix):
            memory = {p.instance_id: p for p in plan_group(matrix, group)}
            for planned in group.instances:
                engine = matrix.engines[planned.engine_name]
                if engine.kind not in ("vllm", "sglang"):
                    continue
                launch = instance_launch(
                    matrix,
                    planned,
                    base_dir=config.parent,
                    port=8000,
                    memory_args=memory[planned.instance_id].flag_args(),
                )
                yield config.name, planned.instance_id, engine.kind, engine.version, launch.spec.argv


CASES = list(command_lines())


def test_the_seed_config_has_gpu_engines():
    kinds = {c[2] for c in CASES}
    assert kinds == {"vllm", "sglang"}


@pytest.mark.parametrize("config, instance, kind, version, argv", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_every_emitted_flag_exists_in_the_pinned_version(config, instance, kind, version, argv):
    unknown = [f for f in emitted_flags(argv) if f not in known_flags(kind, version)]
    assert not unknown, f"{instance}: {kind} {version} has no {unknown}"


@pytest.mark.parametrize("kind, profiles", [("vllm", vllm_adapter.PROFILES), ("sglang", sglang_adapter.PROFILES)])
def test_profiles_exist_in_every_listed_version(kind, profiles):
    versions = [p.stem.split("-", 1)[1] for p in FLAGS_DIR.glob(f"{kind}-*.txt")]
    assert versions
    for version in versions:
        for name, flags in profiles.items():
            unknown = [f for f in flags if f.startswith("--") and f not in known_flags(kind, version)]
            assert not unknown, f"{kind} {version} profile {name}: no {unknown}"


def test_the_study_flag_that_sglang_dropped_would_be_caught():
    # The study's SGLang set had --disable-flashinfer; the 0.5.2 CLI has no such flag.
    assert "--disable-flashinfer" not in known_flags("sglang", "0.5.2")
    assert {"--disable-cuda-graph", "--disable-radix-cache", "--attention-backend"} <= known_flags("sglang", "0.5.2")


def test_memory_flags_reach_the_command_line():
    argv_by_instance = {c[1]: c[4] for c in CASES if c[0] == "rtx5090-seed.yaml"}
    qwen = argv_by_instance["vllm-qwen-0"]
    assert qwen[qwen.index("--gpu-memory-utilization") + 1] == "0.25"
    assert "--enforce-eager" in qwen  # the blackwell profile
    study = argv_by_instance["sglang-study-tinyllama"]
    assert study[study.index("--mem-fraction-static") + 1] == "0.85"
    assert study[study.index("--attention-backend") + 1] == "torch_native"
    planned = argv_by_instance["sglang-planned-tinyllama"]
    assert float(planned[planned.index("--mem-fraction-static") + 1]) > 0.15


def test_refresh_parses_add_argument_and_frontend_fields():
    from tasks.engines.flags.refresh import flags_in

    source = """
from dataclasses import dataclass
@dataclass
class FrontendArgs:
    host: str = None
    allowed_origins: list = None
def add(parser):
    parser.add_argument("--model-path", "--model", type=str)
    parser.add_argument("-tp", "--tensor-parallel-size", type=int)
    group.add_argument("--enable-metrics", action="store_true", help="--not-a-flag")
"""
    assert flags_in(source) == {
        "--host",
        "--allowed-origins",
        "--model-path",
        "--model",
        "-tp",
        "--tensor-parallel-size",
        "--enable-metrics",
    }


def test_the_cold_workload_kinds_agree_with_the_report():
    from reports.method import COLD_WORKLOADS
    from tasks.workloads import COLD_WORKLOAD_KINDS

    assert COLD_WORKLOADS == COLD_WORKLOAD_KINDS


# ---------------------------------------------------------------- the committed lists, parsed for real


def test_every_committed_list_parses_with_a_header_and_defaults():
    from tasks.engines.flags import listed_kinds, listed_versions

    assert listed_kinds() == ["sglang", "vllm"]
    assert listed_versions("vllm") == ["0.10.2", "0.33.0", "0.34.0"]
    assert listed_versions("sglang") == ["0.5.2", "0.5.23"]
    for kind in listed_kinds():
        for version in listed_versions(kind):
            found = flag_list(kind, version)
            assert found is not None
            header = found.path.read_text().splitlines()[:2]
            assert header[0].startswith(f"# {kind} {version}: flags and defaults from ") and "(PyPI)" in header[0]
            assert header[1] == f"# written by: python -m tasks.engines.flags.refresh {kind} {version}"
            assert len(found.flags) > 150
            assert all(f.name.startswith("-") and f.default for f in found.flags.values())


def test_the_lists_hold_what_the_sources_say():
    v_old, v_new = flag_list("vllm", "0.10.2"), flag_list("vllm", "0.34.0")
    assert v_old.flags["--gpu-memory-utilization"].default == "0.9"
    assert v_new.flags["--gpu-memory-utilization"].default == "None"  # 0.34: chosen at start (0.92 or less)
    assert v_old.flags["--port"].default == v_new.flags["--port"].default == "8000"
    assert v_new.flags["--enforce-eager"].default == "False"
    s_new = flag_list("sglang", "0.5.23")
    assert s_new.flags["--port"].default == "30000"
    assert s_new.flags["--disable-cuda-graph"].deprecated == (
        "deprecated: use --cuda-graph-backend-{decode,prefill}=disabled"
    )
    assert "--cuda-graph-backend-decode" in s_new.flags and "--cuda-graph-backend-decode" not in known_flags(
        "sglang", "0.5.2"
    )


def test_lookup_reads_a_command_line_word_as_the_engine_does():
    v = flag_list("vllm", "0.34.0")
    assert v.lookup("--max-num-seqs=8").name == "--max-num-seqs"
    assert v.lookup("--max_num_seqs").name == "--max-num-seqs"  # vLLM's parser takes underscores
    assert v.lookup("--no-enforce-eager").name == "--enforce-eager"  # BooleanOptionalAction
    assert v.lookup("--no-such-flag") is None
    s = flag_list("sglang", "0.5.23")
    assert s.lookup("--no-disable-radix-cache") is None  # SGLang's store_true flags have no --no- form


def test_diff_between_the_study_and_today():
    from tasks.engines.flags import diff

    d = diff("vllm", "0.10.2", "0.34.0")
    assert d.added and d.removed and d.changed
    names = {f.name for f in d.added}
    assert "--kv-cache-memory-bytes" in names or len(names) > 100
    assert ("--gpu-memory-utilization", "0.9", "None") in d.changed
    assert d.lines()[0].startswith(f"vllm 0.10.2 -> 0.34.0: {len(d.added)} added, {len(d.removed)} removed")
    same = diff("sglang", "0.5.23", "0.5.23")
    assert not (same.added or same.removed or same.changed)


def test_refresh_reads_sglang_annotated_fields_and_deprecations():
    import ast

    from tasks.engines.flags.refresh import Defaults, _add_argument_flags, _annotated_field_flags

    fields = ast.parse(
        """
class Memory(msgspec.Struct):
    disable_radix_cache: A[bool, Arg(help="x", resolvable=True)] = False
    mem_fraction_static: A[Optional[float], "help"] = None
    tp_size: A[int, Arg(cli_name="--tensor-parallel-size", aliases=["--tp-size"])] = 1
    disable_cuda_graph: A[bool, Arg(no_cli=True)] = False
    plain: int = 3
"""
    )
    args = ast.parse(
        """
def add(parser):
    parser.add_argument("--disable-cuda-graph", action=DeprecatedStoreTrueAction, new_flag="--cuda-graph-backend=off")
"""
    )
    d = Defaults([fields, args])
    assert _annotated_field_flags(fields, d) == {
        "--disable-radix-cache": "False",
        "--mem-fraction-static": "None",
        "--tensor-parallel-size": "1",
        "--tp-size": "1",
    }
    assert _add_argument_flags(args, d) == {"--disable-cuda-graph": "False\tdeprecated: use --cuda-graph-backend=off"}
