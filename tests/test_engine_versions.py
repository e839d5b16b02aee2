"""Engine versions: the version axis of a matrix, `bakeoff flags diff` (the CLI as a subprocess), the plan's
warnings about flags a pinned version lacks, and the per-version data in the adapters (cache resets,
/metrics names, the Blackwell profile reviews)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.engines import adapter_for
from tasks.engines.flagcheck import breaking, configured_flags, flag_warnings, profile_notes
from tasks.matrix import MatrixError, load_matrix
from tasks.plan import plan

ROOT = Path(__file__).resolve().parent.parent
BAKEOFF = Path(sys.executable).with_name("bakeoff")
TODAY = ROOT / "configs" / "rtx5090-today.yaml"
SEED = ROOT / "configs" / "rtx5090-seed.yaml"


def bakeoff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BAKEOFF), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def matrix_file(tmp_path: Path, engines: dict, deployments: list) -> Path:
    data = {
        "name": "axis",
        "engines": engines,
        "models": {"m": {"path": "org/m"}},
        "deployments": deployments,
        "workloads": [{"id": "w", "output_lengths": [8]}],
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- the version axis


def test_a_version_axis_is_one_configuration_per_version(tmp_path):
    path = matrix_file(
        tmp_path,
        {
            "vllm": {
                "kind": "vllm",
                "launcher": "docker",
                "image": "vllm/vllm-openai:v{version}",
                "versions": [{"version": "0.10.2", "profile": "blackwell"}, "0.34.0"],
            },
            "cpu": {"kind": "llamacpp", "version": "0.3.36"},
        },
        [
            {"id": "alone", "instances": [{"engine": "vllm", "model": "m", "memory_share": 0.5}]},
            {"id": "named", "instances": [{"id": "v", "engine": "vllm", "model": "m", "memory_share": 0.5}]},
            {"id": "cpu", "instances": [{"engine": "cpu", "model": "m"}]},
        ],
    )
    matrix, _ = load_matrix(path)
    assert sorted(matrix.engines) == ["cpu", "vllm-0.10.2", "vllm-0.34.0"]
    old, new = matrix.engines["vllm-0.10.2"], matrix.engines["vllm-0.34.0"]
    assert (old.version, old.image, old.profile) == ("0.10.2", "vllm/vllm-openai:v0.10.2", "blackwell")
    assert (new.version, new.image, new.profile) == ("0.34.0", "vllm/vllm-openai:v0.34.0", None)
    assert [d.id for d in matrix.deployments] == ["alone-0.10.2", "alone-0.34.0", "named-0.10.2", "named-0.34.0", "cpu"]
    groups = plan(matrix)
    ids = [(g.deployment_id, i.instance_id, i.engine_name) for g in groups for i in g.instances]
    assert ids[:4] == [
        ("alone-0.10.2", "alone-0.10.2-0", "vllm-0.10.2"),
        ("alone-0.34.0", "alone-0.34.0-0", "vllm-0.34.0"),
        ("named-0.10.2", "v-0.10.2", "vllm-0.10.2"),
        ("named-0.34.0", "v-0.34.0", "vllm-0.34.0"),
    ]
    # what the report pairs on (model, workload, load shape) is the same for both versions
    cells = {g.deployment_id: [(c.workload_id, c.shape.label) for c in g.cells] for g in groups}
    assert cells["alone-0.10.2"] == cells["alone-0.34.0"]


def test_the_expanded_matrix_dumps_alike_every_time():
    """night.json keeps the matrix dump; --resume compares it with the file's: the expansion is stable."""
    first, second = load_matrix(TODAY)[0].model_dump(mode="json"), load_matrix(TODAY)[0].model_dump(mode="json")
    assert first == second
    assert all(e["versions"] == [] for e in first["engines"].values())


