"""Every figure writes a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import embedding_corpus

from speakerid.lab.kway import CASE_STUDY_KWAY, kway_curve
from speakerid.lab.metrics import verification_trials
from speakerid.lab.plots import plot_det, plot_kway_curve, plot_training_curves, plot_tsne

# Slow integration tests: CI runs them (README, "Install, test, run").
pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- plots


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plots_write_png(tmp_path: Path) -> None:
    x, spk, rec = embedding_corpus(n_speakers=5, noise=0.2)
    curve = kway_curve(x, spk, rec, trials=100, rng=21)
    out = plot_kway_curve(
        {"twin": curve, "plain": {2: 0.9, 4: 0.7, 40: 0.3}},
        tmp_path / "kway.png",
        reference=CASE_STUDY_KWAY,
    )
    assert_png(out)

    scores, labels = verification_trials(x, spk, rec)
    assert_png(plot_det({"twin": (scores, labels)}, tmp_path / "det.png"))
    assert_png(plot_tsne(x, spk, tmp_path / "sub" / "tsne.png", max_speakers=3))

    history = [{"step": s, "loss": 1 / (s + 1)} for s in range(0, 100, 10)]
    history[4]["val_acc"] = 0.5
    history[9]["val_acc"] = 0.8
    assert_png(plot_training_curves(history, tmp_path / "train.png"))
