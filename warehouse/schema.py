"""The DuckDB schema, as forward-only migrations applied on open.

Migrations are the numbered SQL files in warehouse/migrations/ (NNNN_name.sql), applied in order,
one transaction each; `schema_version` records which ones ran. Never edit a released migration:
add the next file. Views are re-created on every open from warehouse/sql/views.sql (they hold no
data, so replacing them is always safe).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VIEWS_SQL = Path(__file__).parent / "sql" / "views.sql"


def migrations() -> list[tuple[int, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", path.name)
        if not m:
            raise RuntimeError(f"{path}: migration files are named NNNN_name.sql")
        found.append((int(m.group(1)), path))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{MIGRATIONS_DIR}: migrations must be numbered 1..N without gaps, found {numbers}")
    return found


LATEST = len(migrations())


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version' AND table_schema = 'main'"
    ).fetchone()[0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]


def migrate(con: duckdb.DuckDBPyConnection, *, target: int = LATEST) -> int:
    """Bring the schema to `target` (the latest by default), one transaction per migration."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    version = current_version(con)
    if version > LATEST:
        raise RuntimeError(f"the warehouse has schema version {version}, newer than this bakeoff knows ({LATEST}); upgrade bakeoff")
    for number, path in migrations()[version:target]:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(path.read_text())
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [number])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    if target == LATEST:
        con.execute(VIEWS_SQL.read_text())
    return current_version(con)
