"""Corpora: layouts, speaker-disjoint splits, pair and class sampling, augmentation, fragments."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import VOICES, synth_voice

from speakerid.audio import FRAGMENT_SAMPLES, SAMPLE_RATE
from speakerid.errors import DataError
from speakerid.lab.data import (
    AudioBank,
    Recording,
    Sampler,
    Split,
    augment,
    crop,
    fragment_set,
    scan_corpora,
    scan_corpus,
    spec_augment,
    split_speakers,
)

SR = SAMPLE_RATE


def write(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wav = (0.1 * rng.standard_normal(round(seconds * SR))).astype(np.float32)
    sf.write(str(path), wav, SR)
    return path


# ----------------------------------------------------------------------------- scanning


@pytest.fixture
def libri(tmp_path: Path) -> Path:
    """LibriSpeech layout: <subset>/<speaker>/<chapter>/<spk>-<ch>-<utt>.flac (+ transcripts)."""
    root = tmp_path / "train-clean-100"
    for spk, chapters in (("19", ("198", "227")), ("26", ("495",)), ("103", ("1240", "1241"))):
        for ch in chapters:
            for utt in range(2):
                write(root / spk / ch / f"{spk}-{ch}-{utt:04d}.flac", 0.5 + 0.25 * utt)
            (root / spk / ch / f"{spk}-{ch}.trans.txt").write_text("HELLO\n")
    (root / "README.TXT").write_text("not a speaker folder")
    return root


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """<root>/<speaker>/*.wav, with files that must be ignored or skipped."""
    root = tmp_path / "vctk"
    write(root / "p225" / "a.wav", 1.0)
    write(root / "p225" / "b.WAV", 2.0)
    write(root / "p226" / "c.wav", 1.5)
    (root / "p226" / "notes.txt").write_text("ignored")
    (root / "p226" / "broken.wav").write_text("not audio")  # unreadable: skipped
    (root / "empty_speaker").mkdir()
    return root


def test_scan_librispeech_layout(libri: Path) -> None:
    recs = scan_corpus(libri)

    assert len(recs) == 10
    assert {r.speaker for r in recs} == {"19", "26", "103"}
    assert all(r.path.suffix == ".flac" and r.path.is_file() for r in recs)
    by_name = {r.path.name: r for r in recs}
    assert by_name["19-198-0000.flac"].seconds == pytest.approx(0.5)
    assert by_name["19-198-0001.flac"].seconds == pytest.approx(0.75)
    assert by_name["103-1241-0001.flac"].speaker == "103"
    assert recs == scan_corpus(libri)  # a stable order
    assert [r.speaker for r in recs] == sorted(r.speaker for r in recs)


def test_scan_plain_layout(plain: Path) -> None:
    recs = scan_corpus(str(plain))
    assert sorted((r.speaker, r.path.name, r.seconds) for r in recs) == [
        ("p225", "a.wav", 1.0),
        ("p225", "b.WAV", 2.0),
        ("p226", "c.wav", 1.5),
    ]


def test_scan_refuses_missing_and_empty_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        scan_corpus(tmp_path / "absent")
    (tmp_path / "empty" / "spk").mkdir(parents=True)
    with pytest.raises(DataError, match="no <speaker>"):
        scan_corpus(tmp_path / "empty")
    loose = tmp_path / "loose"
    write(loose / "a.wav", 1.0)  # files straight under the root belong to no speaker
    with pytest.raises(DataError):
        scan_corpus(loose)


def test_scan_corpora_qualifies_ids_only_for_several_roots(libri: Path, plain: Path) -> None:
    assert {r.speaker for r in scan_corpora([libri])} == {"19", "26", "103"}
    both = scan_corpora([libri, plain])
    assert {r.speaker for r in both} == {
        "train-clean-100:19",
        "train-clean-100:26",
        "train-clean-100:103",
        "vctk:p225",
        "vctk:p226",
    }
    assert len(both) == 13


def test_scan_corpora_keeps_same_named_speakers_apart(tmp_path: Path) -> None:
    write(tmp_path / "a" / "spk" / "1.wav", 1.0)
    write(tmp_path / "b" / "spk" / "1.wav", 1.0)
    assert {r.speaker for r in scan_corpora([tmp_path / "a", tmp_path / "b"])} == {
        "a:spk",
        "b:spk",
    }


# ----------------------------------------------------------------------------- splits


def recs(n: int, prefix: str = "", seconds: float = 10.0) -> list[Recording]:
    """Two recordings per speaker, ``seconds`` in all; no files needed."""
    return [
        Recording(Path(f"{prefix}{i}-{k}.wav"), f"{prefix}{i:03d}", seconds / 2)
        for i in range(n)
        for k in range(2)
    ]


def test_split_is_seeded() -> None:
    corpus = recs(60)
    a = split_speakers(corpus, n_test=10, n_val=5, seed=3)
    assert a == split_speakers(list(reversed(corpus)), n_test=10, n_val=5, seed=3)
    assert a != split_speakers(corpus, n_test=10, n_val=5, seed=4)
    assert isinstance(a, Split)
    assert a.as_dict() == {"train": list(a.train), "val": list(a.val), "test": list(a.test)}


def test_split_is_speaker_disjoint_and_complete() -> None:
    corpus = recs(60)
    s = split_speakers(corpus, n_test=10, n_val=5, seed=0)
    train, val, test = set(s.train), set(s.val), set(s.test)
    assert (len(test), len(val), len(train)) == (10, 5, 45)
    assert not (train & val or train & test or val & test)
    assert train | val | test == {r.speaker for r in corpus}
    assert list(s.test) == sorted(s.test) and list(s.train) == sorted(s.train)


def test_split_n_train_subsamples_the_rest() -> None:
    s = split_speakers(recs(60), n_test=10, n_train=20, seed=0)
    assert len(s.train) == 20 and not set(s.train) & set(s.test)
    assert s.val == ()
    with pytest.raises(DataError, match="training speakers"):
        split_speakers(recs(60), n_test=10, n_train=51, seed=0)


def test_split_holdout_prefix() -> None:
    corpus = recs(40, "libri:") + recs(8, "vctk:")
    s = split_speakers(corpus, n_test=5, n_val=2, seed=1, holdout_prefix="vctk:")
    assert all(x.startswith("vctk:") for x in s.test + s.val)
    assert {x for x in s.train if x.startswith("vctk:")} == {
        r.speaker for r in corpus if r.speaker.startswith("vctk:")
    } - set(s.test) - set(s.val)
    with pytest.raises(DataError, match="hold out 9"):
        split_speakers(corpus, n_test=8, n_val=1, holdout_prefix="vctk:")


def test_split_holds_out_only_speakers_with_two_fragments_of_audio() -> None:
    corpus = recs(10, "long", seconds=6.0) + recs(30, "short", seconds=5.9)
    s = split_speakers(corpus, n_test=6, n_val=4, seed=0)
    assert all(x.startswith("long") for x in s.test + s.val)
    with pytest.raises(DataError, match="only 10 have"):
        split_speakers(corpus, n_test=11)


def test_split_refuses_to_leave_nobody_to_train_on() -> None:
    with pytest.raises(DataError) as exc:
        split_speakers(recs(5), n_test=3, n_val=2)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError):
        split_speakers(recs(5), n_test=6)


# ----------------------------------------------------------------------------- sampling


def code(speaker: int, recording: int) -> float:
    """A recording whose every sample says who and which: speaker + recording / 10."""
    return speaker + recording / 10


def decode(wave: np.ndarray) -> tuple[int, int]:
    assert np.ptp(wave) < 1e-4  # a constant: crops and speed changes keep it
    value = float(wave[0])
    return int(np.floor(value + 1e-4)), round((value - np.floor(value + 1e-4)) * 10)


def constant_bank(n_recordings: list[int], samples: int = 20_000) -> AudioBank:
    waves = [
        [np.full(samples, code(s, r), np.float32) for r in range(n)]
        for s, n in enumerate(n_recordings)
    ]
    names = [[f"spk{s}/rec{r}.wav" for r in range(n)] for s, n in enumerate(n_recordings)]
    return AudioBank([f"spk{s}" for s in range(len(n_recordings))], waves, names)


@pytest.mark.parametrize("speed", [None, (0.9, 1.1)])
def test_pairs_are_balanced_and_labelled_right(speed: tuple[float, float] | None) -> None:
    bank = constant_bank([1, 2, 3, 4, 1, 2])
    a, b, same = Sampler(bank, length=4_000, seed=0, speed=speed).pairs(64)

    assert a.shape == b.shape == (64, 4_000) and a.dtype == b.dtype == np.float32
    assert same.shape == (64,) and same.dtype == np.float32
    np.testing.assert_array_equal(same, np.repeat([1.0, 0.0], 32))  # exactly half, first
    for x, y, s in zip(a, b, same, strict=True):
        (spk_x, rec_x), (spk_y, rec_y) = decode(x), decode(y)
        if s:
            assert spk_x == spk_y
            if len(bank.waves[spk_x]) > 1:
                assert rec_x != rec_y  # a different recording where there is one
            else:
                assert rec_x == rec_y == 0
        else:
            assert spk_x != spk_y


def test_pairs_odd_batch_and_coverage() -> None:
    bank = constant_bank([2] * 5)
    sampler = Sampler(bank, length=1_000, seed=1, speed=None)
    _, _, same = sampler.pairs(7)
    assert same.sum() == 3 and len(same) == 7
    seen = set()
    for _ in range(20):
        a, b, _ = sampler.pairs(16)
        seen |= {decode(x) for x in np.concatenate([a, b])}
    assert seen == {(s, r) for s in range(5) for r in range(2)}  # every recording gets used


def test_pairs_are_seeded() -> None:
    bank = constant_bank([2, 3, 1, 2])
    one = Sampler(bank, length=2_000, seed=5).pairs(10)
    two = Sampler(bank, length=2_000, seed=5).pairs(10)
    other = Sampler(bank, length=2_000, seed=6).pairs(10)
    for x, y in zip(one, two, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(one, other, strict=True))


def test_pairs_need_two_speakers() -> None:
    with pytest.raises(DataError, match="two speakers"):
        Sampler(constant_bank([3]), length=1_000).pairs(4)


def test_pairs_scale_to_many_speakers_without_listing_pairs() -> None:
    """50,000 speakers (1.25e9 possible pairs): a batch costs the same as with ten."""
    n = 50_000
    wave = np.zeros(400, np.float32)
    bank = AudioBank([str(i) for i in range(n)], [[wave]] * n, [["x"]] * n)
    sampler = Sampler(bank, length=400, seed=0, speed=None)
    start = time.perf_counter()
    a, b, same = sampler.pairs(256)
    assert time.perf_counter() - start < 2.0
    assert a.shape == b.shape == (256, 400) and same.sum() == 128


def test_classes_labels_match_the_audio() -> None:
    bank = constant_bank([1, 2, 3])
    waves, labels = Sampler(bank, length=3_000, seed=2, speed=(0.9, 1.1)).classes(32)
    assert waves.shape == (32, 3_000) and labels.shape == (32,)
    assert set(labels.tolist()) == {0, 1, 2}
    for wave, label in zip(waves, labels, strict=True):
        assert decode(wave)[0] == label


@pytest.mark.parametrize("speed", [0.9, 0.95, 1.0, 1.05, 1.1, 1.37])
@pytest.mark.parametrize("source", [100, 5_000, 48_000])
def test_crop_has_exact_length(speed: float, source: int) -> None:
    rng = np.random.default_rng(0)
    wav = np.sin(np.arange(source, dtype=np.float32) / 7)
    out = crop(wav, 4_000, rng, speed=speed)
    assert out.shape == (4_000,) and out.dtype == np.float32


def test_crop_content() -> None:
    rng = np.random.default_rng(0)
    ramp = np.arange(10_000, dtype=np.float32)
    plain = crop(ramp, 1_000, rng)
    np.testing.assert_array_equal(np.diff(plain), 1.0)  # one contiguous stretch
    fast = crop(ramp, 1_000, rng, speed=1.1)
    np.testing.assert_allclose(np.diff(fast), 1099 / 999, rtol=1e-3)  # 10% faster (float32)
    slow = crop(ramp, 1_000, rng, speed=0.9)
    np.testing.assert_allclose(np.diff(slow), 899 / 999, rtol=1e-3)
    short = crop(np.arange(300, dtype=np.float32), 1_000, rng)
    assert set(np.unique(short)) <= set(range(300))  # repeated end to end, nothing invented


# ----------------------------------------------------------------------------- augment


@pytest.fixture(scope="module")
def voices() -> torch.Tensor:
    names = list(VOICES)
    return torch.from_numpy(
        np.stack([synth_voice(VOICES[names[i % 3]], seconds=2.0, seed=i) for i in range(6)])
    )


def test_augment_keeps_shape_and_finiteness_and_changes_the_signal(voices: torch.Tensor) -> None:
    out = augment(voices, torch.Generator().manual_seed(0))
    assert out.shape == voices.shape and out.dtype == voices.dtype
    assert torch.isfinite(out).all()
    changed = (out - voices).abs().amax(dim=1) > 1e-3
    assert changed.all()  # at least the random gain touches every fragment
    assert out.abs().max() < 10 * voices.abs().max()  # no blow-up


def test_augment_is_deterministic_given_the_generator(voices: torch.Tensor) -> None:
    one = augment(voices, torch.Generator().manual_seed(7))
    two = augment(voices, torch.Generator().manual_seed(7))
    three = augment(voices, torch.Generator().manual_seed(8))
    assert torch.equal(one, two)
    assert not torch.allclose(one, three)


def test_augment_survives_silent_fragments() -> None:
    wav = torch.zeros(4, 8_000)
    wav[0] = torch.sin(torch.arange(8_000) / 5.0)
    out = augment(wav, torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- fragments


def test_fragment_set_labels_line_up() -> None:
    # spk0: 7 s (2 fragments, 1 s tail dropped) + 4.6 s (2); spk1: 3 s (1) + 0.3 s (refused)
    lengths = [[7.0, 4.6], [3.0, 0.3]]
    waves = [
        [np.full(round(sec * SR), code(s, r), np.float32) for r, sec in enumerate(row)]
        for s, row in enumerate(lengths)
    ]
    names = [[f"spk{s}/rec{r}.wav" for r in range(len(row))] for s, row in enumerate(lengths)]
    bank = AudioBank(["spk0", "spk1"], waves, names)

    frags = fragment_set(bank)

    assert len(frags) == 5 and frags.waves.shape == (5, FRAGMENT_SAMPLES)
    assert frags.speakers.tolist() == ["spk0"] * 4 + ["spk1"]
    assert frags.recordings.tolist() == [
        "spk0/rec0.wav",
        "spk0/rec0.wav",
        "spk0/rec1.wav",
        "spk0/rec1.wav",
        "spk1/rec0.wav",
    ]
    for wave, spk, rec in zip(frags.waves, frags.speakers, frags.recordings, strict=True):
        s, r = decode(wave)
        assert spk == f"spk{s}" and rec == f"spk{s}/rec{r}.wav"


def test_fragment_set_caps_fragments_per_speaker_evenly() -> None:
    bank = constant_bank([3, 1], samples=10 * SR)  # 3 fragments per recording
    capped = fragment_set(bank, max_per_speaker=4)
    assert capped.speakers.tolist() == ["spk0"] * 4 + ["spk1"] * 3
    # spread over spk0's nine fragments: the first and the last recording are both kept
    assert [decode(w)[1] for w in capped.waves[:4]] == [0, 1, 1, 2]  # fragments 0, 3, 5, 8
    assert len(fragment_set(bank)) == 12
    assert len(fragment_set(bank, hop_seconds=1.0)) == 8 * 4  # 10 s, hop 1 s: 8 per recording


def test_fragment_set_refuses_a_bank_without_fragments() -> None:
    bank = constant_bank([1, 1], samples=SR // 4)  # under MIN_SPEECH_SECONDS
    with pytest.raises(DataError, match="no evaluation fragments"):
        fragment_set(bank)


# ----------------------------------------------------------------------------- AudioBank


def test_audio_bank_loads_trims_and_skips_silence(tmp_path: Path) -> None:
    t = np.arange(2 * SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    padded = np.concatenate([np.zeros(2 * SR, np.float32), tone, np.zeros(2 * SR, np.float32)])
    for speaker in ("a", "b"):
        (tmp_path / speaker).mkdir()
    sf.write(str(tmp_path / "a" / "1.wav"), padded, SR)
    sf.write(str(tmp_path / "a" / "2.wav"), np.zeros(SR, np.float32), SR)  # silent: skipped
    sf.write(str(tmp_path / "b" / "1.wav"), np.zeros(SR, np.float32), SR)
    corpus = scan_corpus(tmp_path)

    bank = AudioBank.load(corpus, ["a", "b"])

    assert bank.speakers == ["a"] and len(bank) == 1  # b has no usable speech
    assert len(bank.waves[0]) == 1 and bank.names[0] == [str(tmp_path / "a" / "1.wav")]
    assert 2.0 <= bank.seconds <= 2.4  # the tone plus 150 ms margins, silence trimmed
    with pytest.raises(DataError, match="usable speech"):
        AudioBank.load(corpus, ["b"])


def test_spec_augment_masks_bands_and_spans() -> None:
    feats = torch.ones(8, 80, 300)
    out = spec_augment(feats, torch.Generator().manual_seed(0))
    assert out.shape == feats.shape
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    # at most 2 bands of 10 and 2 spans of 20 per fragment are zeroed
    kept = out.mean(dim=(1, 2))
    assert (kept >= (1 - 20 / 80) * (1 - 40 / 300) - 1e-6).all() and (kept < 1).any()
    again = spec_augment(feats, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    raw = torch.ones(2, 1, 1000)
    assert torch.equal(spec_augment(raw, torch.Generator()), raw)  # raw waveforms pass through
