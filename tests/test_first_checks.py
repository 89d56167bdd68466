"""Cheap checks come before the model: what can be refused without it (an unknown speaker, a
missing, empty or unreadable file, a missing folder, nobody enrolled) never loads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import VOICES, synth_voice, write_wav

from speakerid.cli import app


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: every refusal below must come before it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    for module in ("speakerid.api", "speakerid.embedding.pipeline"):
        monkeypatch.setattr(f"{module}.open_embedder", refuse)


def refused(runner, args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert "the model was loaded" not in result.output and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()  # one per file refused
    assert all(ln.startswith("error: ") for ln in lines) and needle in lines[0], result.stderr


def test_every_command_refuses_before_the_model(
    runner, no_model: None, enrolled_store: Path, voices_dir: Path, tmp_path: Path
) -> None:
    store = ["--store", str(enrolled_store)]
    clip = str(voices_dir / "alice_3.wav")
    missing = str(tmp_path / "nowhere.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cases = [
        (["verify", "nobody", clip, *store], "not enrolled"),
        (["verify", "alice", missing, *store], "no such file"),
        (["verify", "alice", str(empty), *store], "the file is empty"),
        (["verify", "../evil", clip, *store], "name"),
        (["identify", missing, *store], "no such file"),
        (["identify", missing, str(empty), *store], "no such file"),
        (["identify", clip, "--store", str(tmp_path / "new.sqlite")], "no speakers are enrolled"),
        (["embed", missing, "--out", str(tmp_path / "e.npz")], "no such file"),
        (["enroll", "carol", clip, missing, *store], "no such file"),
        (["enroll", "bad/name", clip, *store], "name"),
        (["enroll-dir", str(tmp_path / "nowhere"), *store], "no such directory"),
        (["enroll-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.npz")], "no such"),
        (["calibrate", str(tmp_path / "nowhere"), *store], "no such directory"),
    ]
    for args, needle in cases:
        refused(runner, args, needle)


def test_a_readable_file_beside_a_missing_one_is_still_embedded(
    runner, model_path: Path, voices_dir: Path, tmp_path: Path
) -> None:
    good = write_wav(tmp_path / "good.wav", synth_voice(VOICES["bob"], seed=5))
    args = ["embed", str(good), str(tmp_path / "nowhere.wav"), "--out", str(tmp_path / "e.npz")]
    result = runner.invoke(app, [*args, "--model", str(model_path)])
    assert result.exit_code == 2 and (tmp_path / "e.npz").is_file(), result.output
    assert "nowhere.wav: no such file" in result.stderr
