"""The app with every command registered: importing this imports the runtime's commands.

Each module registers its commands on ``common.app`` as it is imported; ``--help`` lists
them in the order of registration, so ``COMMAND_MODULES`` sets the order (import
statements would be sorted).
"""

from __future__ import annotations

from importlib import import_module

from speakerid.cli.common import app

COMMAND_MODULES = ("enroll", "recognise", "embed", "manage", "info", "lab")
for _module in COMMAND_MODULES:
    import_module(f"speakerid.cli.{_module}")

__all__ = ["COMMAND_MODULES", "app"]
