"""Progress on stderr that reaches scripts as well as terminals.

On a terminal a long step draws a Rich bar that clears itself. Elsewhere (a pipe, a log
file, CI) a bar draws nothing, so a step of minutes looked like a hang: ``PlainProgress``
prints plain lines instead, the first once the step has run ``PLAIN_AFTER_SECONDS`` (quick
runs stay silent), then one every ``PLAIN_EVERY_SECONDS`` (what, how far, how long left),
and one when it ends; a step of one file prints none. The core's own notes about slow
steps (``logging`` records of the ``speakerid`` logger, such as the one-off ONNX export)
are printed as ``speakerid:`` lines.
``--quiet`` silences both; results and errors are never silenced.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:  # the bar's module is imported only to draw one (a cold command: 6 ms)
    from rich.progress import Progress

PLAIN_AFTER_SECONDS = 2.0  # a step quicker than this prints nothing
PLAIN_EVERY_SECONDS = 10.0  # then at most one line this often


def duration(seconds: float) -> str:
    """``75.0`` -> ``1m15s``; ``8.2`` -> ``8s``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _counted(task: dict[str, Any]) -> bool:
    """Whether a task has a 'how far' to tell: one file of one (a single identify) has not,
    and a script running it should not get a line on stderr every time."""
    return task["total"] is None or task["total"] > 1


class PlainProgress:
    """Rich ``Progress``'s ``add_task`` / ``update`` as plain lines on a non-terminal."""

    def __init__(self, console: Console, unit: str = "files") -> None:
        self._console = console
        self._unit = unit
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:  # an error's line says what happened; no summary after it
            for task in self._tasks.values():
                late = time.monotonic() - task["start"] >= PLAIN_AFTER_SECONDS
                if task["printed"] or (late and _counted(task)):
                    self._line(task, final=True)

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        now = time.monotonic()
        task = {"what": description, "done": 0, "total": total, "start": now, "printed": 0.0}
        self._tasks[len(self._tasks)] = task
        return len(self._tasks) - 1

    def update(
        self,
        task_id: int,
        *,
        completed: float | None = None,
        total: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **_: Any,
    ) -> None:
        task = self._tasks[task_id]
        if completed is not None:
            task["done"] = completed
        if advance is not None:
            task["done"] += advance
        if total is not None:
            task["total"] = total
        if description is not None:
            task["what"] = description
        now = time.monotonic()
        due = task["printed"] + PLAIN_EVERY_SECONDS if task["printed"] else task["start"]
        finished = task["total"] is not None and task["done"] >= task["total"]
        late = now - task["start"] >= PLAIN_AFTER_SECONDS
        if late and now >= due and not finished and _counted(task):
            self._line(task)
            task["printed"] = now

    def _line(self, task: dict[str, Any], final: bool = False) -> None:
        elapsed = time.monotonic() - task["start"]
        done, total = int(task["done"]), task["total"]
        if final:
            text = f"{task['what']}: {self._count(done)} in {duration(elapsed)}"
        elif total:
            left = elapsed / done * (total - done) if done else None
            eta = f", about {duration(left)} left" if left is not None else ""
            share = f"({100 * done / total:.0f}%)"
            text = f"{task['what']}: {done}/{self._count(int(total))} {share}{eta}"
        else:
            text = f"{task['what']}: {self._count(done)} so far ({duration(elapsed)})"
        self._console.print(f"speakerid: {text}", markup=False, highlight=False, soft_wrap=True)

    def _count(self, n: int) -> str:
        """``3 files``, ``1 file``."""
        unit = self._unit[:-1] if n == 1 and self._unit.endswith("s") else self._unit
        return f"{n} {unit}"


class SilentProgress(PlainProgress):
    """``--quiet``: the same calls, nothing printed."""

    def _line(self, task: dict[str, Any], final: bool = False) -> None:
        return None


def progress_for(console: Console, quiet: bool, unit: str = "files") -> Progress | PlainProgress:
    """A bar on a terminal, plain lines elsewhere, nothing with ``--quiet``."""
    if quiet:
        return SilentProgress(console, unit)
    if not console.is_terminal:
        return PlainProgress(console, unit)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class _StderrNotes(logging.Handler):
    """The core's notes (``speakerid`` logger, INFO and up) as ``speakerid:`` lines."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self._console.print(f"speakerid: {text}", markup=False, highlight=False, soft_wrap=True)


def report_notes(console: Console, quiet: bool) -> logging.Handler:
    """Route the core's notes to ``console`` for one command (``--quiet``: drop them).

    Returns the handler, for ``stop_notes`` once the command ends.
    """
    handler: logging.Handler = logging.NullHandler() if quiet else _StderrNotes(console)
    logger = logging.getLogger("speakerid")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False  # the notes are this CLI's lines, not the root logger's
    return handler


def stop_notes(handler: logging.Handler) -> None:
    """Undo ``report_notes``: the logger is the embedding program's again."""
    logger = logging.getLogger("speakerid")
    logger.removeHandler(handler)
    logger.propagate = True