@pytest.mark.parametrize(
    "engine, deployments, message",
    [
        (
            {"kind": "vllm", "image": "vllm/vllm-openai:v0.10.2", "versions": ["0.10.2", "0.34.0"]},
            None,
            "engines.vllm.versions.0: version '0.10.2' has no image, and engines.vllm.image",
        ),
        ({"kind": "vllm", "versions": ["0.34.0", "0.34.0"]}, None, "engines.vllm.versions: each version once"),
        ({"kind": "vllm"}, None, "engines.vllm: version: required field is missing (or give a version axis"),
        (
            {"kind": "vllm", "versions": ["0.10.2"]},
            [
                {
                    "id": "both",
                    "instances": [
                        {"engine": "vllm", "model": "m", "memory_share": 0.3},
                        {"engine": "other", "model": "m", "memory_share": 0.3},
                    ],
                }
            ],
            "deployments.0: group 'both' uses 2 engines with a version axis (other, vllm)",
        ),
    ],
)
def test_a_bad_version_axis_is_one_line(tmp_path, engine, deployments, message):
    engines = {"vllm": engine, "other": {"kind": "vllm", "versions": ["0.34.0"]}}
    deployments = deployments or [{"id": "d", "instances": [{"engine": "vllm", "model": "m"}]}]
    with pytest.raises(MatrixError) as err:
        load_matrix(matrix_file(tmp_path, engines, deployments))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_today_config_sets_today_beside_the_study():
    matrix, _ = load_matrix(TODAY)
    versions = {(e.kind, e.version, e.profile) for e in matrix.engines.values()}
    assert versions == {
        ("vllm", "0.10.2", "blackwell"),
        ("vllm", "0.34.0", None),
        ("sglang", "0.5.2", "blackwell"),
        ("sglang", "0.5.23", None),
    }
    assert matrix.engines["sglang-0.5.2"].image == "bakeoff/sglang-blackwell"
    assert matrix.engines["sglang-0.5.23"].image == "lmsysorg/sglang:v0.5.23"
    assert flag_warnings(matrix) == []  # today's versions plan cleanly with their tested flags


# ---------------------------------------------------------------- flags diff, for real


