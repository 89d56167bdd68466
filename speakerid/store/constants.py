"""What names a store and a speaker (stdlib only), so that the CLI's help texts read them
without importing numpy or SQLite's wrapper (``--help`` stays instant)."""

from __future__ import annotations

STORE_ENV = "SPEAKERID_STORE"  # environment variable naming the store file
STORE_FILENAME = "store.sqlite"  # inside the platform's user data directory
NAME_MAX_CHARS = 64  # a speaker name's length limit

__all__ = ["NAME_MAX_CHARS", "STORE_ENV", "STORE_FILENAME"]
