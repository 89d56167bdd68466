"""Training and evaluation corpora: scanning, speaker-disjoint splits, sampling, augmentation.

Beside the embedding chain: nothing in audio -> features -> model -> embed -> store imports it.
Two layouts are read: LibriSpeech (``<subset>/<speaker>/<chapter>/*.flac``) and plain
``<root>/<speaker>/*.{wav,flac,ogg}``; every file counts as one recording. Augmentation is of
waveforms (``augment``) and of features (``spec_augment``), both on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from speakerid.audio import (
    FRAGMENT_SAMPLES,
    SAMPLE_RATE,
    fragment,
    load_audio,
    trim_silence,
)
from speakerid.errors import AudioError, DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
SPEED_RANGE = (0.9, 1.1)  # default speed perturbation range (tempo and pitch, like sox speed)
NOISE_SNR_DB = (5.0, 25.0)  # additive noise SNR range
GAIN_DB = 6.0  # random gain range, +-
REVERB_RT60 = (0.2, 0.7)  # seconds, synthetic exponential-decay room responses


@dataclass(frozen=True)
class Recording:
    """One audio file of one speaker."""

    path: Path
    speaker: str  # speaker id, qualified by corpus folder when several corpora are read
    seconds: float  # duration before trimming


def scan_corpus(root: str | Path, qualify: bool = False) -> list[Recording]:
    """List every audio file under ``root/<speaker>/`` (any depth) as a Recording.

    ``qualify`` prefixes speaker ids with the root folder's name (``vctk:p225``) so that
    several corpora can be mixed without id clashes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    out: list[Recording] = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        speaker = f"{root.name}:{spk_dir.name}" if qualify else spk_dir.name
        for path in sorted(spk_dir.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                try:
                    info = sf.info(str(path))
                except (sf.LibsndfileError, RuntimeError):
                    continue  # unreadable files are skipped, as a corpus reader should
                out.append(Recording(path, speaker, info.frames / info.samplerate))
    if not out:
        raise DataError(f"{root}: no <speaker>/.../*.{{wav,flac,ogg}} files found")
    return out


def scan_corpora(roots: Sequence[str | Path]) -> list[Recording]:
    """Scan several corpora; speaker ids are qualified when more than one is given."""
    qualify = len(roots) > 1
    return [r for root in roots for r in scan_corpus(root, qualify=qualify)]


@dataclass(frozen=True)
class Split:
    """Speaker-disjoint train / validation / test speaker lists."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_speakers(
    recordings: Sequence[Recording],
    n_test: int,
    n_val: int = 0,
    n_train: int = 0,
    seed: int = 0,
    holdout_prefix: str | None = None,
    min_seconds: float = 2 * FRAGMENT_SAMPLES / SAMPLE_RATE,
) -> Split:
    """Deterministic speaker-disjoint split.

    Test and validation speakers are drawn (seeded) from speakers with at least
    ``min_seconds`` of audio (two fragments, so 1-shot tasks have a query), and only among
    ids starting with ``holdout_prefix`` when given. ``n_train=0`` keeps every other speaker.
    """
    seconds: dict[str, float] = {}
    for r in recordings:
        seconds[r.speaker] = seconds.get(r.speaker, 0.0) + r.seconds
    speakers = sorted(seconds)
    eligible = [
        s
        for s in speakers
        if seconds[s] >= min_seconds and (holdout_prefix is None or s.startswith(holdout_prefix))
    ]
    if n_test + n_val > len(eligible):
        raise DataError(
            f"asked to hold out {n_test + n_val} speakers but only {len(eligible)} have "
            f">= {min_seconds:.0f} s of audio"
        )
    rng = np.random.default_rng(seed)
    held = [eligible[i] for i in rng.permutation(len(eligible))[: n_test + n_val]]
    test, val = sorted(held[:n_test]), sorted(held[n_test:])
    rest = [s for s in speakers if s not in set(held)]
    if n_train:
        if n_train > len(rest):
            raise DataError(f"asked for {n_train} training speakers, only {len(rest)} remain")
        rest = sorted(rest[i] for i in rng.permutation(len(rest))[:n_train])
    if not rest:
        raise DataError("no training speakers left after holding out test/validation speakers")
    return Split(tuple(rest), tuple(val), tuple(test))


@dataclass
class AudioBank:
    """Trimmed 16 kHz waveforms of a set of speakers, held in memory for sampling."""

    speakers: list[str]
    waves: list[list[np.ndarray]]  # per speaker, per recording
    names: list[list[str]]  # per speaker, per recording: the file path
    seconds: float = field(default=0.0)

    @classmethod
    def load(
        cls, recordings: Sequence[Recording], speakers: Sequence[str], vad: str = "energy"
    ) -> AudioBank:
        """The recordings of ``speakers``, trimmed to speech by ``vad`` (``audio.VADS``);
        recordings without speech are left out."""
        wanted = {s: i for i, s in enumerate(speakers)}
        waves: list[list[np.ndarray]] = [[] for _ in speakers]
        names: list[list[str]] = [[] for _ in speakers]
        for r in recordings:
            if r.speaker not in wanted:
                continue
            try:
                wav = trim_silence(load_audio(r.path), name=str(r.path), vad=vad)
            except AudioError:
                continue
            waves[wanted[r.speaker]].append(wav)
            names[wanted[r.speaker]].append(str(r.path))
        keep = [i for i, w in enumerate(waves) if w]
        if not keep:
            raise DataError("none of the selected recordings holds usable speech")
        bank = cls([speakers[i] for i in keep], [waves[i] for i in keep], [names[i] for i in keep])
        bank.seconds = sum(len(w) for ws in bank.waves for w in ws) / SAMPLE_RATE
        return bank

    def __len__(self) -> int:
        return len(self.speakers)


def crop(wav: np.ndarray, length: int, rng: np.random.Generator, speed: float = 1.0) -> np.ndarray:
    """A random ``length``-sample crop, speed-perturbed by ``speed`` (linear interpolation).

    Recordings shorter than the crop are repeated end to end, the rule ``audio.fragment``
    applies to short recordings.
    """
    span = round(length * speed)
    if len(wav) < span:
        wav = np.tile(wav, -(-span // len(wav)))
    start = int(rng.integers(0, len(wav) - span + 1))
    piece = wav[start : start + span]
    if span != length:
        piece = np.interp(np.linspace(0, span - 1, length), np.arange(span), piece)
    return piece.astype(np.float32)


class Sampler:
    """On-the-fly batches from an AudioBank; no list of pairs is ever materialised."""

    def __init__(
        self,
        bank: AudioBank,
        length: int = FRAGMENT_SAMPLES,
        seed: int = 0,
        speed: tuple[float, float] | None = SPEED_RANGE,
    ) -> None:
        self.bank = bank
        self.length = length
        self.rng = np.random.default_rng(seed)
        self.speed = speed  # (low, high) uniform speed factors, or None for no perturbation

    def _crop(self, speaker: int, recording: int | None = None) -> tuple[np.ndarray, int]:
        recs = self.bank.waves[speaker]
        rec = int(self.rng.integers(len(recs))) if recording is None else recording
        factor = float(self.rng.uniform(*self.speed)) if self.speed else 1.0
        return crop(recs[rec], self.length, self.rng, factor), rec

    def classes(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(batch, length)`` crops of uniformly drawn speakers and their speaker indices."""
        labels = self.rng.integers(len(self.bank), size=batch)
        waves = np.stack([self._crop(int(s))[0] for s in labels])
        return waves, labels

    def pairs(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Balanced pairs: ``a, b`` of shape ``(batch, length)`` and ``same`` (batch,) in {0, 1}.

        The first half are same-speaker pairs, from two different recordings where the
        speaker has them; the second half pair two distinct speakers.
        """
        if len(self.bank) < 2:
            raise DataError("pair sampling needs at least two speakers")
        n_same = batch // 2
        a, b, same = [], [], []
        for i in range(batch):
            s1 = int(self.rng.integers(len(self.bank)))
            x, rec = self._crop(s1)
            if i < n_same:
                n_rec = len(self.bank.waves[s1])
                other = rec if n_rec == 1 else int((rec + self.rng.integers(1, n_rec)) % n_rec)
                y, _ = self._crop(s1, other)
            else:
                s2 = int((s1 + self.rng.integers(1, len(self.bank))) % len(self.bank))
                y, _ = self._crop(s2)
            a.append(x)
            b.append(y)
            same.append(1.0 if i < n_same else 0.0)
        return np.stack(a), np.stack(b), np.asarray(same, dtype=np.float32)


def augment(wav: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random gain, synthetic reverberation and additive noise on a ``(B, samples)`` batch.

    Runs on the batch's device. Each effect is applied to a random half (reverb: a third)
    of the fragments; noise is white, brown or babble (other fragments of the batch).
    """
    batch, n = wav.shape
    dev = wav.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev)

    out = wav * torch.pow(10.0, (rand(batch, 1) * 2 - 1) * GAIN_DB / 20)
    # Reverberation: exponentially decaying noise as a room impulse response.
    rir_len = SAMPLE_RATE // 2
    rt60 = REVERB_RT60[0] + rand(batch, 1) * (REVERB_RT60[1] - REVERB_RT60[0])
    t = torch.arange(rir_len, device=dev) / SAMPLE_RATE
    rir = torch.randn(batch, rir_len, generator=generator, device=dev) * torch.exp(-6.9 * t / rt60)
    rir[:, 0] = rir.abs().amax(dim=1) * 2  # a direct path
    rir = rir / rir.norm(dim=1, keepdim=True)
    size = 1 << math.ceil(math.log2(n + rir_len))
    wet = torch.fft.irfft(torch.fft.rfft(out, size) * torch.fft.rfft(rir, size), size)[:, :n]
    wet = wet * (out.norm(dim=1, keepdim=True) / wet.norm(dim=1, keepdim=True).clamp_min(1e-8))
    out = torch.where(rand(batch, 1) < 1 / 3, wet, out)
    # Additive noise at a random SNR.
    white = torch.randn(batch, n, generator=generator, device=dev)
    brown = torch.cumsum(white, dim=1)
    brown = brown - F.avg_pool1d(brown[:, None], 401, 1, 200, count_include_pad=False)[:, 0]
    babble = out.roll(1, dims=0) + out.roll(2, dims=0) + out.roll(3, dims=0)
    kind = (rand(batch, 1) * 3).long()
    noise = torch.where(kind == 0, white, torch.where(kind == 1, brown, babble))
    snr = NOISE_SNR_DB[0] + rand(batch, 1) * (NOISE_SNR_DB[1] - NOISE_SNR_DB[0])
    p_sig = out.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-10)
    p_noise = noise.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-10)
    noise = noise * torch.sqrt(p_sig / (p_noise * torch.pow(10.0, snr / 10)))
    return torch.where(rand(batch, 1) < 0.5, out + noise, out)


