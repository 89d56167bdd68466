"""The decision's defaults, in a module of their own (stdlib only), so that the CLI's help
texts can name them without importing numpy (``--help`` stays instant)."""

from __future__ import annotations

DEFAULT_FAR = 0.01  # the operating point of every default decision: 1 false accept in 100
DEFAULT_THRESHOLD = 0.5  # cosine; used only when the model carries no calibrated threshold
GIVEN = "given"  # ``thresholds.resolve_threshold``'s source for a threshold the caller passed

__all__ = ["DEFAULT_FAR", "DEFAULT_THRESHOLD", "GIVEN"]
