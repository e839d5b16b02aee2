"""The row contracts (tasks/records.py) are the warehouse's tables: same columns, types, nullability.

A column added by a migration without its field (or the other way round) fails here, not at a night's
load. The live schema is read from information_schema of a freshly migrated warehouse.
"""

from __future__ import annotations

import dataclasses

import pytest

from tasks.records import REQUEST_SCHEMA, CellRow, DeploymentRow, RequestRecord, columns

# Columns the tables keep that no writer fills: cells.load_kind_v1 (migration 0002 kept the old,
# CHECK-pinned column under that name, filled by its default).
NOT_WRITTEN = {"cells": {"load_kind_v1"}}


def live_columns(con, table: str) -> dict[str, tuple[str, bool]]:
    rows = con.execute(
        "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = 'main' ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return {name: (data_type, nullable) for name, data_type, nullable in rows if name not in NOT_WRITTEN.get(table, ())}


@pytest.mark.parametrize(("table", "row_type"), [("deployments", DeploymentRow), ("cells", CellRow)])
def test_row_dataclass_matches_the_table(warehouse, table, row_type):
    contract = {c.name: (c.duckdb_type, c.nullable) for c in columns(row_type)}
    assert contract == live_columns(warehouse, table)


def test_request_record_matches_the_requests_table(warehouse):
    """RequestRecord holds chunk_times as ns offsets in memory; the table stores µs gaps (INTEGER[],
    warehouse/chunks.py). Every other column is the same name, type and nullability."""
    duckdb_types = {
        "string": "VARCHAR",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "timestamp[us, tz=UTC]": "TIMESTAMP WITH TIME ZONE",
        "list<item: int64>": "BIGINT[]",
        "bool": "BOOLEAN",
    }
    live = live_columns(warehouse, "requests")
    assert set(live) == {f.name for f in dataclasses.fields(RequestRecord)}
    assert live.pop("chunk_times") == ("INTEGER[]", True)
    for field in REQUEST_SCHEMA:
        if field.name == "chunk_times":
            continue
        data_type, nullable = live[field.name]
        assert duckdb_types[str(field.type)] == data_type, field.name
        default = next(f.default for f in dataclasses.fields(RequestRecord) if f.name == field.name)
        assert (default is None) == nullable or field.name == "status", field.name


def test_a_row_missing_a_required_field_cannot_be_made():
    with pytest.raises(TypeError, match="started"):
        DeploymentRow(
            run_id="r",
            instance_id="i",
            deployment_id="d",
            start_order=0,
            engine="e",
            engine_kind="llamacpp",
            model="m",
            launcher="process",
        )  # type: ignore[call-arg]
