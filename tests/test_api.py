"""The Python API: the README's example, run as written, and the API's own promises."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import VOICES, synth_voice, write_wav

from speakerid import FileError, Identification, SpeakerID, SpeakerIDError, Verification
from speakerid.audio import resample

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_python() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for k, name in enumerate(("a1.wav", "a2.wav", "query.wav")):
        write_wav(tmp_path / name, synth_voice(VOICES["alice"], seed=k))
    exec(compile(_readme_python(), str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[0] in ("True", "False")
    assert printed[1].startswith("alice") or printed[1].startswith("None")
    assert printed[-1].startswith("refused:") and "nobody" in printed[-1]
    assert (tmp_path / "voices.sqlite").is_file()


def test_api_results_and_errors(model_path: Path, voices_dir: Path, tmp_path: Path) -> None:
    with SpeakerID(store=tmp_path / "s.sqlite", model=model_path) as sid:
        assert sid.speakers() == []  # no model needed for this
        assert sid._embedder is None
        enrolled = sid.enroll("alice", str(voices_dir / "alice_1.wav"))  # one path is fine
        assert enrolled.recordings == 1
        sid.enroll("bob", [voices_dir / "bob_1.wav", voices_dir / "bob_2.wav"])
        verdict = sid.verify("alice", voices_dir / "alice_2.wav")
        assert isinstance(verdict, Verification) and verdict.speaker == "alice"
        who = sid.identify(voices_dir / "alice_2.wav", top=1)
        assert isinstance(who, Identification) and len(who.candidates) == 1
        many = sid.identify_many([voices_dir / "bob_3.wav", tmp_path / "none.wav"])
        assert isinstance(many[0], Identification) and isinstance(many[1], FileError)
        vector = sid.embed(voices_dir / "carol_1.wav")
        assert vector.shape == (16,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
        # the file's samples as an array, and the same audio at 32 kHz, embed alike
        wav = synth_voice(VOICES["carol"], seed=201)  # carol_1.wav's audio
        assert float(sid.embed(wav) @ vector) > 0.999
        assert float(sid.embed(resample(wav, 16_000, 32_000), sample_rate=32_000) @ vector) > 0.99
        with pytest.raises(SpeakerIDError, match="no such file"):
            sid.identify(tmp_path / "none.wav")
        with pytest.raises(SpeakerIDError, match="sample_rate"):
            sid.embed(voices_dir / "carol_1.wav", sample_rate=8000)
        with pytest.raises(SpeakerIDError, match="of speech"):
            sid.embed(synth_voice(VOICES["bob"], 0.3))
        assert sid.remove("bob") == 2


def test_api_onnx_backend_matches_torch(model_path: Path, voices_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    sample = voices_dir / "alice_1.wav"
    a = SpeakerID(model=model_path, precision="fp32").embed(sample)
    b = SpeakerID(model=model_path, backend="onnx").embed(sample)
    assert float(a @ b) >= 0.9999


def test_the_old_name_verdict_still_imports_with_a_warning() -> None:
    import speakerid

    with pytest.warns(DeprecationWarning, match="Verification"):
        assert speakerid.Verdict is Verification
