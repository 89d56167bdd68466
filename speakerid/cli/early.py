"""What a command line is about to load, started before the CLI itself is imported.

A cold ``speakerid verify`` spends about 150 ms importing numpy, Typer, Rich and the
commands, and 40-50 ms creating the model's onnxruntime session (docs/benchmarks.md).
onnxruntime creates and runs a session without holding the GIL, so ``main`` reads the
command line here first and, for a command that embeds audio, starts loading the model's
session on a second thread (``embedding.pipeline.open_soon``) while the rest imports and
Typer parses.

This is a guess from the raw arguments, and only ever saves time: Typer parses them
again, the command opens its model as always, and takes the early session only if it is
the very one it asks for (same graph, same pin, through the same checks). A wrong guess
(an option spelt in a way not read here, a store bound to another model) costs some CPU
on the other core, never a result or an error message.
"""

from __future__ import annotations

import os

# The commands that run a model on audio, and the options that choose it (``common``).
EMBEDDING_COMMANDS = frozenset({"enroll", "enroll-dir", "verify", "identify", "embed"})
CHOICES = {"--model": "model", "-m": "model", "--backend": "backend", "--precision": "precision"}
HELP_FLAGS = frozenset({"--help", "-h"})


def chosen(argv: list[str]) -> dict[str, str] | None:
    """The model options given to an embedding command (``{"model": "best", ...}``), or
    None for any other command line. Reads ``--model X``, ``--model=X`` and ``-mX``;
    stops at ``--``."""
    if not argv or argv[0] not in EMBEDDING_COMMANDS:
        return None
    found: dict[str, str] = {}
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            break
        if arg in HELP_FLAGS:
            return None
        name, eq, value = arg.partition("=")
        if arg.startswith("-m") and not arg.startswith("--") and len(arg) > 2:
            name, eq, value = "-m", "=", arg[2:]
        if name in CHOICES:
            found[CHOICES[name]] = value if eq else next(args, "")
    return found


def start(argv: list[str]) -> None:
    """Start loading the model ``argv``'s command will run (see the module's docstring)."""
    options = chosen(argv)
    if options is None:
        return
    from speakerid.embedding.constants import PRECISION_ENV
    from speakerid.embedding.pipeline import open_soon

    precision = options.get("precision") or os.environ.get(PRECISION_ENV) or "auto"
    open_soon(options.get("model") or None, options.get("backend") or None, precision)


__all__ = ["EMBEDDING_COMMANDS", "chosen", "start"]
