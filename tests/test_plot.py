"""The ``calibrate --plot`` figure (speakerid.decision.plot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speakerid.decision.calibration import Trials
from speakerid.decision.model import QualityTrials
from speakerid.decision.plot import plot_calibration

PNG = b"\x89PNG\r\n\x1a\n"


def _trials(n: int = 400, seed: int = 0) -> Trials:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = np.where(labels, rng.normal(0.7, 0.1, n), rng.normal(0.1, 0.15, n))
    empty = np.zeros((0, 4), np.float32)
    return Trials(scores, labels, empty, np.zeros(0), np.zeros(0, int))


def _decided(trials: Trials, seed: int = 1) -> tuple[QualityTrials, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(trials.scores)
    quality = QualityTrials(
        trials.scores,
        trials.labels,
        rng.choice([1.0, 3.0, 10.0], n),
        np.full(n, 20.0),
        np.ones(n),
        np.ones(n),
    )
    return quality, trials.scores > 0.45


@pytest.mark.parametrize("with_decisions", [False, True])
def test_the_figure_is_a_png_with_two_or_three_panels(tmp_path: Path, with_decisions: bool):
    trials = _trials()
    decided = _decided(trials) if with_decisions else None
    out = plot_calibration(
        trials, {"model": 0.5, "calibrated": 0.42}, tmp_path / "c.png", decisions=decided
    )
    assert out == tmp_path / "c.png" and out.read_bytes()[:8] == PNG
    width = int.from_bytes(out.read_bytes()[16:20], "big")  # the PNG's IHDR width
    narrow = plot_calibration(trials, {"calibrated": 0.42}, tmp_path / "n.png")
    assert width >= int.from_bytes(narrow.read_bytes()[16:20], "big")
    if with_decisions:  # the third panel makes the figure wider
        assert width > int.from_bytes(narrow.read_bytes()[16:20], "big")
