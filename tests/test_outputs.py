"""outputs: every written file goes through links, refuses what is not a file, is atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from speakerid.errors import SpeakerIDError
from speakerid.outputs import output_target, replacing


def test_a_link_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    target = tmp_path / "real.npz"
    target.write_text("old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with replacing(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]


def test_a_dangling_link_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "made.png")
    assert output_target(link) == tmp_path / "made.png"


@pytest.mark.parametrize("kind", ["directory", "FIFO", "device"])
def test_what_is_not_a_file_is_refused_and_kept(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "out.npz"
    if kind == "directory":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)
    else:
        path = Path("/dev/null")
    before = os.lstat(path).st_mode
    with pytest.raises(SpeakerIDError, match=f"^{path}: is a {kind}"), replacing(path):
        pytest.fail("the body must not run")
    assert os.lstat(path).st_mode == before


def test_a_link_to_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "out.npz").symlink_to(tmp_path / "pipe")
    with pytest.raises(SpeakerIDError, match=r"out\.npz: is a FIFO"):
        output_target(tmp_path / "out.npz")


def test_a_link_loop_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(SpeakerIDError, match="cannot be written"):
        output_target(tmp_path / "a")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.npz"
    path.write_text("old")
    message = r"out\.npz: cannot write \(No space"
    with pytest.raises(SpeakerIDError, match=message), replacing(path) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]
