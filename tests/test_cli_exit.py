"""The console script's exit (``cli.leave``): the status and output of a normal exit, without
Python's teardown where that is safe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPEAKERID_STORE": str(tmp_path / "s.sqlite")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )


@pytest.mark.parametrize(
    "args, status, where, text",
    [
        (["--help"], 0, "stdout", "Usage: speakerid"),
        (["list", "--json"], 0, "stdout", "[]"),
        (["remove", "nobody"], 2, "stderr", "error:"),
        (["verify"], 2, "stderr", "Missing argument"),
    ],
)
def test_main_exits_with_the_commands_status_and_output(
    tmp_path: Path, args: list[str], status: int, where: str, text: str
) -> None:
    code = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
        f"sys.argv = ['speakerid', *{args!r}]\n"
        "from speakerid.cli import main\n"
        "main()\n"
    )
    done = _run(code, tmp_path)
    assert done.returncode == status, done.stderr
    assert text in getattr(done, where)
    assert done.stderr.rstrip().endswith("atexit ran")  # handlers run, after the command


@pytest.mark.parametrize(
    "code, status, stderr",
    [("None", 0, ""), ("3", 3, ""), ("'a message'", 1, "a message")],
)
def test_leave_exits_as_sys_exit_would(tmp_path: Path, code: str, status: int, stderr: str) -> None:
    done = _run(f"from speakerid.cli import leave\nleave({code})\n", tmp_path)
    assert done.returncode == status
    assert done.stderr.strip() == stderr


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    code = (
        "import threading, time\n"
        "from speakerid.cli import leave\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
        "leave(0)\n"
    )
    done = _run(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "thread done"
