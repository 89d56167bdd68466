"""The ``speakerid`` command line: parse options, call one core function, render the result.

No logic lives here. ``common`` holds the app, the shared options and the one error handler;
each other module registers a few commands of one job on the app when imported, in the
order ``--help`` lists them. The runtime's modules import nothing heavy at import time; the
lab's commands (``lab``) import training and evaluation only when they run.

Exit status (like grep): 0 success / accepted, 1 rejected (``verify``), 2 error.
"""

from __future__ import annotations

import os
from importlib import import_module

# numpy's OpenBLAS starts a thread per core when numpy is imported (a cold command: 30 ms
# of CPU on this 2-core box, docs/benchmarks.md); the CLI's matrix products are small. Set
# before the commands import numpy; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from speakerid.cli.common import app

# Each module registers its commands on ``app`` as it is imported; --help lists them in the
# order of registration, so this tuple sets the order (an import statement would be sorted).
COMMAND_MODULES = ("enroll", "recognise", "embed", "manage", "info", "lab")
for _module in COMMAND_MODULES:
    import_module(f"{__name__}.{_module}")


def main() -> None:
    """Entry point of the ``speakerid`` console script."""
    app()


__all__ = ["COMMAND_MODULES", "app", "main"]
