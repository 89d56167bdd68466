"""Every command's --help as a user reads it, at 80 and 120 columns: conventional usage lines,
no type noise, lines that fit, every option listed, and the promises the text makes kept."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
from typer.main import get_command

from speakerid.cli import app

COMMANDS = sorted(get_command(app).commands)
WIDTHS = (80, 120)

# ``speakerid verify [OPTIONS] NAME FILE``: names in capitals, optional ones bracketed once.
_USAGE_PIECE = r"(\[?[A-Z][A-Z0-9_./|-]*(\.\.\.)?\]?)"
_TYPE_NOISE = re.compile(r"<(bool|str|int|float|path|list)[^>]*>|\{[A-Z]+\}|\[\[")


def help_text(runner, *args: str, width: int = 80) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", COMMANDS)
def test_help_reads_like_a_conventional_cli(runner, name: str, width: int) -> None:
    text = help_text(runner, name, width=width)
    usage = text.splitlines()[0]
    assert re.fullmatch(rf"Usage: speakerid {name} \[OPTIONS\]( {_USAGE_PIECE})*", usage), usage
    assert not _TYPE_NOISE.search(text), _TYPE_NOISE.search(text)
    assert max(len(line) for line in text.splitlines()) <= width
    command = get_command(app).commands[name]
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("-"):
                assert re.search(rf"(^|[ ,]){re.escape(opt)}\b", text, re.M), (name, opt)


def test_flags_show_no_value_and_options_show_theirs(runner) -> None:
    text = help_text(runner, "verify")
    assert re.search(r"^  --json +Print", text, re.M)  # a flag: nothing after its name
    assert "--far RATE" in text and "-t, --threshold SCORE" in text
    assert "--min-speech SECONDS" in text and "-s, --store PATH" in text


def test_descriptions_are_rewrapped_not_ragged(runner) -> None:
    # The docstrings break lines at 92 columns; at 80 no paragraph line may end short of the
    # margin unless the next line starts a new paragraph (Rich's mode kept the breaks).
    for name in ("identify", "enroll-dir", "export", "calibrate"):
        text = help_text(runner, name, width=80)
        description = re.split(r"\n(Arguments|Options):", text)[0]
        for paragraph in description.split("\n\n")[1:]:
            for line, after in itertools.pairwise(paragraph.splitlines()):
                assert len(line) + 1 + len(after.split()[0]) > 78, (name, line)


def test_command_list_is_not_cut(runner) -> None:
    text = help_text(runner, width=80)
    commands = text.split("Commands:", 1)[1].splitlines()
    assert len([c for c in commands if c.strip()]) == len(COMMANDS)
    assert not [c for c in commands if c.endswith("...")], commands


def test_install_hints_survive_the_renderer(runner) -> None:
    # Rich's markup mode printed ``pip install 'speakerid'``: it read ``[train]`` as a tag.
    text = " ".join(help_text(runner, "verify", width=120).split())
    assert "pip install -e '.[train]'" in text


def test_models_help_promises_what_models_prints(runner) -> None:
    promised = " ".join(help_text(runner, "models", width=120).split())
    printed = runner.invoke(app, ["models"]).stdout
    # it once promised a speed it did not print; measured.json now holds speeds
    promises = (("size", " MB"), ("threshold", "threshold "), ("EER", "EER "), ("speed", "speed "))
    for word, shown in promises:
        assert word in promised and shown in printed, (word, printed)


def test_segment_defaults_in_help_are_the_code_defaults(runner) -> None:
    from speakerid.decision.timeline import SegmentConfig

    text = " ".join(help_text(runner, "identify", width=120).split())
    for field in dataclasses.fields(SegmentConfig):
        flag = "--" + field.name.replace("_", "-")
        stated = re.search(rf"{flag} \S+ [^[]*?default (\S+?)[ ;(]", text)
        assert stated, flag
        assert stated.group(1) == str(field.default), (flag, stated.group(1), field.default)
