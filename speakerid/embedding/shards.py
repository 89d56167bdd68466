"""The shard rule: slice I of N of a sorted list, the only coordination between processes.

A large archive is embedded by N independent processes, each taking one deterministic
slice (``--shard I/N``) of the sorted file list (``embed``) or speaker list (``enroll-dir``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from speakerid.errors import SpeakerIDError

_SHARD = re.compile(r"(\d+)/(\d+)")

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` of ``count`` (0-based): every ``count``-th item of the sorted list."""

    index: int = 0
    count: int = 1

    def take(self, items: Sequence[T], key: Callable[[T], str] = str) -> list[T]:
        """This shard's items: sorted by ``key``, then every ``count``-th from ``index``.

        Round-robin over the sorted list keeps shards within one item of each other in size
        and the same for every process that is given the same list.
        """
        return sorted(items, key=key)[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard:
    """``"I/N"`` with ``0 <= I < N`` -> ``Shard``; None -> the whole list."""
    if text is None:
        return Shard()
    match = _SHARD.fullmatch(text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise SpeakerIDError(
            f"--shard {text!r}: give I/N with 0 <= I < N, e.g. 0/4 ... 3/4 for four processes"
        )
    return Shard(int(match[1]), int(match[2]))
