"""Which command modules a command line imports (``cli.commands``): the named command's own,
or all of them; the help and the errors are the same either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command_name

from speakerid.cli.commands import COMMAND_HOMES, COMMAND_MODULES, all_commands

ROOT = Path(__file__).resolve().parent.parent


def _fresh(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPEAKERID_STORE": str(tmp_path / "s.sqlite")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )


def test_every_command_has_its_home_named() -> None:
    app = all_commands()
    homes = {
        c.name or get_command_name(c.callback.__name__): c.callback.__module__.rsplit(".", 1)[1]
        for c in app.registered_commands
        if c.callback
    }
    assert len(homes) == len(app.registered_commands)
    assert homes == COMMAND_HOMES
    assert set(COMMAND_HOMES.values()) == set(COMMAND_MODULES)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["verify", "alice", "clip.wav"], ["verify", "identify"]),
        (["list"], ["list", "remove", "index"]),
        (["enroll-dir", "--help"], ["enroll", "enroll-dir"]),
        (["--help"], None),  # None: every command
        ([], None),
        (["verfy"], None),  # Typer's "No such command" can then name the right one
    ],
)
def test_a_command_line_registers_its_commands_module(
    tmp_path: Path, argv: list[str], expected: list[str] | None
) -> None:
    code = (
        "import json\n"
        "from typer.main import get_command_name\n"
        "from speakerid.cli.commands import for_argv\n"
        f"app = for_argv({argv!r})\n"
        "print(json.dumps([c.name or get_command_name(c.callback.__name__)\n"
        "                  for c in app.registered_commands]))\n"
    )
    done = _fresh(code, tmp_path)
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout)
    assert names == (expected or list(COMMAND_HOMES))


@pytest.mark.parametrize(
    "args, status, text",
    [
        (["verify", "--help"], 0, "1:1 check that FILE is NAME"),
        (["verfy", "alice"], 2, "No such command"),
        (["list", "--json"], 0, "[]"),
    ],
)
def test_the_console_script_answers_as_with_every_command(
    tmp_path: Path, args: list[str], status: int, text: str
) -> None:
    done = _fresh(
        f"import sys\nsys.argv = ['speakerid', *{args!r}]\n"
        "from speakerid.cli import main\nmain()\n",
        tmp_path,
    )
    assert done.returncode == status
    assert text in done.stdout + done.stderr


def test_help_and_usage_errors_import_no_numpy_nor_the_core(tmp_path: Path) -> None:
    """Every command's options and help texts come from stdlib-only modules (the stages'
    ``constants``), so ``--help``, a command's help and a usage error load neither numpy nor
    onnxruntime nor the core; the command that runs imports them. (A command line that
    embeds audio starts its model before parsing, ``cli.early``: not one of these.)"""
    heavy = ("numpy", "onnxruntime", "soundfile", "sqlite3", "speakerid.api")
    for args in (["--help"], ["verify", "--help"], ["remove"], ["train", "--help"]):
        code = (
            "import atexit, json, sys\n"
            f"atexit.register(lambda: print(json.dumps([m for m in {heavy!r} "
            "if m in sys.modules]), file=sys.stderr))\n"
            f"sys.argv = ['speakerid', *{args!r}]\n"
            "from speakerid.cli import main\nmain()\n"
        )
        done = _fresh(code, tmp_path)
        assert done.returncode in (0, 2), done.stderr
        assert json.loads(done.stderr.strip().splitlines()[-1]) == [], args
