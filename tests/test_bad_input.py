"""Bad input (issue 12): every bad matrix or prompts file is ONE line on stderr naming the file, the
field or the value and what is allowed, exit 2, no traceback; `bakeoff run` refuses it before any
engine starts.

The corpus is tests/data/bad-matrix/ (one small file per case); the big or odd ones (50 MB, a billion
laughs, 500 levels deep, a symlink loop, a directory, a FIFO) are made here in tmp_path. Each case runs
through both `bakeoff plan FILE` and `bakeoff run FILE` as the real console script. Then the messages
themselves, in-process, and a property test: any YAML document loads to a plan or is one MatrixError line.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import matrix as matrix_module
from tasks.errors import BadInput
from tasks.matrix import MatrixError, load_matrix
from tasks.plan import plan
from tasks.workloads import load_prompts

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "bad-matrix"
SMOKE = ROOT / "configs" / "cpu-smoke.yaml"
BAKEOFF = Path(sys.executable).with_name("bakeoff")

# corpus file -> what its one line must say (besides the file's name)
EXPECTED = {
    "binary.yaml": ["binary file", "UTF-8 YAML text"],
    "cache-reset-not-external.yaml": [
        "engines.cpu: cache_reset: only for an external engine",
        "docs/engine-versions.md",
    ],
    "cache-reset-path.yaml": ["engines.ext.cache_reset.path: not a path; allowed: a path on the engine's url"],
    "duplicate-key.yaml": ["line 22: key 'concurrency' appears twice", "first on line 21"],
    "duration-inf.yaml": ["load.duration_s: Input should be a finite number (got inf)"],
    "empty-model-path.yaml": ["models.smol.path: String should have at least 1 character"],
    "empty.yaml": ["must be a YAML mapping", "got an empty file"],
    "only-comments.yaml": ["must be a YAML mapping", "got an empty file"],
    "latin1.yaml": ["line 2: byte 0xe9 is not UTF-8", "must be UTF-8 text"],
    "memory-over-one.yaml": ["deployments.0: group 'pair' asks for 1.1 of one GPU's memory", "big 0.6 + also-big 0.5"],
    "not-a-mapping.yaml": ["must be a YAML mapping", "got a list"],
    "prompts-binary.yaml": ["prompts/binary.yaml: a binary file"],
    "prompts-duplicate-key.yaml": ["prompts/duplicate-key.yaml: line 4: key 'text' appears twice"],
    "prompts-latin1.yaml": ["prompts/latin1.yaml: line 3: byte 0xe9 is not UTF-8"],
    "prompts-not-yaml.yaml": ["prompts/not-yaml.yaml: line 4: not valid YAML (column 7:"],
    "prompts-wrong-shape.yaml": ["prompts/wrong-shape.yaml: prompts must be a list of entries with 'id' and 'text'"],
    "rate-nan.yaml": ["load.rates.0: Input should be a finite number (got nan)"],
    "requests-too-many.yaml": ["load.requests_per_cell: 10,000,000 requests per cell", "at most 2 GiB per cell"],
    "several-errors.yaml": [
        "engines.cpu.kind: 'tgi' is not allowed",
        "deployments.0.instances.0.parallel: Input should be greater than or equal to 1",
        "repeats: Input should be greater than or equal to 1",
    ],
    "syntax-error.yaml": ["line 15: not valid YAML (column 41: expected ',' or ']'"],
    "timeout-neg-inf.yaml": ["load.request_timeout_s: Input should be a finite number (got -inf)"],
    "unknown-key.yaml": ["deploymnets: unknown field; did you mean 'deployments'?"],
    "url-bad-scheme.yaml": ["engines.ext.url: scheme 'ftp'; allowed: an http:// or https:// URL with a host"],
    "url-no-host.yaml": ["engines.ext.url: no host; allowed"],
    "url-not-a-url.yaml": ["engines.ext.url: scheme 'localhost'; allowed"],
}

# A valid matrix (the corpus's own base) for the generated cases to break.
BASE = (CORPUS / "duration-inf.yaml").read_text().split("load:")[0]


def generated(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    """The cases too big or too odd to commit: name -> (path, what the line must say)."""
    cases: dict[str, tuple[Path, list[str]]] = {}

    def case(name: str, text: str, *expected: str) -> None:
        path = tmp_path / name
        path.write_text(text)
        cases[name] = (path, list(expected))

    # 50 MB: refused from its size, before a byte is parsed (PyYAML took minutes on it).
    case("big.yaml", BASE + "description: |\n" + ("  " + "x" * 98 + "\n") * 525_000, "larger than a matrix file")
    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        laughs += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    case("bomb.yaml", BASE + "description: x\nslo:\n  " + laughs.replace("\n", "\n  "), "aliases expand to more than")
    case("deep-lists.yaml", BASE + "description: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than 32 levels")
    case("deep-maps.yaml", BASE + "gpu: " + "{a: " * 500 + "1" + "}" * 500 + "\n", "nested deeper than 32 levels")
    case("self-alias.yaml", BASE + "slo: &x {ttft_ms: *x}\n", "an alias refers to the node that contains it")
    case("huge-int.yaml", BASE + "repeats: " + "9" * 5000 + "\n", "a value cannot be read")
    (tmp_path / "folder.yaml").mkdir()
    cases["folder.yaml"] = (tmp_path / "folder.yaml", ["is a directory"])
    os.symlink(tmp_path / "loop-b.yaml", tmp_path / "loop-a.yaml")
    os.symlink(tmp_path / "loop-a.yaml", tmp_path / "loop-b.yaml")
    cases["loop-a.yaml"] = (tmp_path / "loop-a.yaml", ["Too many levels of symbolic links"])
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it would block forever
    cases["fifo.yaml"] = (tmp_path / "fifo.yaml", ["not a regular file"])
    cases["absent.yaml"] = (tmp_path / "absent.yaml", ["cannot read the matrix file (No such file or directory)"])
    return cases


def assert_one_line(result: subprocess.CompletedProcess, path: Path, expected: list[str], command: str) -> None:
    err = result.stderr
    assert result.returncode == 2, f"{command}: exit {result.returncode}\n{err[-2000:]}\n{result.stdout[-500:]}"
    assert "Traceback" not in err, err[-2000:]
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err[-2000:]
    assert err.startswith("bakeoff: ")
    assert len(err) < 2000, err
    assert path.name in err or any(e.split(":")[0] in err for e in expected if "/" in e.split(":")[0]), err
    for text in expected:
        assert text in err, (command, err)


def plan_and_run(path: Path, cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """`bakeoff plan PATH` and `bakeoff run PATH`, started together (they are independent); run's
    warehouse and runs folder are under cwd, so anything it started writing would show there."""
    env = {
        **os.environ,
        "BAKEOFF_WAREHOUSE": str(cwd / ".bakeoff" / "bakeoff.duckdb"),
        "BAKEOFF_RUNS_DIR": str(cwd / ".bakeoff" / "runs"),
        "PREFECT_HOME": str(cwd / ".prefect"),
    }
    procs = {
        command: subprocess.Popen(
            [str(BAKEOFF), command, str(path)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for command in ("plan", "run")
    }
    results = {}
    for command, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"bakeoff {command} {path.name} did not refuse within 120 s (a night started?)")
        results[command] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def test_the_corpus_is_what_the_table_says():
    assert sorted(p.name for p in CORPUS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_corpus_file_is_one_line_exit_2_in_plan_and_run(name, tmp_path):
    path = CORPUS / name
    results = plan_and_run(path, tmp_path)
    for command, result in results.items():
        assert_one_line(result, path, EXPECTED[name], command)
    assert not (tmp_path / ".bakeoff").exists()  # run: refused before anything started or was written
    assert not (tmp_path / ".prefect").exists()  # ... before Prefect, whose server comes before any engine


GENERATED = ["big.yaml", "bomb.yaml", "deep-lists.yaml", "deep-maps.yaml", "self-alias.yaml", "huge-int.yaml"]
GENERATED += ["folder.yaml", "loop-a.yaml", "fifo.yaml", "absent.yaml"]


@pytest.mark.parametrize("name", GENERATED)
def test_a_generated_file_is_one_line_exit_2_in_plan_and_run(name, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    path, expected = generated(files)[name]
    results = plan_and_run(path, tmp_path)
    for command, result in results.items():
        assert_one_line(result, path, expected, command)
    assert not (tmp_path / ".bakeoff").exists()
    assert not (tmp_path / ".prefect").exists()


# ---------------------------------------------------------------- the messages, in-process


def smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def refused(tmp_path: Path, data: dict | str) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and len(message.splitlines()) == 1, message
    return message.removeprefix(f"{path}: ")


def test_every_validation_error_is_named_the_first_first(tmp_path):
    data = smoke()
    data["engines"]["llamacpp-cpu"]["kind"] = "tgi"
    data["deployments"][0]["instances"][0]["parallel"] = 0
    data["load"]["concurrency"] = [0, 5000]
    message = refused(tmp_path, data)
    parts = message.split("; ")
    assert parts[0] == "engines.llamacpp-cpu.kind: 'tgi' is not allowed"
    assert "deployments.0.instances.0.parallel: Input should be greater than or equal to 1 (got 0)" in parts
    assert "load.concurrency.0: Input should be greater than or equal to 1 (got 0)" in parts
    assert "load.concurrency.1: Input should be less than or equal to 4096 (got 5000)" in parts
    assert "more" not in message


def test_a_flood_of_errors_is_counted_past_twenty(tmp_path):
    data = smoke()
    data["workloads"][0]["output_lengths"] = [0] * 50
    message = refused(tmp_path, data)
    assert message.count("workloads.0.output_lengths.") == matrix_module.MAX_ERRORS_SHOWN
    assert message.endswith("; and 30 more")


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda d: d.update(deploymnets=d.pop("deployments")),
            "deploymnets: unknown field; did you mean 'deployments'?",
        ),
        (
            lambda d: d["engines"]["llamacpp-cpu"].update(verison="1"),
            "engines.llamacpp-cpu.verison: unknown field; did you mean 'version'?",
        ),
        (
            lambda d: d["deployments"][0]["instances"][0].update(memory_shares=0.5),
            "deployments.0.instances.0.memory_shares: unknown field; did you mean 'memory_share'?",
        ),
        (lambda d: d["load"].update(concurency=[4]), "load.concurency: unknown field; did you mean 'concurrency'?"),
        (
            lambda d: d["load"].update(sweep={"rate": 3}),
            "load.sweep.rate: unknown field; did you mean 'rates'?",
        ),
        (lambda d: d["slo"].update(zzz=1), "slo.zzz: unknown field; allowed: ttft_ms, tpot_ms, e2e_ms"),
    ],
)
def test_an_unknown_key_gets_the_closest_field(tmp_path, mutate, expected):
    data = smoke()
    mutate(data)
    assert expected in refused(tmp_path, data)


def test_a_duplicate_key_names_the_key_and_both_lines(tmp_path):
    text = SMOKE.read_text().replace("repeats: 1\n", "repeats: 1\nrepeats: 2\n")
    line = text.splitlines().index("repeats: 2") + 1
    assert refused(tmp_path, text).startswith(
        f"line {line}: key 'repeats' appears twice in one mapping (first on line {line - 1})"
    )


def test_merge_keys_load(tmp_path):
    text = SMOKE.read_text().replace(
        "      - id: llamacpp-p1\n        engine: llamacpp-cpu\n",
        "      - &p1 {id: llamacpp-p1, engine: llamacpp-cpu, model: smollm2-135m}\n"
        "      - <<: *p1\n        id: llamacpp-p1b\n        engine: llamacpp-cpu\n",
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    matrix, _ = load_matrix(path)
    assert [i.id for i in matrix.deployments[1].instances] == ["llamacpp-p1", "llamacpp-p1b"]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["load"].update(duration_s=float("inf")), "load.duration_s"),
        (lambda d: d["load"].update(request_timeout_s=float("nan")), "load.request_timeout_s"),
        (lambda d: d["slo"].update(ttft_ms=float("inf")), "slo.ttft_ms"),
        (lambda d: d["workloads"][0].update(temperature=float("inf")), "workloads.0.temperature"),
        (
            lambda d: d["engines"]["llamacpp-cpu"].update(startup_timeout_s=float("inf")),
            "engines.llamacpp-cpu.startup_timeout_s",
        ),
        (lambda d: d["load"].update(rates=[1.0, float("nan")], concurrency=[]), "load.rates.1"),
    ],
)
def test_non_finite_floats_are_refused(tmp_path, mutate, field):
    data = smoke()
    mutate(data)
    assert f"{field}: Input should be a finite number" in refused(tmp_path, data)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda d: d["models"]["smollm2-135m"].update(path=""),
            "models.smollm2-135m.path: String should have at least 1 character",
        ),
        (
            lambda d: d["engines"]["llamacpp-cpu"].update(version=""),
            "engines.llamacpp-cpu.version: String should have at least 1",
        ),
        (
            lambda d: d["workloads"][0].update(prompts=""),
            "workloads.0.prompts: String should have at least 1 character",
        ),
        (
            lambda d: d["load"].update(warmup_requests=10**9),
            "load.warmup_requests: Input should be less than or equal to 100000",
        ),
    ],
)
def test_empty_or_unbounded_values_that_make_no_sense(tmp_path, mutate, expected):
    data = smoke()
    mutate(data)
    assert expected in refused(tmp_path, data)


def external(url: str) -> dict:
    return {
        "name": "ext",
        "engines": {
            "ext": {"kind": "external", "version": "1", "url": url, "launcher": "none", "accepts": ["ignore_eos"]}
        },
        "models": {"m": {"path": "served"}},
        "deployments": [{"id": "d", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", "output_lengths": [8]}],
    }


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ftp://10.0.0.1/v1", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("127.0.0.1:8000", "no scheme"),
        ("//host:8000", "no scheme"),
        ("http://", "no host"),
        ("https://:443/v1", "no host"),
        ("http://host:99999/v1", "a port that is not a number"),
        ("http://host:port/v1", "a port that is not a number"),
    ],
)
def test_a_url_must_be_http_with_a_host(tmp_path, url, expected):
    message = refused(tmp_path, external(url))
    assert message.startswith(f"engines.ext.url: {expected}"), message
    assert "allowed: an http:// or https:// URL with a host" in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "https://api.example.com/v1", "http://[::1]:8000"])
def test_good_urls_load(tmp_path, url):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(external(url)))
    assert load_matrix(path)[0].engines["ext"].url == url


def gpu_matrix(*instances: dict, kind: str = "vllm") -> dict:
    return {
        "name": "gpu",
        "engines": {"e": {"kind": kind, "version": "1", "launcher": "docker", "image": "img"}},
        "models": {"m": {"path": "org/model"}},
        "deployments": [
            {"id": "solo", "instances": [{"engine": "e", "model": "m", "memory_share": 0.9}]},
            {"id": "pair", "instances": [{"engine": "e", "model": "m", **i} for i in instances]},
        ],
        "workloads": [{"id": "w", "output_lengths": [8]}],
    }


def test_shares_of_one_gpu_above_one_are_refused_naming_group_instances_and_sum(tmp_path):
    message = refused(
        tmp_path,
        gpu_matrix({"id": "a", "memory_share": 0.45}, {"memory_share": 0.25}, {"id": "c", "memory_share": 0.35}),
    )
    assert message.startswith(
        "deployments.1: group 'pair' asks for 1.05 of one GPU's memory (a 0.45 + pair-1 0.25 + c 0.35)"
    )


def test_a_vllm_memory_flag_counts_an_sglang_one_does_not(tmp_path):
    """vLLM's flag is a share of the total, so it adds up; SGLang's is a share of what is free at its
    start (0.6 after 0.5 is taken is 0.3 of the card), which the planner judges."""
    message = refused(tmp_path, gpu_matrix({"id": "a", "memory_share": 0.5}, {"id": "b", "memory_flag": 0.6}))
    assert "(a 0.5 + b 0.6)" in message
    path = tmp_path / "ok.yaml"
    path.write_text(
        yaml.safe_dump(gpu_matrix({"id": "a", "memory_share": 0.5}, {"id": "b", "memory_flag": 0.6}, kind="sglang"))
    )
    load_matrix(path)


def test_shares_that_fit_load_and_cpu_instances_do_not_count(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        yaml.safe_dump(
            gpu_matrix({"memory_share": 0.15}, {"memory_share": 0.25}, {"memory_share": 0.45}, {"memory_share": 0.15})
        )
    )
    load_matrix(path)  # the study's three vLLM instances and one more: exactly 1
    data = gpu_matrix({"memory_share": 0.6}, {"memory_share": 0.6}, kind="llamacpp")
    data["engines"]["e"] = {"kind": "llamacpp", "version": "1"}  # on the CPU: no GPU memory to share
    path.write_text(yaml.safe_dump(data))
    load_matrix(path)


def test_the_shipped_configs_load():
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        matrix, _ = load_matrix(config)
        assert plan(matrix), config


def test_a_cell_whose_records_would_not_fit_in_memory_is_refused(tmp_path):
    data = smoke()
    bound = matrix_module.MAX_CELL_RECORD_BYTES // (
        matrix_module.RECORD_BYTES + matrix_module.RECORD_BYTES_PER_TOKEN * 256
    )
    data["load"]["requests_per_cell"] = bound
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    load_matrix(path)  # at the bound: loads
    data["load"]["requests_per_cell"] = bound + 1
    message = refused(tmp_path, data)
    assert message.startswith(f"load.requests_per_cell: {bound + 1:,} requests per cell of workload 'study'")
    assert f"at most 2 GiB per cell: at most {bound:,} requests here" in message


def test_a_synthetic_workload_too_big_for_memory_names_its_num_requests(tmp_path):
    data = smoke()
    data["workloads"] = [{"id": "long", "kind": "random", "num_requests": 1_000_000, "output_tokens": 32768}]
    assert refused(tmp_path, data).startswith(
        "workloads.0.num_requests: 1,000,000 requests per cell of workload 'long'"
    )


def test_a_newline_in_a_key_stays_on_one_line(tmp_path):
    data = smoke()
    data["bad\nkey"] = 1  # an unknown key: its name is the field path
    assert refused(tmp_path, data).startswith("'bad\\nkey': unknown field")


def test_prompts_files_are_read_with_the_same_bounds(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("prompts:\n  - {id: a, text: hello, topic: x}\n  - {id: 2, text: world}\n")
    assert load_prompts(good) == [("a", "hello"), ("2", "world")]
    for text, expected in [
        ("prompts:\n  - {id: [1], text: x}\n", "prompts.0.id: must be a non-empty string or a number"),
        ("prompts:\n  - {id: a, text: 3}\n", "prompts.0.text: must be non-empty text"),
        ("prompts:\n  - {id: a, text: x}\n  - {id: a, text: y}\n", "prompt ids must be unique, repeated: ['a']"),
        ("prompts: " + "[" * 100 + "]" * 100, "nested deeper than 32 levels"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(MatrixError) as err:
            load_prompts(bad)
        assert expected in str(err.value) and str(err.value).startswith(str(bad))
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(matrix_module.MAX_PROMPTS_BYTES + 1)
    with pytest.raises(MatrixError, match="larger than a prompts file may be"):
        load_prompts(big)


# ---------------------------------------------------------------- the property


def mutations() -> st.SearchStrategy[dict]:
    """The shipped default with one thing wrong: a key dropped, renamed or given a value of another type."""
    base = smoke()

    def paths(node, prefix=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield (*prefix, k)
                yield from paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from paths(v, (*prefix, i))

    all_paths = list(paths(base))
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(10**6), 10**12), st.floats(allow_nan=True), st.text(max_size=12)
    )
    values = st.one_of(
        scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=6), scalars, max_size=3)
    )

    @st.composite
    def mutated(draw) -> dict:
        data = copy.deepcopy(base)
        path = draw(st.sampled_from(all_paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        how = draw(st.sampled_from(["drop", "rename", "retype"]))
        if how == "drop":
            del parent[key]
        elif how == "rename":
            parent[draw(st.text(min_size=1, max_size=12))] = parent.pop(key)
        else:
            parent[key] = draw(values)
        return data

    return mutated()


def documents() -> st.SearchStrategy:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["engines", "models"]),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(
                st.one_of(st.text(max_size=10), st.sampled_from(list(matrix_module.Matrix.model_fields))),
                children,
                max_size=5,
            ),
        ),
        max_leaves=30,
    )


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    text=st.one_of(
        documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
        mutations().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
        st.text(alphabet=st.sampled_from(list("{}[]&*!|>'\"#%@`:,-?. \n\tab01é\x85")), max_size=60),
    )
)
def test_any_document_loads_to_a_plan_or_is_one_bad_input_line(tmp_path, text):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    try:
        matrix, _ = load_matrix(path)
    except BadInput as exc:
        assert isinstance(exc, MatrixError)
        message = str(exc)
        assert len(message.splitlines()) == 1 and message.startswith(str(path)), message
        return
    assert plan(matrix)
