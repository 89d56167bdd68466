"""Progress that reaches scripts: plain lines on a stderr that is not a terminal (what, how
far, how long left), the core's notes of slow steps, and ``--quiet`` silencing both."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from speakerid.cli import app
from speakerid.cli import progress as progress_module
from speakerid.cli.progress import PlainProgress, SilentProgress, duration, progress_for


@pytest.fixture
def talkative(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every update prints (no 2-s grace, no 10-s spacing), and --quiet is not implied."""
    monkeypatch.setattr(progress_module, "PLAIN_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_SECONDS", 0.0)
    monkeypatch.delenv("SPEAKERID_QUIET")


def test_durations_read_as_a_clock() -> None:
    assert [duration(s) for s in (8.2, 75, 3600 + 120)] == ["8s", "1m15s", "1h02m"]


def test_plain_lines_say_what_how_far_and_how_long(talkative: None) -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=200)
    assert isinstance(progress_for(console, quiet=False), PlainProgress)  # not a terminal
    assert isinstance(progress_for(console, quiet=True), SilentProgress)
    with progress_for(console, quiet=False) as bar:
        task = bar.add_task("embedding", total=4)
        for done in range(1, 5):
            bar.update(task, completed=done)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("speakerid: embedding: 1/4 files (25%), about ")
    assert lines[0].endswith(" left")
    assert re.fullmatch(r"speakerid: embedding: 4 files in \d+s", lines[-1]), lines[-1]


def test_a_quick_step_prints_nothing() -> None:
    stream = io.StringIO()
    with PlainProgress(Console(file=stream)) as bar:
        bar.update(bar.add_task("embedding", total=3), completed=3)
    assert stream.getvalue() == ""


def test_one_file_prints_nothing_however_long(talkative: None) -> None:
    stream = io.StringIO()
    with PlainProgress(Console(file=stream)) as bar:
        bar.update(bar.add_task("identifying", total=1), completed=1)
    assert stream.getvalue() == ""


def test_cli_progress_and_quiet(
    runner, talkative: None, model_path: Path, voices_dir: Path, tmp_path: Path
) -> None:
    files = [str(voices_dir / f"alice_{k}.wav") for k in (1, 2, 3)]
    args = ["embed", *files, "--out", str(tmp_path / "e.npz"), "--model", str(model_path)]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "speakerid: embedding: 1/3 files (33%)" in shown.stderr
    assert "speakerid: embedding: 3 files in " in shown.stderr
    for quiet in (["--quiet"], ["-q"]):
        silent = runner.invoke(app, [*args, *quiet])
        assert silent.exit_code == 0 and silent.stderr == "", silent.stderr


def test_calibrate_says_what_it_is_about_to_do(
    runner, talkative: None, model_path: Path, tmp_path: Path
) -> None:
    from conftest import VOICES, synth_voice, write_wav

    root = tmp_path / "domain"
    for i, (name, voice) in enumerate([*VOICES.items(), ("dave", VOICES["bob"])]):
        for k in (1, 2):
            write_wav(root / name / f"{k}.wav", synth_voice(voice, seed=50 * i + k))
    args = ["calibrate", str(root), "--dry-run", "--model", str(model_path)]
    args += ["--store", str(tmp_path / "s.sqlite")]
    result = runner.invoke(app, args)
    first = result.stderr.splitlines()[0] if result.stderr else ""
    assert first == "speakerid: embedding 8 recordings of 4 speakers, then scoring", result.output


def test_the_first_onnx_export_is_announced_once(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from speakerid.embedding.backends.onnx import load_onnx_model

    monkeypatch.setenv("SPEAKERID_CACHE", str(tmp_path / "cache"))  # nothing exported yet
    with caplog.at_level("INFO", logger="speakerid"):
        load_onnx_model(model_path)
        load_onnx_model(model_path)  # from the cache: no note
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and notes[0].startswith(f"exporting {model_path.name} to ONNX once")
