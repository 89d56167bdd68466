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


TRAIN_EXTRA = "pip install 'speakerid[train]'"  # torch, torchaudio, librosa, scikit-learn


def require_torch(what: str) -> None:
    """Raise ``MissingExtraError`` when torch is not installed, naming the extra that has it.

    ``find_spec`` looks torch up without importing it, so the check costs nothing.
    """
    from importlib.util import find_spec

    try:
        found = find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-imported module
        found = False
    if not found:
        raise MissingExtraError(f"{what} needs torch, which this install lacks: {TRAIN_EXTRA}")
