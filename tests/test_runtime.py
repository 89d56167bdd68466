"""The runtime's weight: which commands import torch, run in fresh processes as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchaudio", "sklearn", "matplotlib")
REPO = Path(__file__).resolve().parent.parent

# Slow integration tests: CI runs them (README, "Install, test, run").
pytestmark = pytest.mark.slow

# Runs the CLI, then reports which heavy modules the command imported and its exit status.
PROBE = """
import json, sys
from speakerid.cli import app
try:
    app(sys.argv[1:], prog_name="speakerid")
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write("\\nPROBE " + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
""".format(heavy=(*HEAVY, "onnxruntime"))


# Prepended to PROBE: an install without the lab's packages, as ``pip install speakerid``
# leaves it. Importing one of them fails as a missing package does.
WITHOUT_TRAIN = """
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {heavy!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
""".format(heavy=(*HEAVY, "librosa"))


def run_cli(
    *args: str | Path, env: dict[str, str], stdin: bytes | None = None, torch: bool = True
) -> dict:
    """Run ``speakerid ARGS`` in a new interpreter; returns code, heavy modules, stdout, stderr."""
    probe = PROBE if torch else WITHOUT_TRAIN + PROBE
    proc = subprocess.run(
        [sys.executable, "-c", probe, *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    stderr = proc.stderr.decode()
    probe = json.loads(stderr.rsplit("PROBE ", 1)[1])
    return {**probe, "stdout": proc.stdout.decode(), "stderr": stderr.rsplit("\nPROBE ", 1)[0]}


@pytest.fixture
def env(tmp_path: Path, onnx_cache: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("SPEAKERID_")}
    return {
        **keep,
        "PYTHONPATH": str(REPO),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "SPEAKERID_CACHE": str(onnx_cache),
        "SPEAKERID_STORE": str(tmp_path / "store.sqlite"),
        "SPEAKERID_VAD": "energy",  # the synthetic voices are not speech to Silero VAD
    }


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--help",), 0),
        (("list",), 0),
        (("list", "--json"), 0),
        (("info",), 0),
        (("info", "--json"), 0),
        (("remove", "nobody"), 2),
        (("verify",), 2),  # argument errors
        (("identify", "x.wav", "--top", "0"), 2),
        (("enroll", "alice", "x.wav", "--backend", "tensorflow"), 2),
        (("nonsense",), 2),
        (("verify", "--help"), 0),
        (("models",), 0),
    ],
)
def test_commands_without_a_model_never_import_torch(args, code, env) -> None:
    result = run_cli(*args, env=env)
    assert result["code"] == code, result
    assert result["heavy"] == [], result
    assert "Traceback" not in result["stderr"]


def test_info_describes_the_model_without_torch(env, model_path: Path) -> None:
    result = run_cli("info", "--json", "--model", model_path, env=env)
    info = json.loads(result["stdout"])
    assert info["model"]["embedding_dim"] == 16 and info["model"]["threshold"] == 0.5
    assert result["heavy"] == []


def test_onnx_backend_runs_every_embedding_command_without_torch(
    env, model_path: Path, voices_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from speakerid.embedding.backends.onnx import export_onnx

    graph = export_onnx(model_path, tmp_path / "m.onnx")
    alice = [voices_dir / f"alice_{k}.wav" for k in (1, 2)]
    common = ("--backend", "onnx", "--model", graph)
    steps = [
        (("enroll", "alice", *alice, *common), 0),
        (("verify", "alice", voices_dir / "alice_3.wav", *common), None),
        (("identify", voices_dir / "alice_3.wav", voices_dir / "bob_1.wav", *common), 0),
        (("embed", voices_dir / "bob_1.wav", "--out", tmp_path / "e.npz", *common), 0),
        (("identify", voices_dir / "alice_3.wav", "--segments", "--json", *common), 0),
    ]
    for args, code in steps:
        result = run_cli(*args, env=env)
        assert code is None or result["code"] == code, result
        assert result["code"] in (0, 1), result
        assert [m for m in result["heavy"] if m != "onnxruntime"] == [], (args, result)
    # SPEAKERID_BACKEND chooses it too; a checkpoint's graph comes from the cache once built
    run_cli(
        "embed",
        voices_dir / "bob_1.wav",
        "--out",
        tmp_path / "f.npz",
        "--backend",
        "onnx",
        "--model",
        model_path,
        env=env,
    )  # builds the cache (imports torch)
    result = run_cli(
        "verify",
        "alice",
        voices_dir / "alice_3.wav",
        "--model",
        model_path,
        env={**env, "SPEAKERID_BACKEND": "onnx"},
    )
    assert result["code"] in (0, 1) and "torch" not in result["heavy"], result
    # the same store serves both backends: the fingerprint is the checkpoint's
    result = run_cli(
        "verify",
        "alice",
        voices_dir / "alice_3.wav",
        "--model",
        model_path,
        "--backend",
        "torch",
        "--json",
        env=env,
    )
    assert result["code"] in (0, 1) and "torch" in result["heavy"], result


@pytest.mark.parametrize(
    "module",
    [
        "speakerid.store.speakers",
        "speakerid.store.db",
        "speakerid.store.search",
        "speakerid.decision.thresholds",
    ],
)
def test_the_store_side_imports_neither_torch_nor_the_encoder(module: str) -> None:
    """Storage, search and the threshold rules are numpy only: ``list`` needs no torch."""
    probe = (
        f"import json, sys, {module}; "
        f"print(json.dumps([m for m in {(*HEAVY, 'speakerid.embedding.pipeline')!r} "
        "if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == []


def test_the_default_model_enrolls_and_verifies_without_torch_installed(
    env, voices_dir: Path, onnx_cache: Path
) -> None:
    """The runtime install: the shipped graph runs as it is, nothing is exported."""
    pytest.importorskip("onnxruntime")
    before = sorted(onnx_cache.rglob("*"))
    alice = [voices_dir / f"alice_{k}.wav" for k in (1, 2)]
    result = run_cli("enroll", "alice", *alice, env=env, torch=False)
    assert result["code"] == 0 and result["heavy"] == ["onnxruntime"], result
    result = run_cli("verify", "alice", voices_dir / "alice_3.wav", "--json", env=env, torch=False)
    assert result["code"] in (0, 1) and result["heavy"] == ["onnxruntime"], result
    assert json.loads(result["stdout"])["speaker"] == "alice"
    assert sorted(onnx_cache.rglob("*")) == before  # no graph exported at first use


@pytest.mark.parametrize(
    "args",
    [
        ("embed", "VOICE", "--out", "e.npz", "--backend", "torch"),
        ("evaluate", "x"),
        ("export", "fast", "--onnx", "out.onnx"),
        ("calibrate", "data", "--plot", "p.png"),
        ("identify", "x.wav", "--segments", "--plot", "p.png"),
    ],
)
def test_commands_that_need_torch_name_the_extra(
    args, env, tmp_path: Path, voices_dir: Path
) -> None:
    voice = str(voices_dir / "alice_1.wav")
    result = run_cli(*(voice if a == "VOICE" else a for a in args), env=env, torch=False)
    assert result["code"] == 2, result
    extra = ".[plot]" if "--plot" in args else ".[train]"
    assert extra in result["stderr"] and "Traceback" not in result["stderr"]
    assert len(result["stderr"].strip().splitlines()) == 1, result
