"""The structured workload kind: prompts that ask for JSON, each with its JSON schema, sent with the
OpenAI API's `response_format`, and every ok reply judged against its schema afterwards.

A schema set is a YAML file (`tasks/data/schemas_<name>.yaml` by name, or a path): `schemas:`, each with
an `id`, a `schema` (checked against its own JSON Schema draft when the file is read) and `prompts`. The
request's text is the prompt then the schema, so the unconstrained twin (response_format none) and a
`json_object` request are told the same thing a `json_schema` request is made to follow.

Judging happens after the cell, never on the load generator's hot path: the load generator keeps the
reply text of a request whose spec has a schema (tasks/loadgen.py), and `judge` parses it and validates
it with the jsonschema library (`output_parsed`, `output_valid`, `validation_error`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from tasks.matrix import MAX_PROMPTS_BYTES, MatrixError, builtin_or_file, read_yaml
from tasks.records import RequestRecord

MAX_SCHEMA_NODES = 200_000
VALIDATION_ERROR_CHARS = 300
INSTRUCTION = "Reply with only a JSON object that follows this JSON schema:"


@dataclass(frozen=True)
class Schema:
    schema_id: str
    difficulty: float | None
    schema: dict[str, Any]
    prompts: tuple[tuple[str, str], ...]  # (prompt id, text)


def schema_file(name_or_path: str, base_dir: Path | None = None) -> Path:
    """A built-in schema set by name (tasks/data/schemas_<name>.yaml) or a file path."""
    return builtin_or_file(name_or_path, base_dir, prefix="schemas", exts=("yaml",), field="schemas", what="schema set")


def load_schemas(path: Path) -> list[Schema]:
    """A schema file, read with the prompts files' bounds; anything wrong is one MatrixError line."""
    data, _ = read_yaml(path, "schema file", max_bytes=MAX_PROMPTS_BYTES, max_nodes=MAX_SCHEMA_NODES)
    entries = data.get("schemas") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise MatrixError(f"{path}: schemas must be a list of entries with 'id', 'schema' and 'prompts'")
    out = []
    for i, e in enumerate(entries):
        where = f"{path}: schemas.{i}"
        if not isinstance(e, dict):
            raise MatrixError(f"{where}: must be an entry with 'id', 'schema' and 'prompts'")
        if not isinstance(e.get("id"), str) or not e["id"] or "/" in e["id"]:
            raise MatrixError(f"{where}.id: must be a non-empty string without '/'")
        schema = e.get("schema")
        if not isinstance(schema, dict):
            raise MatrixError(f"{where}.schema: must be a JSON schema (a mapping)")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
            json.dumps(schema)
        except jsonschema.SchemaError as exc:
            raise MatrixError(f"{where}.schema: not a valid JSON schema ({exc.message[:200]})") from None
        except (TypeError, ValueError) as exc:
            raise MatrixError(f"{where}.schema: not JSON ({exc})") from None
        difficulty = e.get("difficulty")
        if difficulty is not None and (isinstance(difficulty, bool) or not isinstance(difficulty, (int, float))):
            raise MatrixError(f"{where}.difficulty: must be a number")
        prompts = e.get("prompts")
        if not isinstance(prompts, list) or not prompts:
            raise MatrixError(f"{where}.prompts: must be a list of entries with 'id' and 'text'")
        pairs = []
        for j, p in enumerate(prompts):
            if not isinstance(p, dict) or not isinstance(p.get("id"), (str, int)) or isinstance(p.get("id"), bool):
                raise MatrixError(f"{where}.prompts.{j}.id: must be a string or a number")
            if not isinstance(p.get("text"), str) or not p["text"].strip():
                raise MatrixError(f"{where}.prompts.{j}.text: must be non-empty text")
            pairs.append((str(p["id"]), p["text"].strip()))
        if len({pid for pid, _ in pairs}) != len(pairs):
            raise MatrixError(f"{where}.prompts: ids must be unique within a schema")
        out.append(Schema(e["id"], difficulty, schema, tuple(pairs)))
    ids = [s.schema_id for s in out]
    if len(set(ids)) != len(ids):
        raise MatrixError(
            f"{path}: schema ids must be unique, repeated: {sorted({i for i in ids if ids.count(i) > 1})}"
        )
    return out


def response_format(kind: str, schema_id: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The request's `response_format` field: OpenAI's shape, which llama-server, vLLM and SGLang read."""
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": schema_id, "schema": schema, "strict": True}}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def judge_text(text: str, schema: dict[str, Any]) -> tuple[bool, bool, str | None]:
    """(parsed, valid, the first reason it is not): the reply as one JSON value, validated against its
    schema with the schema's own draft."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return False, False, f"not JSON: {exc}"[:VALIDATION_ERROR_CHARS]
    error = best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
    if error is None:
        return True, True, None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return True, False, f"{where}: {error.message}"[:VALIDATION_ERROR_CHARS]


def judge(records: list[RequestRecord], specs: Sequence[Any], texts: dict[str, str]) -> None:
    """Sets the structured columns of each record whose spec has a schema: schema_id and response_format
    always, the judgement for an ok reply (texts: request_id -> the reply's content, as the load generator
    kept it)."""
    by_prompt = {s.prompt_id: s for s in specs if getattr(s, "schema", None) is not None}
    if not by_prompt:
        return
    for rec in records:
        spec = by_prompt.get(rec.prompt_id)
        if spec is None:
            continue
        rec.schema_id = spec.schema_id
        rec.response_format = (spec.response_format or {}).get("type")
        if rec.status == "ok" and rec.request_id in texts:
            rec.output_parsed, rec.output_valid, rec.validation_error = judge_text(texts[rec.request_id], spec.schema)
