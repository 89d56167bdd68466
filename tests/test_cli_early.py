"""The CLI's early start: which command lines load a model before the CLI is imported."""

from __future__ import annotations

from typing import Any

import pytest

from speakerid.cli import early
from speakerid.embedding.constants import PRECISION_ENV


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["verify", "alice", "clip.wav"], {}),
        (["identify", "a.wav", "--model", "best"], {"model": "best"}),
        (
            ["enroll", "bob", "a.wav", "-m", "fast", "--precision", "int8"],
            {"model": "fast", "precision": "int8"},
        ),
        (
            ["embed", "a.wav", "--model=ecapa", "--backend=torch"],
            {"model": "ecapa", "backend": "torch"},
        ),
        (["enroll-dir", "folder", "-mbest"], {"model": "best"}),
        (["verify", "alice", "--", "--model"], {}),  # after --, a file named --model
        (["verify", "alice", "clip.wav", "--model"], {"model": ""}),  # Typer will refuse it
    ],
)
def test_the_model_options_of_an_embedding_command(
    argv: list[str], expected: dict[str, str]
) -> None:
    assert early.chosen(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["list"],
        ["--help"],
        ["models"],
        ["train", "data"],
        ["verify", "--help"],
        ["info", "-m", "best"],
    ],
)
def test_other_command_lines_start_nothing(argv: list[str]) -> None:
    assert early.chosen(argv) is None


def test_start_asks_the_pipeline_for_what_the_command_will_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import speakerid.embedding.pipeline as pipeline

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(pipeline, "open_soon", lambda *args: calls.append(args))
    monkeypatch.setenv(PRECISION_ENV, "int8")
    early.start(["verify", "alice", "clip.wav", "-m", "best"])
    early.start(["verify", "alice", "clip.wav", "--precision", "fp32"])
    early.start(["list"])
    assert calls == [("best", None, "int8"), (None, None, "fp32")]


def test_the_pipeline_starts_each_shipped_graph_a_model_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import speakerid.embedding.backends.onnx as onnx_backend
    from speakerid.embedding.pipeline import open_soon
    from speakerid.encoders.registry import FUSIONS

    started: list[tuple[str, str]] = []
    monkeypatch.setattr(
        onnx_backend, "_open_session_soon", lambda path, sha: started.append((path.name, sha))
    )
    open_soon("best", None, "auto")
    members = [onnx_backend.SHIPPED[name].graphs[0] for name in FUSIONS["best"].members]
    assert started == [(g.filename, g.sha256) for g in members]
    started.clear()
    open_soon("accurate", "torch", "auto")  # the torch backend: nothing to start
    open_soon("accurate", "nonsense", "auto")  # refused later, in the foreground
    open_soon("accurate", None, "bf16")  # a precision the graphs lack: refused later
    open_soon("/some/checkpoint.safetensors", None, "auto")  # not shipped: opened as usual
    assert started == []
    open_soon(None, None, "int8")
    assert started == [
        (g.filename, g.sha256) for g in [onnx_backend.SHIPPED["accurate"].graph("int8")]
    ]
