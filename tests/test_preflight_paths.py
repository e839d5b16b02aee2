"""Where a night writes is checked before any engine starts: a runs folder on a read-only file system, a
warehouse under a file, a file system without room. Real mounts (a read-only and a tiny tmpfs; root
only), through `bakeoff plan` and `bakeoff run` as a user types them: one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.builders import tmpfs

ROOT = Path(__file__).resolve().parent.parent


def _matrix(tmp_path: Path, **paths: str) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "cpu-smoke.yaml").read_text())
    data.update(paths)
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refused(tmp_path: Path, matrix: Path) -> list[str]:
    """The one line both `plan` and `run` give, the same for both."""
    lines = []
    for command in ("plan", "run"):
        got = subprocess.run(
            [sys.executable, "-m", "flows.cli", command, str(matrix)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert got.returncode == 2, (command, got.stdout[-1000:], got.stderr[-2000:])
        assert len(got.stderr.strip().splitlines()) == 1 and "Traceback" not in got.stderr, got.stderr
        lines.append(got.stderr.strip())
    assert lines[0] == lines[1]
    return lines


def test_a_runs_folder_on_a_read_only_file_system(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        (line, _) = _refused(tmp_path, _matrix(tmp_path, runs_dir=str(ro / "runs")))
    assert line == f"bakeoff: runs folder {ro / 'runs'} cannot be written (a read-only file system)"


def test_a_warehouse_with_no_room(tmp_path):
    with tmpfs(tmp_path / "tiny", "size=1m") as tiny:
        (line, _) = _refused(tmp_path, _matrix(tmp_path, warehouse=str(tiny / "wh" / "bakeoff.duckdb")))
    assert line.startswith(f"bakeoff: warehouse {tiny / 'wh' / 'bakeoff.duckdb'}'s folder {tiny / 'wh'}: 1 MiB free")
    assert line.endswith("a night needs at least 256 MiB ($BAKEOFF_MIN_FREE_MIB)")


def test_a_warehouse_under_a_file_or_that_is_a_folder(tmp_path):
    (tmp_path / "not-a-folder").write_text("x")
    (line, _) = _refused(tmp_path, _matrix(tmp_path, warehouse=str(tmp_path / "not-a-folder" / "wh.duckdb")))
    assert line == (
        f"bakeoff: warehouse {tmp_path / 'not-a-folder' / 'wh.duckdb'}'s folder {tmp_path / 'not-a-folder'} "
        f"cannot be made: {tmp_path / 'not-a-folder'} is not a folder"
    )
    (tmp_path / "a-folder").mkdir()
    (line, _) = _refused(tmp_path, _matrix(tmp_path, warehouse=str(tmp_path / "a-folder")))
    assert "is a folder: name the DuckDB file" in line
