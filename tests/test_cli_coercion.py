"""The CLI's plain coercion gives what typer's own gives, on every parameter of every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer._coercion import build_runtime_param

from speakerid.cli import app
from speakerid.cli.coercion import PlainCoercion, plain_kind

SAMPLES: dict[type, list[Any]] = {
    str: ["alice", "", "-", "名前", "a b", "bad\udcff", "0.5"],
    bool: [True, False, "yes", "0"],
    int: ["3", "-2", "+7", "007", "1_000", " 4", "3.0", "x", 5],
    float: ["0.01", "1e-2", "-.5", "5", "5.", "nan", "inf", "1_0", " 1", "x", 0.25, 2],
    Path: ["clip.wav", "-", "", "missing/dir/file", "a\0b"],
}


def _commands() -> list[Any]:
    group = typer.main.get_command(app)
    found = [group]
    for sub in group.commands.values():
        found += list(getattr(sub, "commands", {}).values()) or [sub]
    return found


def _outcome(coercion: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        return "ok", coercion.coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # typer's BadParameter and friends: compare kind and message
        return type(exc).__name__, str(getattr(exc, "message", exc))


def test_plain_coercion_matches_typers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.wav").write_bytes(b"")
    checked = 0
    for command in _commands():
        ctx = typer.Context(command)
        for param in [*command.params, command.get_help_option(ctx)]:
            if param is None or plain_kind(param) is None:
                continue
            assert isinstance(param._runtime_param, PlainCoercion), param.name
            kind, many = plain_kind(param)
            theirs = build_runtime_param(param.type_descriptor)
            values = SAMPLES[kind]
            cases = [(v,) if many else v for v in values] + ([None, ()] if many else [None])
            for value in cases:
                mine = _outcome(param._runtime_param, value, param, ctx)
                # repr: nan equals nan, and 1 differs from 1.0 and "1"
                assert repr(mine) == repr(_outcome(theirs, value, param, ctx)), (
                    command.name,
                    param.name,
                    value,
                )
                checked += 1
    assert checked > 500  # every command's options were seen


def test_plain_commands_do_not_import_pydantic(tmp_path: Path) -> None:
    """What the plain coercion is for: a cold command without pydantic (about 50 ms)."""
    code = (
        "import sys\nfrom speakerid.cli import app\n"
        "try:\n    app(['list', '--store', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
        "print('pydantic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store.sqlite")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
