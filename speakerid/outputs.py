"""Files the commands write (``--out``, ``export --onnx``, ``--plot``): one rule for all.

A write goes *through* symbolic links: the link stays and the file it names is replaced, as
a shell's ``>`` would do. What the path finally names must be a regular file or nothing
yet: a directory, FIFO, device node or socket is refused, because replacing it destroys it
(a zip file where ``/dev/null`` was) and writing into it hangs or loses the output (a FIFO,
``/dev/full``). A regular file is replaced atomically: the new content is written to a
temporary file beside it and renamed over it, so a failed write leaves the old file whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from speakerid.errors import SpeakerIDError

_KINDS = (  # what an output path must not be, as the error names it
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def output_target(path: str | Path) -> Path:
    """The file a write to ``path`` replaces: ``path``, or the file its links lead to.

    Raises ``SpeakerIDError`` (naming ``path`` as given) when that is not a regular file or
    a new name, or when the links cannot be followed (a loop).
    """
    target = Path(os.path.realpath(path))  # every link followed; a dangling one: its target
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target  # a new file (a missing folder is the writer's error, with its reason)
    except OSError as exc:
        raise SpeakerIDError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    if stat.S_ISREG(mode):
        return target
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise SpeakerIDError(f"{path}: is {kind}, not a regular file; give a file to write")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary path beside the target to write.

    On leaving without error the temporary file replaces the target (see
    ``output_target``); on any error it is removed and the target is left as it was. An
    ``OSError`` (a full disk, no permission, a missing folder) becomes one
    ``SpeakerIDError`` line naming ``path``.
    """
    target = output_target(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        raise SpeakerIDError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(figure: Any, path: str | Path, **options: Any) -> Path:
    """Write a matplotlib ``figure`` to ``path`` by ``replacing``, in the format its
    extension names (PNG without one); ``options`` go to ``savefig``."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        with replacing(path) as tmp:
            figure.savefig(tmp, format=fmt, **options)
    except ValueError as exc:  # matplotlib's word for an unknown format
        raise SpeakerIDError(f"{path}: cannot write the plot ({exc})") from None
    return Path(path)
