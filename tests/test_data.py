"""data.py: corpus layouts, speaker-disjoint splits, balanced pairs, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerid.data import (
    AudioBank,
    Recording,
    Sampler,
    augment,
    crop,
    fragment_set,
    scan_corpora,
    scan_corpus,
    split_speakers,
)
from speakerid.errors import DataError


def _write(path: Path, seconds: float = 1.0, value: float = 0.1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    sf.write(path, (value * rng.standard_normal(int(seconds * 16_000))).astype("float32"), 16_000)


def test_librispeech_and_plain_layouts(tmp_path: Path) -> None:
    libri = tmp_path / "train-clean-100"
    for spk in ("19", "26"):
        for ch in ("100", "200"):
            _write(libri / spk / ch / f"{spk}-{ch}-0000.flac")
    plain = tmp_path / "vctk"
    _write(plain / "p225" / "a.wav")
    (plain / "p225" / "notes.txt").write_text("ignored")
    recs = scan_corpus(libri)
    assert len(recs) == 4 and {r.speaker for r in recs} == {"19", "26"}
    assert all(abs(r.seconds - 1.0) < 1e-3 for r in recs)
    both = scan_corpora([libri, plain])
    assert {r.speaker for r in both} == {"train-clean-100:19", "train-clean-100:26", "vctk:p225"}
    with pytest.raises(DataError):
        scan_corpus(tmp_path / "nothing")


def _recs(n: int, prefix: str = "") -> list[Recording]:
    return [Recording(Path(f"{i}.wav"), f"{prefix}{i:03d}", 10.0) for i in range(n)]


def test_split_is_seeded_and_disjoint() -> None:
    recs = _recs(50) + _recs(10, "x:")
    a = split_speakers(recs, n_test=10, n_val=5, seed=3)
    assert a == split_speakers(recs, n_test=10, n_val=5, seed=3)
    assert a != split_speakers(recs, n_test=10, n_val=5, seed=4)
    assert not set(a.train) & set(a.test) and not set(a.val) & (set(a.test) | set(a.train))
    assert (len(a.test), len(a.val), len(a.train)) == (10, 5, 45)
    held = split_speakers(recs, n_test=5, seed=0, holdout_prefix="x:")
    assert all(s.startswith("x:") for s in held.test)
    assert len(split_speakers(recs, n_test=5, n_train=20, seed=0).train) == 20
    with pytest.raises(DataError):
        split_speakers(recs, n_test=70)


@pytest.fixture
def bank() -> AudioBank:
    # speaker s, recording r is the constant 10*s + r: pairs can be read off the samples
    waves = [
        [np.full(20_000, 10.0 * s + r, np.float32) for r in range(1 + s % 3)] for s in range(12)
    ]
    names = [[f"{s}/{r}" for r in range(len(w))] for s, w in enumerate(waves)]
    return AudioBank([str(s) for s in range(12)], waves, names)


def test_pairs_are_balanced_and_correct(bank: AudioBank) -> None:
    sampler = Sampler(bank, length=8_000, seed=0, speed=None)
    a, b, same = sampler.pairs(64)
    assert a.shape == b.shape == (64, 8_000) and same.sum() == 32
    spk_a, spk_b = a[:, 0] // 10, b[:, 0] // 10
    rec_a, rec_b = a[:, 0] % 10, b[:, 0] % 10
    assert (spk_a[same == 1] == spk_b[same == 1]).all()
    assert (spk_a[same == 0] != spk_b[same == 0]).all()
    several = (same == 1) & (spk_a % 3 != 0)  # those speakers have 2-3 recordings
    assert (rec_a[several] != rec_b[several]).all()


def test_classes_and_crop(bank: AudioBank) -> None:
    waves, labels = Sampler(bank, length=8_000, seed=1).classes(16)
    assert waves.shape == (16, 8_000) and labels.shape == (16,)
    rng = np.random.default_rng(0)
    short = np.arange(100, dtype=np.float32)
    assert crop(short, 1000, rng).shape == (1000,)  # repeated
    assert crop(np.arange(5000, dtype=np.float32), 1000, rng, speed=1.2).shape == (1000,)


def test_augment_is_deterministic_and_changes_audio() -> None:
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 16_000)).astype("f4"))
    one = augment(wav * 0.1, torch.Generator().manual_seed(1))
    two = augment(wav * 0.1, torch.Generator().manual_seed(1))
    assert one.shape == wav.shape and torch.isfinite(one).all()
    assert torch.equal(one, two) and not torch.allclose(one, wav * 0.1)


def test_fragment_set_labels(bank: AudioBank) -> None:
    bank.waves = [[np.full(100_000, float(s), np.float32)] for s in range(len(bank))]
    bank.names = [[f"{s}.wav"] for s in range(len(bank))]
    fs = fragment_set(bank, max_per_speaker=1)
    assert len(fs) == len(bank)
    assert all(float(w[0]) == float(s) for w, s in zip(fs.waves, fs.speakers, strict=True))
    assert len(fragment_set(bank)) == 2 * len(bank)  # 6.25 s -> 2 fragments
