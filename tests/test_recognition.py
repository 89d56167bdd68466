"""Recognition (speakerid.recognition): enroll, verify, identify over a store and an embedder;
speaker folders; the batch rule (each_file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from speakerid.embedding.backends.torch import Embedder, load_model
from speakerid.errors import DataError, SpeakerIDError, UnknownSpeakerError
from speakerid.recognition import enroll, identify, speaker_folders, verify
from speakerid.store.speakers import SpeakerStore


def test_speaker_folders_layouts(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for rel in [
        "19/198/19-198-0001.flac",
        "19/198/19-198-0002.flac",
        "26/26-1.wav",
        "26/notes.txt",
        ".cache/x.wav",
        "27/.hidden/y.wav",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    found = speaker_folders(root)
    assert [name for name, _ in found] == ["19", "26"]
    assert [p.name for p in found[0][1]] == ["19-198-0001.flac", "19-198-0002.flac"]
    with pytest.raises(DataError):
        speaker_folders(tmp_path / "nothing")
    with pytest.raises(DataError):
        speaker_folders(root / "27")


@pytest.mark.slow
def test_audio_operations(store_path: Path, model_path: Path, voices_dir: Path) -> None:
    embedder = Embedder(load_model(model_path), device="cpu")
    a = [str(voices_dir / f"alice_{k}.wav") for k in (1, 2)]
    with SpeakerStore(store_path) as store:
        with pytest.raises(SpeakerIDError):
            identify(store, embedder, a)  # nobody enrolled yet
        enroll(store, embedder, "alice", a)
        enroll(store, embedder, "bob", [str(voices_dir / "bob_1.wav")])
        assert store.meta()["model_fingerprint"] == embedder.model.fingerprint
        v = verify(store, embedder, "alice", str(voices_dir / "alice_3.wav"))
        assert -1.0 <= v.score <= 1.0 and v.threshold == 0.5 and v.accepted == (v.score >= 0.5)
        one = identify(store, embedder, [str(voices_dir / "alice_3.wav")], top_k=1)[0]
        many = identify(
            store, embedder, [str(voices_dir / f) for f in ("alice_3.wav", "bob_3.wav")], 1.0
        )
        assert len(one.candidates) == 1
        # The same best candidate; the score to within float rounding (with bf16 arithmetic a
        # fragment's embedding may move in the last digits with the batch it is run in).
        assert many[0].candidates[0].speaker == one.candidates[0].speaker
        assert many[0].candidates[0].score == pytest.approx(one.candidates[0].score, abs=1e-5)
        assert [r.best for r in many] == [None, None]
        with pytest.raises(UnknownSpeakerError):
            verify(store, embedder, "zed", str(voices_dir / "alice_3.wav"))


def test_each_file_keeps_going_past_bad_audio_and_reports_progress() -> None:
    from speakerid.errors import AudioError
    from speakerid.recognition import FileError, each_file

    def work(path: object) -> str:
        if str(path).startswith("bad"):
            raise AudioError(f"{path}: the audio is silent")
        return f"ok:{path}"

    seen: list[tuple[int, int]] = []
    files = ["a.wav", "bad.wav", "c.wav"]
    done = list(each_file(files, work, on_file=lambda d, t: seen.append((d, t))))
    assert [p for p, _ in done] == files
    assert done[0][1] == "ok:a.wav" and done[2][1] == "ok:c.wav"
    assert done[1][1] == FileError("bad.wav", "bad.wav: the audio is silent")
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(AudioError, match="silent"):
        list(each_file(files, work, strict=True))


def test_each_file_lets_a_damaged_model_stop_the_batch() -> None:
    from speakerid.errors import CheckpointError
    from speakerid.recognition import each_file

    def work(path: object) -> str:
        raise CheckpointError("m.safetensors: the model produced NaN")

    with pytest.raises(CheckpointError):
        list(each_file(["a.wav", "b.wav"], work))
