"""README against the code: every number in it that restates a constant, a default, a pin, a
shipped model's settings or a measured result recorded in models/ is the code's.

Each fact is found in README by the words around it (so rewording the sentence means
updating its pattern here) and compared with the value the code holds, to the digits README
prints. The Python example is run by tests/test_api.py; help texts by tests/test_help.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def same_as_printed(text: str, value: float) -> bool:
    """``text`` (``"0.5"``, ``"14"``, ``"50,000"``) is ``value`` to the digits it shows."""
    text = text.replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return text == f"{value:.{decimals}f}"


def pyproject(pattern: str) -> str:
    found = re.search(pattern, PYPROJECT, re.M)
    assert found, f"pyproject.toml has no {pattern!r}"
    return found.group(1)


# (README pattern with one group, the code's value): every restated constant and default.
# ``c`` holds the modules, imported when the test runs (not at collection).
Fact = tuple[str, Callable[[Any], float | str]]
FACTS: list[Fact] = [
    (r"cut into\s+(\S+)-second fragments", lambda c: c.audio.FRAGMENT_SECONDS),
    (r"downloads torch (\S+) and\s+torchaudio", lambda c: pyproject(r'"torch==(\S+)"')),
    (r"torchaudio (\d[\d.]*\d) from PyPI", lambda c: pyproject(r'"torchaudio==(\S+)"')),
    (r"Python (\S+)\+", lambda c: pyproject(r'^requires-python = ">=(\S+)"')),
    (r"exits like grep: (\d) accepted", lambda c: c.common.EXIT_OK),
    (r"exits like grep: \d accepted, (\d) rejected", lambda c: c.common.EXIT_REJECTED),
    (r"1 rejected, (\d) error", lambda c: c.common.EXIT_ERROR),
    (r"`--far`\s+outside \(0, (\S+)\]", lambda c: c.decision.FAR_RANGE[1]),
    (r"\(`--far (\S+)`\)", lambda c: c.decision.DEFAULT_FAR),
    (r"needs at least (\S+) s\s+of speech", lambda c: c.audio.MIN_SPEECH_SECONDS),
    (r"at most (\d+) GiB\s+\(`audio.STDIN_MAX_BYTES`", lambda c: c.audio.STDIN_MAX_BYTES / 2**30),
    (r"STDIN_MAX_BYTES`, (\S+) h of 16 kHz 16-bit PCM", lambda c: c.stdin_hours),
    (r"from (\d+) Hz to \d+ kHz is resampled", lambda c: c.audio.MIN_SAMPLE_RATE),
    (r"from \d+ Hz to (\d+) kHz is resampled", lambda c: c.audio.MAX_SAMPLE_RATE / 1000),
    (r"slides a\s+(\S+)-s window", lambda c: c.segment_config.window),
    (r"-s window every (\S+) s over", lambda c: c.segment_config.hop),
    (r"lowered by (\S+) \(`--threshold-offset`\)", lambda c: -c.segment_config.threshold_offset),
    (r"stream through in (\d+)-s chunks", lambda c: c.audio.STREAM_CHUNK_SECONDS),
    (r"\(`DIR/<speaker>/\*.wav`, (\d+)\+ speakers", lambda c: c.calibration.MIN_SPEAKERS),
    (r"against 1 and (\d+) others pooled", lambda c: c.calibration.ENROLL_SIZE),
    (r"at (\S+) times the calibrated size", lambda c: c.calibration.REGROW_RATIO),
    (r"holds under (\S+) s of speech", lambda c: c.service.GOOD_SPEECH_SECONDS),
    (r"below (\S+) speakers an exact scan", lambda c: c.search.ANN_MIN_SPEAKERS),
    (r"whose best (\d+) candidates are re-scored", lambda c: c.search.RERANK),
    (r"past (\d+)% of\s+the index", lambda c: 100 * c.search.fold_threshold(10**6) / 10**6),
]


@pytest.fixture(scope="module")
def code() -> SimpleNamespace:
    from speakerid import audio
    from speakerid import recognition as service
    from speakerid.cli import common
    from speakerid.decision import calibration
    from speakerid.decision import model as decision
    from speakerid.decision import timeline as segments
    from speakerid.store import search

    hours = audio.STDIN_MAX_BYTES / audio.RAW_SAMPLE_WIDTH / audio.SAMPLE_RATE / 3600
    return SimpleNamespace(
        audio=audio,
        calibration=calibration,
        decision=decision,
        search=search,
        service=service,
        common=common,
        segment_config=segments.SegmentConfig(),
        stdin_hours=hours,
    )


@pytest.mark.parametrize(("pattern", "value"), FACTS, ids=[p for p, _ in FACTS])
def test_readme_restates_the_code(code: SimpleNamespace, pattern: str, value: Callable) -> None:
    found = re.search(pattern, README)
    assert found, f"README no longer says {pattern!r}: update it here"
    expected = value(code)
    if isinstance(expected, str):
        assert found.group(1) == expected, (pattern, found.group(1), expected)
    else:
        assert same_as_printed(found.group(1), expected), (pattern, found.group(1), expected)


# README's "How good is it" rows and the measured.json keys they restate.
EER_ROWS = {
    "LibriSpeech, 40 held-out speakers, 3-s fragments": "libri_fragments",
    "LibriSpeech, half-recordings": "libri_halves",
    "RAVDESS (acted emotions, unseen corpus)": "ravdess",
    "AMI (far-field meetings)": "ami",
    "VCTK + ARCTIC": "vctk_arctic",
}
MODEL_COLUMNS = ("accurate", "fast", "ecapa", "best")  # the table's first four columns


def _row(label: str) -> list[str]:
    line = next(ln for ln in README.splitlines() if ln.startswith(f"| {label} |"))
    return [cell.strip().strip("*†§").strip("*") for cell in line.split("|")[2:-1]]


def test_readme_eers_are_the_measured_ones() -> None:
    from speakerid.encoders.registry import measured

    numbers = measured()
    for label, key in EER_ROWS.items():
        cells = _row(label)
        for model, cell in zip(MODEL_COLUMNS, cells[:4], strict=True):
            value = 100 * numbers[model]["eer"][key]
            assert same_as_printed(cell.rstrip("*%"), value), (label, model, cell, value)


def test_readme_sizes_and_thresholds_are_the_shipped_models() -> None:
    from speakerid.encoders.registry import list_models

    listed = {m.name: m for m in list_models()}
    for model, cell in zip(MODEL_COLUMNS, _row("size")[:4], strict=True):
        megabytes, millions = re.fullmatch(r"(\S+) MB, (\S+) M( params)?", cell).group(1, 2)
        assert same_as_printed(megabytes, listed[model].megabytes), (model, cell)
        assert same_as_printed(millions, listed[model].parameters / 1e6), (model, cell)
    accurate = listed["accurate"].threshold
    stated = re.findall(r"accurate model's threshold (\d\.\d+)", README)
    assert stated and all(same_as_printed(s, accurate) for s in stated), (stated, accurate)


def _cli() -> Any:
    from typer.main import get_command

    from speakerid.cli import app

    return get_command(app)


def test_readme_command_table_is_the_cli() -> None:
    section = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    first_cells = [ln.split("|")[1] for ln in section.splitlines() if ln.startswith("| `")]
    listed = {n for cell in first_cells for n in re.findall(r"`(?:speakerid )?([a-z-]+)", cell)}
    assert listed == set(_cli().commands)


# Flags README gives to other programs: torchrun's and the benchmarks'.
OTHER_PROGRAMS = {
    "--nnodes",
    "--nproc",
    "--rdzv",
    "--standalone",
    "--readings",
    "--threads",
    "--memory",
}


def test_every_flag_in_readme_exists() -> None:
    options = {"--help"}
    for command in _cli().commands.values():
        for param in command.params:
            options.update(param.opts, param.secondary_opts)
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README)) - OTHER_PROGRAMS
    assert named <= options, sorted(named - options)


def test_every_file_readme_names_exists() -> None:
    path = r"(?<![\w/.])((?:speakerid|bench|docs|models|tests)/[\w./-]*\w)"
    named = set(re.findall(path, README))
    missing = sorted(p for p in named if not (ROOT / p.split("#")[0]).exists())
    assert not missing, missing


def test_readme_gives_the_test_command_ci_runs() -> None:
    block = README.split("## Install, test, run", 1)[1].split("```", 2)[1]
    given = [ln.split("#")[0].strip() for ln in block.splitlines() if "pytest" in ln]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    runs = [ln.split("#")[0].strip() for ln in ci if ln.startswith("python -m pytest")]
    assert runs and runs[0] in given, (runs, given)  # CI: every test
    assert "python -m pytest" in given  # the quick default run
    assert "-m 'not slow'" in PYPROJECT  # what the quick run leaves out


def test_install_hints_name_what_installs() -> None:
    # speakerid is not on PyPI: `pip install 'speakerid[onnx]'` finds nothing (or another
    # project). Messages and docs name the package, or the extra from a checkout.
    texts = [*(ROOT / "speakerid").rglob("*.py"), *(ROOT / "docs").glob("*.md")]
    texts += [ROOT / "models" / "README.md"]
    wrong = [str(p) for p in texts if "install 'speakerid[" in p.read_text()]
    assert not wrong, wrong
    said = re.findall(r"[^.]*pip install 'speakerid\[[^.]*", README)
    assert all("finds nothing" in s for s in said), said