def test_flags_diff_prints_the_diff():
    result = bakeoff("flags", "diff", "vllm", "0.10.2", "0.34.0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("vllm 0.10.2 -> 0.34.0: 193 added, 31 removed, 10 changed default")
    assert "- --swap-space" in lines  # gone with the V0 engine
    assert "~ --gpu-memory-utilization  0.9 -> None" in lines
    assert "+ --attention-backend  (default None)" in lines  # an engine flag since 0.1x (an env var before)


def test_flags_diff_with_a_matrix_names_the_flags_that_break(tmp_path):
    path = matrix_file(
        tmp_path,
        {"vllm": {"kind": "vllm", "version": "0.10.2", "args": ["--swap-space", "4", "--seed=1"]}},
        [{"id": "d", "instances": [{"engine": "vllm", "model": "m", "args": ["--num-lookahead-slots", "2"]}]}],
    )
    result = bakeoff("flags", "diff", "vllm", "0.10.2", "0.34.0", "--matrix", str(path))
    assert result.returncode == 0, result.stderr
    tail = result.stdout.splitlines()[-3:]
    assert tail[0] == f"{path}: 2 configured vllm flag(s) that vllm 0.34.0 does not take"
    assert sorted(tail[1:]) == [
        "  --num-lookahead-slots  (engines.vllm, vllm 0.10.2; from deployments.0.instances.0.args)",
        "  --swap-space  (engines.vllm, vllm 0.10.2; from engines.vllm.args)",
    ]
    seed = bakeoff("flags", "diff", "sglang", "0.5.2", "0.5.23", "--matrix", str(SEED))
    assert seed.returncode == 0
    assert "--disable-cuda-graph  deprecated: use --cuda-graph-backend-{decode,prefill}=disabled" in seed.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("tgi", "1", "2"), "bakeoff: no flag lists for engine 'tgi'; engines with flag lists: sglang, vllm"),
        (("vllm", "0.10.2", "0.9.9"), "bakeoff: no flag list for vllm 0.9.9; listed: 0.10.2, 0.33.0, 0.34.0"),
    ],
)
def test_flags_diff_of_an_unknown_engine_or_version_is_one_line_exit_2(args, message):
    result = bakeoff("flags", "diff", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------- plan warnings


def test_plan_warns_once_per_flag_the_pinned_version_lacks(tmp_path):
    path = matrix_file(
        tmp_path,
        {
            "new": {
                "kind": "vllm",
                "launcher": "docker",
                "image": "v",
                "version": "0.34.0",
                "args": ["--swap-space", "4", "--enforce-eager"],
            },
            "sg": {"kind": "sglang", "launcher": "docker", "image": "s", "version": "0.5.23", "profile": "blackwell"},
            "odd": {"kind": "vllm", "launcher": "docker", "image": "v", "version": "0.30.0"},
        },
        [
            {"id": "a", "instances": [{"engine": "new", "model": "m", "memory_share": 0.2}]},
            {"id": "b", "instances": [{"engine": "new", "model": "m", "memory_share": 0.2, "args": ["--bogus"]}]},
            {"id": "c", "instances": [{"engine": "sg", "model": "m", "memory_share": 0.2}]},
            {"id": "d", "instances": [{"engine": "odd", "model": "m", "memory_share": 0.2}]},
        ],
    )
    result = bakeoff("plan", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: engines.new: vllm 0.34.0 has no flag --swap-space (from engines.new.args)",
        "warning: engines.new: vllm 0.34.0 has no flag --bogus (from deployments.1.instances.0.args)",
        "warning: engines.sg: sglang 0.5.23 calls --disable-cuda-graph deprecated: use "
        "--cuda-graph-backend-{decode,prefill}=disabled (from engines.sg.profile blackwell)",
        "warning: engines.odd: no flag list for vllm 0.30.0, its flags are unchecked "
        "(python -m tasks.engines.flags.refresh vllm 0.30.0)",
        "note: engines.sg: profile blackwell passes --disable-cuda-graph --disable-radix-cache --attention-backend "
        "--disable-custom-all-reduce, which sglang 0.5.23 no longer needs (from its source; docs/engine-versions.md)",
    ]
    assert "a: 1 instance(s)" in result.stdout


def test_configured_flags_name_where_each_comes_from():
    matrix, _ = load_matrix(SEED)
    where = {(c.engine_name, c.flag): c.where for c in configured_flags(matrix)}
    assert where[("vllm", "--enforce-eager")] == "engines.vllm.profile blackwell"
    assert where[("vllm", "--max-num-seqs")] == "bakeoff's vllm adapter"
    assert where[("sglang", "--mem-fraction-static")] == "bakeoff's sglang adapter"
    assert breaking(matrix, "vllm", "0.34.0") == []
    assert profile_notes(matrix) == []  # the study's versions: the study's workarounds, all still needed


# ---------------------------------------------------------------- per-version data in the adapters


def test_cache_resets_per_version():
    vllm, sglang = adapter_for("vllm"), adapter_for("sglang")
    old, new = vllm.cache_reset("0.10.2"), vllm.cache_reset("0.34.0")
    assert (old.method, old.path, old.needs_env, old.answer) == (
        "POST",
        "/reset_prefix_cache",
        {"VLLM_SERVER_DEV_MODE": "1"},
        "status",
    )
    assert new.answer == "json-success"
    assert vllm.cache_reset("0.9.0") is None  # older than any version read
    assert sglang.cache_reset("0.5.2").path == sglang.cache_reset("0.5.23").path == "/flush_cache"
    assert adapter_for("llamacpp").cache_reset("0.3.36") is None


def test_metric_names_per_version():
    vllm, sglang = adapter_for("vllm"), adapter_for("sglang")
    assert vllm.metric_names("0.10.2")["tpot_seconds"] == "vllm:time_per_output_token_seconds"
    assert vllm.metric_names("0.34.0")["tpot_seconds"] == "vllm:request_time_per_output_token_seconds"
    assert vllm.metric_names("0.33.5")["prefix_cache_hits"] == "vllm:prefix_cache_hits_total"
    assert sglang.metric_names("0.5.2")["aborted"] == "sglang:num_aborted_requests"
    assert sglang.metric_names("0.5.23")["aborted"] == "sglang:num_aborted_requests_total"


def test_every_profile_review_names_flags_of_its_profile_and_listed_versions():
    from tasks.engines import sglang as sglang_adapter
    from tasks.engines import vllm as vllm_adapter
    from tasks.engines.flags import listed_versions

    for kind, module in (("vllm", vllm_adapter), ("sglang", sglang_adapter)):
        for profile, by_version in module.PROFILE_REVIEWS.items():
            flags = [f for f in module.PROFILES[profile] if f.startswith("--")]
            assert set(by_version) == set(listed_versions(kind))
            for version, review in by_version.items():
                assert sorted(review.needed + review.not_needed) == sorted(flags), (kind, version)
                assert review.basis in ("measured", "source") and review.evidence
