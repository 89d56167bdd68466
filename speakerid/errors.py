"""The one error family of the core. Only the CLI (``speakerid.cli``) turns these into messages
and exit codes."""

from __future__ import annotations


class SpeakerIDError(Exception):
    """Base class: every failure the user can cause or fix. The message is one line."""


class AudioError(SpeakerIDError):
    """A file that cannot be read as audio, or audio with no usable speech."""


class CheckpointError(SpeakerIDError):
    """A model file that is missing, damaged, tampered with or of the wrong kind."""


class StoreError(SpeakerIDError):
    """A damaged, foreign or incompatible enrollment store."""


class UnknownSpeakerError(SpeakerIDError):
    """A speaker name that is not enrolled."""


class InvalidNameError(SpeakerIDError):
    """A speaker name that breaks the naming rules."""


class DataError(SpeakerIDError):
    """A training or evaluation corpus that cannot be used as asked."""


class EnrollmentQualityError(SpeakerIDError):
    """A recording that ``enroll --strict`` refuses: too little speech, or another voice."""


class MissingExtraError(SpeakerIDError):
    """A command that needs a package this install lacks (torch comes with ``[train]``)."""


# speakerid is not on PyPI, so a hint names the packages, and the extra for a checkout.
TRAIN_EXTRA = "pip install torch torchaudio (in a speakerid checkout: pip install -e '.[train]')"
PLOT_EXTRA = "pip install matplotlib scipy (in a speakerid checkout: pip install -e '.[plot]')"


def require(module: str, what: str, extra: str) -> None:
    """Raise ``MissingExtraError`` when ``module`` is not installed, naming the extra that
    brings it. ``find_spec`` looks it up without importing it, so the check costs nothing."""
    from importlib.util import find_spec

    try:
        found = find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-imported module
        found = False
    if not found:
        raise MissingExtraError(f"{what} needs {module}, which this install lacks: {extra}")


def require_torch(what: str) -> None:
    """``require`` torch, which comes with ``[train]``."""
    require("torch", what, TRAIN_EXTRA)
