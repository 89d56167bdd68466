"""speakerid: recognise people by their voice with a trained twin (siamese) encoder.

``from speakerid import SpeakerID`` is the Python API (``speakerid.api``); it is imported on
first use, so that ``import speakerid.errors`` and the CLI's ``--help`` stay light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["FileError", "Identification", "SpeakerID", "SpeakerIDError", "Verification"]


def __getattr__(name: str) -> Any:
    if name == "Verdict":  # the 0.1 name of Verification, kept for one release
        import warnings

        warnings.warn(
            "speakerid.Verdict is now speakerid.Verification", DeprecationWarning, stacklevel=2
        )
        name = "Verification"
    if name in __all__:
        from speakerid import api

        return getattr(api, name)
    raise AttributeError(f"module 'speakerid' has no attribute {name!r}")
