"""Option values turned into Python values without pydantic, where that is plain.

Typer (0.29) coerces every option value through a pydantic ``TypeAdapter``: importing
pydantic and building one adapter per option cost a cold ``verify`` about 50 ms of CPU
(``python -X importtime``, docs/benchmarks.md), for values such as ``0.01`` or ``alice``.
``fast_coercion`` gives a parameter whose annotation is ``str``, ``bool``, ``int``, ``float``
or ``Path`` (single-valued, no range, choices, parser or file mode) a coercion that turns a
well-formed value into what typer's would, and hands anything else (``1_000``, ``nan``, a
name that is not valid UTF-8, a missing required value) to typer's own, unchanged: so its
error messages are typer's. ``tests/test_cli_coercion.py`` checks both give the same on
every parameter of every command.

It sets the parameter's ``_runtime_param`` (typer builds it on first use when it is None);
with a typer that has no such attribute, nothing is changed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

INT = re.compile(r"[+-]?\d+")
FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _plain(value: Any, kind: type) -> tuple[bool, Any]:
    """``(True, coerced)`` when ``value`` is a well-formed ``kind``, else ``(False, None)``."""
    if kind is str:
        if isinstance(value, str):
            try:
                value.encode("utf-8")  # a lone surrogate (undecodable argv byte): typer's
            except UnicodeEncodeError:
                return False, None
            return True, value
    elif kind is bool:
        if type(value) is bool:  # a flag's own value; words such as "yes" go to typer
            return True, value
    elif kind is int:
        if type(value) is int:
            return True, value
        if isinstance(value, str) and INT.fullmatch(value):
            return True, int(value)
    elif kind is float:
        if type(value) in (int, float):
            return True, float(value)
        if isinstance(value, str) and FLOAT.fullmatch(value):
            return True, float(value)
    elif kind is Path:
        if isinstance(value, Path):
            return True, value
        if isinstance(value, str) and value and "\0" not in value:
            ok, _ = _plain(value, str)
            return (True, Path(value)) if ok else (False, None)
    return False, None


class PlainCoercion:
    """Typer's runtime coercion for one parameter, with the plain cases done here."""

    def __init__(self, kind: type, many: bool, descriptor: Any) -> None:
        self.kind = kind  # the value's type, or each item's for ``many``
        self.many = many  # a list of values (``nargs=-1`` or a repeated option)
        self.descriptor = descriptor
        self._typer: Any = None  # typer's own coercion, built on first need

    def typer_coercion(self) -> Any:
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self.descriptor)
        return self._typer

    def _item(self, value: Any, param: Any, ctx: Any) -> Any:
        if self.kind is Path:  # typer's checks of the path (exists, dir_okay, ...)
            from typer._param_types import coerce_cli_path

            info = self.descriptor.parameter_info
            return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)
        return value

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # an option left out: typer gives this too, no adapter needed
            return () if self.many else None
        items = value if self.many and isinstance(value, (list, tuple)) else None
        if self.many and items is None:
            return self.typer_coercion().coerce(value, param=param, ctx=ctx)
        plain = [_plain(v, self.kind) for v in (items if self.many else [value])]
        if not all(ok for ok, _ in plain):
            return self.typer_coercion().coerce(value, param=param, ctx=ctx)
        coerced = [self._item(v, param, ctx) for _, v in plain]
        return coerced if self.many else coerced[0]


def plain_kind(param: Any) -> tuple[type, bool] | None:
    """``(type, many)`` of what ``fast_coercion`` handles for ``param``, or None."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or not hasattr(param, "_runtime_param"):
        return None
    info = descriptor.parameter_info
    annotation, many = descriptor.annotation, bool(param.multiple or param.nargs == -1)
    if many:
        if get_origin(annotation) is not list or len(get_args(annotation)) != 1:
            return None
        annotation = get_args(annotation)[0]
    elif param.nargs != 1:
        return None
    if annotation not in (str, bool, int, float, Path):
        return None
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return None
    if descriptor.is_choice or descriptor.is_ranged or descriptor.is_file:
        return None
    if annotation is Path and (info.path_type not in (None, Path) or info.resolve_path):
        return None
    return annotation, many


def fast_coercion(param: Any) -> None:
    """Give ``param`` a ``PlainCoercion`` where ``plain_kind`` allows (see the module)."""
    kind = plain_kind(param)
    if kind is not None and param._runtime_param is None:
        param._runtime_param = PlainCoercion(*kind, param.type_descriptor)
