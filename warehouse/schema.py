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

from tasks.errors import BadInput, BrokenInstall

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VIEWS_SQL = Path(__file__).parent / "sql" / "views.sql"


class SchemaTooNew(BadInput):
    """The warehouse was written by a newer bakeoff: the user's bakeoff is too old (exit 2)."""


class BadMigrations(BrokenInstall):
    """warehouse/migrations/ is not NNNN_name.sql numbered 1..N: bakeoff's own package is broken, not
    the user's input, so exit 1 (reinstall), not 2."""


def migrations() -> list[tuple[int, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", path.name)
        if not m:
            raise BadMigrations(f"{path}: migration files are named NNNN_name.sql")
        found.append((int(m.group(1)), path))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise BadMigrations(f"{MIGRATIONS_DIR}: migrations must be numbered 1..N without gaps, found {numbers}")
    return found


LATEST = len(migrations())


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version' AND table_schema = 'main'"
    ).fetchall()[0][0]  # fetchall: DuckDB 2 refuses the next query while a result is unfinished
    if not exists:
        return 0
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0])


def check_not_newer(con: duckdb.DuckDBPyConnection) -> int:
    """The warehouse's schema version; SchemaTooNew when a newer bakeoff wrote it."""
    version = current_version(con)
    if version > LATEST:
        raise SchemaTooNew(
            f"the warehouse has schema version {version}, newer than this bakeoff knows ({LATEST}); upgrade bakeoff"
        )
    return version


def migrate(con: duckdb.DuckDBPyConnection, *, target: int = LATEST) -> int:
    """Bring the schema to `target` (the latest by default), one transaction per migration."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    version = check_not_newer(con)
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
