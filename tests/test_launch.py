"""One launch per instance (tasks/launch.py): what `bakeoff compose` and `bakeoff plan` show is what a
night starts, and the GPU rule is the adapter's, the same for every caller."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.compose import compose_file
from tasks.gpu_memory import plan_group, plan_text
from tasks.launch import display_port, instance_launch
from tasks.matrix import load_matrix
from tasks.plan import plan

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "configs" / "rtx5090-seed.yaml"


def gpu_matrix(tmp_path: Path, engines: dict) -> Path:
    data = {
        "name": "gpu-rule",
        "gpu": {"index": 3, "memory_total_mib": 81559},
        "engines": engines,
        "models": {"m": {"path": "org/model"}},
        "deployments": [{"id": "all", "instances": [{"id": name, "engine": name, "model": "m"} for name in engines]}],
        "workloads": [{"id": "w", "output_lengths": [8]}],
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("kind", "use_gpu", "gets_gpu"),
    [
        ("llamacpp", None, False),
        ("llamacpp", True, True),
        ("vllm", None, True),
        ("vllm", False, False),
        ("sglang", None, True),
        ("sglang", False, False),
    ],
)
def test_compose_and_a_night_give_the_gpu_by_the_same_rule(tmp_path, kind, use_gpu, gets_gpu):
    engine = {"kind": kind, "launcher": "docker", "image": f"img/{kind}", "version": "1"}
    if use_gpu is not None:
        engine["use_gpu"] = use_gpu
    path = gpu_matrix(tmp_path, {"e": engine})
    matrix, _ = load_matrix(path)
    (group,) = plan(matrix)
    (planned,) = group.instances
    launch = instance_launch(matrix, planned, base_dir=tmp_path, port=8000)
    assert launch.gpu_index == (3 if gets_gpu else None)
    service = yaml.safe_load(compose_file(matrix, "all", tmp_path))["services"]["e"]
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert [d["device_ids"] for d in devices] == ([["3"]] if gets_gpu else [])


def test_compose_and_plan_print_the_command_line_a_night_runs():
    matrix, _ = load_matrix(SEED)
    lines = "\n".join(plan_text(matrix, base_dir=SEED.parent))
    for group in plan(matrix):
        memory = {m.instance_id: m for m in plan_group(matrix, group)}
        services = yaml.safe_load(compose_file(matrix, group.deployment_id, SEED.parent))["services"]
        for planned in group.instances:
            mp = memory[planned.instance_id]
            night = instance_launch(
                matrix,
                planned,
                base_dir=SEED.parent,
                port=display_port(planned, mp.start_order),
                memory_args=mp.flag_args(),
            )
            assert services[planned.instance_id]["command"] == night.spec.argv
            assert f"{night.image} {' '.join(night.spec.argv)}" in lines


def test_a_process_on_the_gpu_sees_only_its_card(tmp_path):
    path = gpu_matrix(tmp_path, {"e": {"kind": "llamacpp", "version": "1", "use_gpu": True, "binary": "/bin/true"}})
    matrix, _ = load_matrix(path)
    (planned,) = plan(matrix)[0].instances
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    matrix.models["m"].path = str(model)
    launch = instance_launch(matrix, planned, base_dir=tmp_path, port=8000)
    assert launch.spec.env["CUDA_VISIBLE_DEVICES"] == "3"
    assert launch.flags == launch.spec.argv[1:] and launch.spec.argv[0] == "/bin/true"


def test_compose_of_a_process_engine_names_the_upstream_image():
    # the demo's matrix runs llama-server as a process and names no image: compose still writes a file a
    # person can run, on llama.cpp's own server image, and says the image was chosen for them
    matrix, _ = load_matrix(ROOT / "configs" / "cpu-smoke.yaml")
    text = compose_file(matrix, "p4-pair", ROOT / "configs")
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"pair-a", "pair-b"}
    assert {s["image"] for s in services.values()} == {"ghcr.io/ggml-org/llama.cpp:server"}
    assert "# pair-a: ghcr.io/ggml-org/llama.cpp:server is the engine's upstream image" in text
    assert services["pair-b"]["depends_on"] == {"pair-a": {"condition": "service_healthy"}}
    # an engine that names its image keeps it, with no such note
    seed, _ = load_matrix(SEED)
    group = next(g for g in plan(seed) if any(seed.engines[p.engine_name].image for p in g.instances))
    seed_text = compose_file(seed, group.deployment_id, SEED.parent)
    assert "upstream image" not in seed_text


def test_compose_carries_the_engines_env_and_never_a_credential(tmp_path):
    """The compose file is the report's deployment to copy: the env the night set (what was measured), a
    credential only as a reference to the shell's variable, a literal one in the args masked, and vLLM's
    dev mode, which the night set only for its cache reset, left out with a note."""
    token = "sk-LITERALliteralLITERALliteral1234"
    engine = {
        "kind": "vllm",
        "launcher": "docker",
        "image": "vllm/vllm-openai",
        "version": "0.33.0",
        "args": ["--api-key", token],
        "env": {"VLLM_ATTENTION_BACKEND": "FLASHINFER", "HF_TOKEN": token},
        "secret_env": ["OTHER_TOKEN"],
    }
    path = gpu_matrix(tmp_path, {"v": engine})
    matrix, _ = load_matrix(path)
    text = compose_file(matrix, "all", tmp_path)
    assert token not in text
    service = yaml.safe_load(text)["services"]["v"]
    assert service["environment"] == {
        "VLLM_ATTENTION_BACKEND": "FLASHINFER",
        "HF_TOKEN": "${HF_TOKEN}",
        "OTHER_TOKEN": "${OTHER_TOKEN}",
    }
    assert service["command"][service["command"].index("--api-key") + 1] == "***"
    assert "# v: a credential in its command line is masked" in text
    assert "# v: VLLM_SERVER_DEV_MODE=1 is left out" in text
