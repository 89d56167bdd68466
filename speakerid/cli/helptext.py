"""How ``--help`` reads: like git's, ripgrep's or uv's, in plain text wrapped to the terminal.

Typer's defaults print the usage line as ``{NAME} {FILE}`` or ``[[MODEL]]``, label every
option with its Python type (``<float>``, ``<bool>``) and, in its Rich mode, keep the
docstrings' own line breaks. ``Command`` prints instead the conventional forms:

    Usage: speakerid verify [OPTIONS] NAME FILE
      -t, --threshold SCORE   ...
      --json                  ...

A required argument is its name, an optional one is bracketed, ``...`` repeats; an option
that takes a value shows its metavar (``--far RATE``), else ``NUM``, ``PATH`` or its name in
capitals; a flag shows nothing. Paragraphs are rewrapped by Click's formatter at the
terminal's width (``HELP_MAX_WIDTH`` at most).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from speakerid.cli.coercion import fast_coercion

# Help is wrapped to the terminal, but no wider than this: long lines are hard to read.
HELP_MAX_WIDTH = 100


def usage_name(param: TyperArgument) -> str:
    """An argument as the usage line shows it: ``NAME``, ``[NAME]``, ``FILE...``."""
    name = param.metavar or param.name.upper()
    if param.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if param.required else f"[{name}]"


def value_name(param: TyperOption) -> str:
    """What an option's value is called when it sets no metavar: ``NUM`` for a number,
    ``PATH`` for a path, else the option's long name in capitals (``--fit FIT``)."""
    annotation = param.type_descriptor.annotation
    if param.type_descriptor.is_path:
        return "PATH"
    if annotation in (int, float):
        return "NUM"
    longs = [o for o in param.opts if o.startswith("--")]
    return (longs[0][2:] if longs else param.name).upper()


class _PlainHelpOption:
    """``--help`` coerced by ``fast_coercion`` too (Click builds it apart from the params)."""

    def get_help_option(self, ctx: typer.Context) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            fast_coercion(option)
        return option


class Command(_PlainHelpOption, TyperCommand):
    """A Typer command whose usage line and options list read as a well-kept CLI's do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            # A value-taking option without a metavar shows its name, never its Python type.
            if isinstance(param, TyperOption) and not param.is_flag:
                param.metavar = param.metavar or value_name(param)
            fast_coercion(param)  # plain values without pydantic (``coercion``)

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        arguments = [p for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        return pieces + [usage_name(p) for p in arguments if not p.hidden]

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                if param.hidden:
                    continue
                # The usage line already says which are required; the type says nothing.
                arguments.append((param.metavar or param.name.upper(), param.help or ""))
            else:
                record = param.get_help_record(ctx)
                if record is not None:
                    options.append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


class Group(_PlainHelpOption, TyperGroup):
    """The top-level group: Typer's, with ``fast_coercion`` on its own options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            fast_coercion(param)
