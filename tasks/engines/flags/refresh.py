"""Refresh the list of flags an engine version accepts, from its real argument definitions.

    python -m tasks.engines.flags.refresh vllm 0.10.2
    python -m tasks.engines.flags.refresh sglang 0.5.2

Downloads the release from PyPI (no model hub, no container registry needed), parses the files that
define the server's arguments (AST: every string literal starting with "-" given to add_argument,
and the fields of vLLM's FrontendArgs dataclass, which become --field-name) and writes
tasks/engines/flags/ENGINE-VERSION.txt. tests/test_engine_flags.py checks every adapter's command
line against these lists, so an adapter that emits a flag its pinned version lacks fails a test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
SOURCES = {
    "vllm": ["vllm/engine/arg_utils.py", "vllm/entrypoints/openai/cli_args.py"],
    "sglang": ["sglang/srt/server_args.py"],
}
DATACLASS_FLAG_CLASSES = {"FrontendArgs"}  # vLLM: fields become --kebab-case flags


# pip of the system Python: a uv-made venv has none.
PIP = ["python3", "-m", "pip"]


def download(package: str, version: str, into: Path) -> Path:
    wheel = [
        *PIP,
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--python-version",
        "3.12",
        "--platform",
        "manylinux1_x86_64",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "any",
        f"{package}=={version}",
        "-d",
        str(into),
    ]
    if subprocess.run(wheel, capture_output=True).returncode != 0:
        sdist = [
            *PIP,
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            f"{package}=={version}",
            "-d",
            str(into),
        ]
        subprocess.run(sdist, check=True, capture_output=True)
    (found,) = [p for p in into.iterdir() if p.suffix in (".whl", ".gz")]
    return found


def read_sources(archive: Path, suffixes: list[str]) -> dict[str, str]:
    out = {}
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                for s in suffixes:
                    if name.endswith(s):
                        out[s] = z.read(name).decode()
    else:
        with tarfile.open(archive) as t:
            for member in t.getmembers():
                for s in suffixes:
                    if member.name.endswith(s) and s not in out:
                        out[s] = t.extractfile(member).read().decode()
    missing = set(suffixes) - set(out)
    if missing:
        raise SystemExit(f"{archive.name}: no {sorted(missing)}")
    return out


def flags_in(source: str) -> set[str]:
    tree = ast.parse(source)
    flags: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                    flags.add(arg.value)
        if isinstance(node, ast.ClassDef) and node.name in DATACLASS_FLAG_CLASSES:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    flags.add("--" + item.target.id.replace("_", "-"))
    return flags


def main(engine: str, version: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        archive = download(engine, version, Path(tmp))
        sources = read_sources(archive, SOURCES[engine])
        flags = set().union(*(flags_in(text) for text in sources.values()))
    out = HERE / f"{engine}-{version}.txt"
    header = [
        f"# {engine} {version}: flags from {', '.join(SOURCES[engine])} in {archive.name} (PyPI)",
        "# written by: python -m tasks.engines.flags.refresh " + f"{engine} {version}",
    ]
    out.write_text("\n".join(header + sorted(flags)) + "\n")
    print(f"{out}: {len(flags)} flags")
    return out


if __name__ == "__main__":
    main(*sys.argv[1:3])
