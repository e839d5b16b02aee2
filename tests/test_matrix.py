"""The matrix file: the shipped configs load, and each kind of bad input is one clear line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.matrix import MatrixError, load_matrix
from tasks.plan import plan

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "cpu-smoke.yaml"


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def smoke_data() -> dict:
    """The shipped default cut to one group of one instance whose id is generated (`<group>-0`): the
    base the bad-input cases below mutate."""
    data = yaml.safe_load(SMOKE.read_text())
    instance = {k: v for k, v in data["deployments"][0]["instances"][0].items() if k != "id"}
    data["deployments"] = [{"id": "llamacpp-smollm2", "instances": [instance]}]
    return data


def test_cpu_smoke_compares_slots_and_a_colocated_pair():
    """The embedded default gives the report a comparison (1 vs 4 slots), a co-located group of two
    instances on the same cores, and the study's output lengths."""
    matrix, sha = load_matrix(SMOKE)
    groups = plan(matrix)
    assert len(sha) == 64
    assert [g.deployment_id for g in groups] == ["p4", "p1", "p4-pair"]
    assert [[p.spec.parallel for p in g.instances] for g in groups] == [[4], [1], [4, 4]]
    assert {c.concurrency for g in groups for c in g.cells} == {4}
    assert len({p.instance_id for g in groups for p in g.instances}) == 4
    assert matrix.workloads[0].output_lengths == [32, 64, 128, 256]


def test_plan_is_the_product_of_instances_workloads_levels_repeats(tmp_path):
    data = smoke_data()
    data["deployments"][0]["instances"].append(dict(data["deployments"][0]["instances"][0], id="second"))
    data["workloads"].append({"id": "short", "output_lengths": [8]})
    data["load"]["concurrency"] = [1, 2, 8]
    data["repeats"] = 2
    matrix, _ = load_matrix(write(tmp_path, data))
    (group,) = plan(matrix)
    assert len(group.cells) == 2 * 2 * 3 * 2
    assert len({c.cell_id for c in group.cells}) == len(group.cells)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["engines"]["llamacpp-cpu"].update(kind="tgi"), "engines.llamacpp-cpu.kind: 'tgi' is not allowed"),
        (
            lambda d: d["deployments"][0]["instances"][0].update(engine="nope"),
            "deployments.0.instances.0.engine: 'nope' is not one of engines",
        ),
        (
            lambda d: d["deployments"][0]["instances"][0].update(model="nope"),
            "deployments.0.instances.0.model: 'nope' is not one of models",
        ),
        (lambda d: d["load"].update(concurrency=[0]), "load.concurrency.0: Input should be greater than or equal to 1"),
        (
            lambda d: d["workloads"][0].update(output_lengths=[]),
            "workloads.0.output_lengths: List should have at least 1 item",
        ),
        (
            lambda d: d["deployments"][0]["instances"][0].update(memory_share=1.5),
            "deployments.0.instances.0.memory_share: Input should be less than or equal to 1",
        ),
        (lambda d: d.update(concurrency=[4]), "concurrency: unknown field"),
        (lambda d: d.pop("engines"), "engines: required field is missing"),
        (
            lambda d: d["engines"].update({"bad name!": d["engines"]["llamacpp-cpu"]}),
            "name 'bad name!' must be letters",
        ),
        (lambda d: d["engines"]["llamacpp-cpu"].update(kind="external"), "url: required for an external engine"),
        (lambda d: d["deployments"].append(d["deployments"][0]), "deployments: ids must be unique"),
        (
            lambda d: d["deployments"][0]["instances"].extend(
                [dict(d["deployments"][0]["instances"][0], id="twin")] * 2
            ),
            "deployments.0.instances.2.id: instance id 'twin' is already the id of deployments.0.instances.1;",
        ),
        (
            lambda d: [
                d["deployments"][0]["instances"][0].update(id="twin"),
                d["deployments"].append({"id": "other", "instances": [dict(d["deployments"][0]["instances"][0])]}),
            ],
            "deployments.1.instances.0.id: instance id 'twin' is already the id of deployments.0.instances.0;",
        ),
        (
            lambda d: d["deployments"][0]["instances"].append(
                dict(d["deployments"][0]["instances"][0], id="llamacpp-smollm2-0")
            ),
            "deployments.0.instances.1.id: instance id 'llamacpp-smollm2-0' is already the id of deployments.0.instances.0 "
            "(generated: llamacpp-smollm2-0)",
        ),
        (
            lambda d: [
                d["deployments"][0]["instances"].insert(
                    0, dict(d["deployments"][0]["instances"][0], id="llamacpp-smollm2-1")
                )
            ],
            "deployments.0.instances.1: instance generated id 'llamacpp-smollm2-1' is already the id of deployments.0.instances.0;",
        ),
    ],
)
def test_bad_field_names_file_field_and_rule(tmp_path, mutate, expected):
    data = smoke_data()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert expected in message
    assert "\n" not in message


def test_not_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nengines: [unclosed\n")
    with pytest.raises(MatrixError, match=r"line \d+: not valid YAML"):
        load_matrix(path)


def test_missing_file(tmp_path):
    with pytest.raises(MatrixError, match="cannot read the matrix file"):
        load_matrix(tmp_path / "absent.yaml")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"name": "x"}, "engines: required field is missing"),
        (None, "must be a YAML mapping"),
    ],
)
def test_cli_bad_matrix_exits_2_with_one_line(tmp_path, content, expected):
    path = write(tmp_path, yaml.safe_dump(content))
    result = run_cli("run", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert expected in result.stderr


def test_cli_missing_model_file_is_bad_input_before_anything_starts(tmp_path):
    data = smoke_data()
    data["models"]["smollm2-135m"]["path"] = "models/absent.gguf"
    path = write(tmp_path, data)
    result = run_cli("run", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "models.path: 'models/absent.gguf' resolves to" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".bakeoff").exists()  # nothing started, nothing written


def test_an_external_engine_must_say_it_honours_ignore_eos(tmp_path, capsys):
    """Seen with AIPerf and GuideLLM beside bakeoff: through an external engine ignore_eos was silently not
    sent, replies stopped at EOS and the throughput compared different work. Now refused, or sent."""
    from flows.cli import main
    from tasks.deploy import InstanceHandle
    from tasks.matrix import load_matrix

    data = {
        "name": "ext",
        "engines": {"ext": {"kind": "external", "version": "1", "url": "http://127.0.0.1:9", "launcher": "none"}},
        "models": {"m": {"path": "unused"}},
        "deployments": [{"id": "d", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", "output_lengths": [8]}],
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "workloads.0.ignore_eos: workload 'w' asks for ignore_eos" in err
    assert "add `accepts: [ignore_eos]` to engines.ext" in err
    data["engines"]["ext"]["accepts"] = ["ignore_eos"]
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    handle = InstanceHandle(row=None, engine_kind="external", engine=matrix.engines["ext"])  # type: ignore[arg-type]
    assert handle.request_extras(matrix.workloads[0]) == {"ignore_eos": True}  # declared: sent
    data["workloads"][0]["ignore_eos"] = False
    data["engines"]["ext"]["accepts"] = []
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)  # not asked for: nothing to honour
    assert (
        InstanceHandle(row=None, engine_kind="external", engine=matrix.engines["ext"]).request_extras(  # type: ignore[arg-type]
            matrix.workloads[0]
        )
        == {}
    )