SPEC_FREQ_MASK = 10  # widest masked band, in feature bins
SPEC_TIME_MASK = 20  # widest masked span, in frames
SPEC_MASKS = 2  # masks of each kind per fragment


def spec_augment(feats: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment-style masking of ``(B, F, T)`` features: 2 bands and 2 spans set to 0.

    Inputs with a single feature row (the raw waveform front-end) pass through unchanged.
    """
    batch, n_feat, n_time = feats.shape
    if n_feat == 1:
        return feats
    dev = feats.device
    keep = torch.ones_like(feats, dtype=torch.bool)
    for size, width, axis in ((n_feat, SPEC_FREQ_MASK, 1), (n_time, SPEC_TIME_MASK, 2)):
        pos = torch.arange(size, device=dev)
        for _ in range(SPEC_MASKS):
            w = (torch.rand(batch, 1, generator=generator, device=dev) * (width + 1)).long()
            start = (torch.rand(batch, 1, generator=generator, device=dev) * (size - w)).long()
            masked = (pos >= start) & (pos < start + w)  # (B, size)
            keep &= ~(masked[:, :, None] if axis == 1 else masked[:, None, :])
    return feats * keep


@dataclass(frozen=True)
class FragmentSet:
    """Fixed 3-s fragments for evaluation: waves (N, FRAGMENT_SAMPLES) and their labels."""

    waves: np.ndarray
    speakers: np.ndarray  # (N,) speaker id
    recordings: np.ndarray  # (N,) file path the fragment came from

    def __len__(self) -> int:
        return len(self.waves)


def fragment_set(
    bank: AudioBank, hop_seconds: float = 3.0, max_per_speaker: int = 0
) -> FragmentSet:
    """Cut every recording of the bank into fragments by ``audio.fragment``'s rule.

    ``max_per_speaker`` (0: no cap) keeps an evenly spread subset of a speaker's fragments so
    that speakers with hours of audio do not dominate.
    """
    waves, spk, rec = [], [], []
    for speaker, recs, names in zip(bank.speakers, bank.waves, bank.names, strict=True):
        frags, owners = [], []
        for wav, name in zip(recs, names, strict=True):
            try:
                f = fragment(wav, hop_seconds=hop_seconds, name=name)
            except AudioError:
                continue
            frags.append(f)
            owners += [name] * len(f)
        if not frags:
            continue
        allf = np.concatenate(frags)
        idx = np.arange(len(allf))
        if max_per_speaker and len(allf) > max_per_speaker:
            idx = np.linspace(0, len(allf) - 1, max_per_speaker).round().astype(int)
        waves.append(allf[idx])
        spk += [speaker] * len(idx)
        rec += [owners[i] for i in idx]
    if not waves:
        raise DataError("no evaluation fragments could be cut")
    return FragmentSet(np.concatenate(waves), np.asarray(spk), np.asarray(rec))
