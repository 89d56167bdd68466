"""The ``speakerid`` command line: parse options, call one core function, render the result.

No logic lives here. ``common`` holds the app, the shared options and the one error handler;
each other module registers a few commands of one job on the app when imported, in the
order ``--help`` lists them (``commands``). The runtime's modules import nothing heavy at
import time; the lab's commands (``lab``) import training and evaluation only when they run.

This package's own module is light: ``main`` first starts loading the model a command line
will run (``early``), then imports the commands it needs (``commands.for_argv``). ``app``,
with every command, is imported on first use.

Exit status (like grep): 0 success / accepted, 1 rejected (``verify``), 2 error.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import Any, NoReturn

# numpy's OpenBLAS starts a thread per core when numpy is imported (a cold command: 30 ms
# of CPU on this 2-core box, docs/benchmarks.md); the CLI's matrix products are small. Set
# before the commands import numpy; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main() -> NoReturn:
    """Entry point of the ``speakerid`` console script and ``python -m speakerid.cli``: runs
    the command and ends the process (``leave``). Code that runs the CLI in its own process
    and goes on afterwards calls ``app`` (Typer's) instead, or Typer's ``CliRunner``."""
    from speakerid.cli import early

    early.start(sys.argv[1:])
    from speakerid.cli.commands import for_argv

    try:
        for_argv(sys.argv[1:])()
    except SystemExit as exc:
        leave(exc.code)
    leave(0)


def leave(code: object) -> NoReturn:
    """Exit with ``code`` as ``sys.exit`` would, without Python's teardown where it is safe.

    Tearing down the interpreter (every module's objects, numpy's and onnxruntime's
    libraries) took 40-50 ms of a cold command (docs/benchmarks.md), after its answer was
    printed. So once the command is over: the atexit handlers run (logging, temporary
    files, worker processes), stdout and stderr are flushed, and the process ends. A
    command that loaded torch (training, the torch backend), or left a non-daemon thread
    running, exits the normal way instead.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if "torch" in sys.modules or any(t.is_alive() and not t.daemon for t in others):
        raise SystemExit(code)  # training, the torch backend: torch's own teardown runs
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: reported already
            stream.flush()
    if code is None or isinstance(code, int):
        os._exit(code or 0)
    print(code, file=sys.stderr, flush=True)  # sys.exit("message"): the message, status 1
    os._exit(1)


def __getattr__(name: str) -> Any:
    """``app`` (every command registered) and ``COMMAND_MODULES``, imported on first use
    (``commands``)."""
    if name == "app":  # with every command registered
        from speakerid.cli.commands import all_commands

        return all_commands()
    if name == "COMMAND_MODULES":
        from speakerid.cli.commands import COMMAND_MODULES

        return COMMAND_MODULES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMAND_MODULES", "app", "leave", "main"]
