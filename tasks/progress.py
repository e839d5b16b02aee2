"""Progress for a person at a terminal: a rich display of the night's cells, the requests of the
cell running now, and image builds.

The work reports here (`requests`, `build_line`, `build_done`); nothing is shown unless a display is
active, which `bakeoff run` does only when stdout is a terminal (`terminal_display`). The log lines
("N/M requests done") are written either way: they are what the Prefect UI shows.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO


class Display(Protocol):
    def requests(self, label: str, done: int, total: int) -> None: ...
    def build_line(self, image: str, line: str) -> None: ...
    def build_done(self, image: str) -> None: ...


_active: Display | None = None


def requests(label: str, done: int, total: int) -> None:
    """`done` of the `total` requests of the cell `label` have finished."""
    if _active is not None:
        _active.requests(label, done, total)


def build_line(image: str, line: str) -> None:
    """The image build of `image` wrote `line`."""
    if _active is not None:
        _active.build_line(image, line)


def build_done(image: str) -> None:
    if _active is not None:
        _active.build_done(image)


@contextmanager
def shown(display: Display) -> Iterator[Display]:
    """Reports go to `display` inside the block."""
    global _active
    previous, _active = _active, display
    try:
        yield display
    finally:
        _active = previous


class RichDisplay:
    """One bar for the night's cells (`cells` planned; a sweep adds cells as they come), one for the
    requests of the running cell, a spinner per image being built."""

    def __init__(self, cells: int | None = None, file: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=file or sys.stdout),
            transient=False,
        )
        self.cells = cells
        self.night = self.progress.add_task("cells", total=cells)
        self._lock = threading.Lock()
        self._cell: tuple[str, int] | None = None  # (label, task id) of the running cell
        self._counted: set[str] = set()
        self._builds: dict[str, int] = {}

    def __enter__(self) -> RichDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def _count(self, label: str) -> None:
        if label not in self._counted:
            self._counted.add(label)
            if self.cells is not None and len(self._counted) > self.cells:
                self.cells = len(self._counted)  # sweep cells were not in the plan
                self.progress.update(self.night, total=self.cells)
            self.progress.advance(self.night)

    def requests(self, label: str, done: int, total: int) -> None:
        with self._lock:
            if self._cell is None or self._cell[0] != label:
                if self._cell is not None:
                    self._count(self._cell[0])  # the previous cell ended (perhaps early: duration_s)
                    self.progress.remove_task(self._cell[1])
                self._cell = (label, self.progress.add_task(label, total=total))
            self.progress.update(self._cell[1], completed=done, total=total)
            if done >= total:
                self._count(label)

    def build_line(self, image: str, line: str) -> None:
        with self._lock:
            if image not in self._builds:
                self._builds[image] = self.progress.add_task(f"build {image}", total=None)
            self.progress.update(self._builds[image], description=f"build {image}: {line.strip()[:60]}")

    def build_done(self, image: str) -> None:
        with self._lock:
            task = self._builds.pop(image, None)
            if task is not None:
                self.progress.update(task, description=f"build {image}: done", total=1, completed=1)


@contextmanager
def terminal_display(cells: int | None = None, stream: TextIO | None = None) -> Iterator[RichDisplay | None]:
    """A RichDisplay while the block runs when `stream` (stdout) is a terminal; else nothing changes."""
    stream = stream or sys.stdout
    if not stream.isatty():
        yield None
        return
    with RichDisplay(cells, file=stream) as display, shown(display):
        yield display
