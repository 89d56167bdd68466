"""Data-parallel training: two CPU processes under torchrun (gloo) on synthetic speakers.

Exact equality with a one-process run is not the design: each rank draws its own half of
the global batch from its own seeded sampler (that is what makes ranks see different data),
so the batches, and with them the weights, differ from a one-process run's. What must hold:
both ranks finish, only rank 0 writes checkpoints, the ranks' weights stay identical (the
gradients were averaged), and training converges as a one-process run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speakerid.errors import DataError
from speakerid.lab import distributed
from tests.test_train import write_corpus

# Slow integration tests: CI runs them (README, "Install, test, run").
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_train's synthetic speakers: 8 voices, 2 recordings of 8 s each."""
    return write_corpus(tmp_path_factory.mktemp("voices"))


# torchrun runs this script in each rank: it records which rank writes which file, then
# runs the ordinary `speakerid train` command line.
WORKER = """
import os, sys
from pathlib import Path
import speakerid.lab.train as train
log = Path(sys.argv.pop(1)) / f"writes.{os.environ['RANK']}"
def logged(fn):
    def wrapper(*args, **kwargs):
        target = next(a for a in args if isinstance(a, Path))
        with open(log, "a") as fh:
            fh.write(target.name + "\\n")
        return fn(*args, **kwargs)
    return wrapper
train.save_encoder = logged(train.save_encoder)
train._save_resume = logged(train._save_resume)
from speakerid.cli import main
sys.argv[0] = "speakerid"
main()
"""


def test_two_gloo_processes_train_one_model(corpus: Path, tmp_path: Path) -> None:
    """Measured here: 40 s under a load average of about 11 on the shared 2-core CPU."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    args = [
        *("train", str(corpus), "--out", str(out), "--objective", "aam"),
        *("--frontend", "fbank", "--arch", "ecapa_lite", "--channels", "32"),
        *("--embedding-dim", "32", "--steps", "40", "--batch-size", "16"),
        *("--test-speakers", "4", "--val-every", "20", "--val-ways", "4"),
        *("--val-trials", "200", "--no-augment", "--device", "cpu", "--distributed", "--json"),
    ]
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
        *("--nproc_per_node", "2", str(worker), str(logs), *args),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]

    summary = json.loads(run.stdout)  # rank 0 alone prints
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["history"]["acc4"] >= 0.6  # chance 0.25
    records = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in records] == [20, 40]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert json.loads((out / "summary.json").read_text()) == summary
    # rank 0 wrote every checkpoint, rank 1 none
    written = (logs / "writes.0").read_text().split()
    assert written.count("last.pt") == 2 and "best.safetensors" in written
    assert not (logs / "writes.1").exists()


def test_one_process_is_rank_zero_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = distributed.setup("cpu")
    assert ranks == distributed.Ranks() and ranks.main and not ranks.distributed
    assert distributed.rank_seed(7, ranks) == 7  # one process samples as before
    assert distributed.share(64, ranks) == 64
    two = distributed.Ranks(rank=1, world=2)
    assert distributed.rank_seed(7, two) != 7 and distributed.share(64, two) == 32
    with pytest.raises(DataError, match="multiple of the process count"):
        distributed.share(63, two)


def test_incomplete_torchrun_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(DataError, match="torchrun"):
        distributed.setup("cpu")


def test_distributed_flag_outside_torchrun_says_how(
    cli,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    r = cli("train", corpus, "--out", tmp_path / "x", "--distributed", model=False)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "torchrun --standalone --nproc_per_node N" in r.stderr
    assert not (tmp_path / "x").exists()
