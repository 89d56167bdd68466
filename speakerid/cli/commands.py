"""The app with its commands registered: all of them, or only those a command line needs.

Each command module registers its commands on ``common.app`` as it is imported; ``--help``
lists them in the order of registration, so ``COMMAND_MODULES`` sets the order (import
statements would be sorted). A command line that names a command (``speakerid verify
...``) needs only that command's module: importing the other five and having Typer build
their 13 commands cost a cold ``verify`` about 20 ms (docs/benchmarks.md), so ``for_argv``
loads the one module, and everything for anything else (``--help``, a mistyped name, no
command), as ``all_commands`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

import typer

from speakerid.cli.common import app

COMMAND_MODULES = ("enroll", "recognise", "embed", "manage", "info", "lab")
# The module that registers each command (tests/test_cli_commands.py holds it to the app).
COMMAND_HOMES = {
    "enroll": "enroll",
    "enroll-dir": "enroll",
    "verify": "recognise",
    "identify": "recognise",
    "embed": "embed",
    "export": "embed",
    "list": "manage",
    "remove": "manage",
    "index": "manage",
    "info": "info",
    "models": "info",
    "train": "lab",
    "whiten": "lab",
    "evaluate": "lab",
    "calibrate": "lab",
}


def _register(module: str) -> None:
    import_module(f"speakerid.cli.{module}")


def all_commands() -> typer.Typer:
    """The app with every command, in ``--help``'s order."""
    for module in COMMAND_MODULES:
        _register(module)
    return app


def for_argv(argv: Sequence[str]) -> typer.Typer:
    """The app with what ``argv`` (the arguments after ``speakerid``) runs: the named
    command's module, else every command. With fewer than two commands Typer would run the
    one command without its name, so a module of one command gets them all."""
    home = COMMAND_HOMES.get(argv[0]) if argv else None
    if home is None:
        return all_commands()
    _register(home)
    return app if len(app.registered_commands) > 1 else all_commands()


__all__ = ["COMMAND_HOMES", "COMMAND_MODULES", "all_commands", "app", "for_argv"]
