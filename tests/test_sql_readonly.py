"""`bakeoff sql` is read-only everywhere, not only for its own file: each statement that once wrote
another file (ATTACH ... READ_ONLY false then DELETE, COPY TO, EXPORT DATABASE, INSTALL, a persistent
secret, SET of a file setting) runs for real against a real warehouse and a real target path, and is
refused in one line, exit 2, the target unchanged or absent. The ordinary SELECTs over the views still
work, so the views read nothing outside the warehouse. `--write` is the way to write.

Each command runs as the real console script with its own HOME, so what DuckDB would put under
~/.duckdb (extensions, stored secrets) is looked for there."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.builders import cell_row, record, stage
from warehouse import store

BAKEOFF = Path(sys.executable).with_name("bakeoff")


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """A warehouse holding one run, another DuckDB file with one row, and a home of the test's own."""
    warehouse = tmp_path / "bakeoff.duckdb"
    with store.opened(warehouse) as con:
        store.load_run(con, stage(tmp_path / "staged", [record(i) for i in range(3)], [cell_row()]))
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t AS SELECT 1 AS a")
    con.close()
    home = tmp_path / "home"
    home.mkdir()
    return {"tmp": tmp_path, "warehouse": warehouse, "other": other, "home": home}


def sql(setup: dict[str, Path], query: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BAKEOFF), "sql", query, "--warehouse", str(setup["warehouse"]), *extra],
        cwd=setup["tmp"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(setup["home"])},
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# (statement, the file or folder it would write: relative to the test's tmp folder)
WRITES_ELSEWHERE = [
    ("ATTACH '{other}' AS o (READ_ONLY false); DELETE FROM o.t", "other.duckdb"),
    ("ATTACH '{tmp}/new.duckdb' AS n; CREATE TABLE n.x AS SELECT 1", "new.duckdb"),
    ("COPY (SELECT * FROM requests) TO '{tmp}/out.csv'", "out.csv"),
    ("COPY requests TO '{tmp}/out.parquet' (FORMAT parquet)", "out.parquet"),
    ("EXPORT DATABASE '{tmp}/exported'", "exported"),
    ("INSTALL json", "home/.duckdb"),
    ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", "home/.duckdb"),
    ("SET temp_directory = '{tmp}/spill'", "spill"),
    ("SET profiling_output = '{tmp}/profile.json'; PRAGMA enable_profiling = 'json'; SELECT 1", "profile.json"),
    ("SET log_query_path = '{tmp}/queries.log'; SELECT 1", "queries.log"),
    ("SET enable_external_access = true; COPY (SELECT 1) TO '{tmp}/again.csv'", "again.csv"),
    ("RESET lock_configuration; COPY (SELECT 1) TO '{tmp}/reset.csv'", "reset.csv"),
]


@pytest.mark.parametrize("statement, target", WRITES_ELSEWHERE, ids=[t for _, t in WRITES_ELSEWHERE])
def test_a_statement_that_writes_another_file_is_refused(setup, statement, target):
    query = statement.format(tmp=setup["tmp"], other=setup["other"])
    path = setup["tmp"] / target
    before = digest(path) if path.is_file() else None
    warehouse_before = digest(setup["warehouse"])
    result = sql(setup, query)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("bakeoff: sql: "), result.stderr
    assert "read-only" in result.stderr, result.stderr
    if before is None:
        assert not path.exists(), f"{path} was written"
    else:
        assert digest(path) == before, f"{path} was changed"
    assert digest(setup["warehouse"]) == warehouse_before
    con = duckdb.connect(str(setup["other"]), read_only=True)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)  # the other database kept its row
    con.close()


def test_loading_code_from_a_file_is_refused(setup):
    """LOAD runs a shared library's code in bakeoff's process: refused like any file access (here a file
    that is not an extension at all, so nothing could run even if it were read)."""
    plugin = setup["tmp"] / "plugin.duckdb_extension"
    plugin.write_bytes(b"\x7fELF not really")
    result = sql(setup, f"LOAD '{plugin}'")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("bakeoff: sql: "), result.stderr
    assert "Loading external extensions is disabled" in result.stderr, "refused before the file is read"


def test_reading_a_file_outside_the_warehouse_is_refused(setup):
    secret = setup["tmp"] / "secret.csv"
    secret.write_text("token\nabc123\n")
    result = sql(setup, f"SELECT * FROM read_csv('{secret}')")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "abc123" not in result.stdout
    assert "file system operations are disabled" in result.stderr


def test_writing_the_warehouse_itself_is_refused(setup):
    before = digest(setup["warehouse"])
    result = sql(setup, "DELETE FROM requests")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "read-only" in result.stderr
    assert digest(setup["warehouse"]) == before


def test_selects_over_the_views_still_work(setup):
    """Every view, under the read-only settings: none of them reads anything outside the warehouse."""
    views = ["v_requests", "v_cells", "v_nightly", "v_comparison"]
    counts = ", ".join(f"(SELECT count(*) FROM {v}) AS {v}" for v in views)
    result = sql(setup, f"SELECT {counts}, (SELECT min(run_id) FROM runs) AS run")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    header, values = [line for line in result.stdout.splitlines() if "│" in line][:2]

    def split(line: str) -> list[str]:
        return [c.strip() for c in line.strip("│ ").split("┆")]

    cells = split(values)
    assert split(header) == [*views, "run"]
    assert cells[0] == "3" and cells[1] == "1" and cells[-1] == "run-1", result.stdout


def test_write_allows_what_read_only_refuses(setup):
    """The same COPY with --write does write its target: the refusals above are the read-only mode's,
    not a path that could not be written anyway."""
    target = setup["tmp"] / "out.csv"
    result = sql(setup, f"COPY (SELECT run_id FROM runs) TO '{target}'", "--write")
    assert result.returncode == 0, result.stderr
    assert "run-1" in target.read_text()
