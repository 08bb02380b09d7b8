"""Exceptions of ipguard_tf. Every error a user can cause is an :class:`IPGuardError` with a one-line message;
the CLI prints that line and exits non-zero instead of showing a traceback."""


class IPGuardError(Exception):
    """Base class: a user-facing error whose ``str`` is a complete one-line explanation."""


class DataError(IPGuardError):
    """A dataset is missing, malformed or outside the expected domain."""


class ModelError(IPGuardError):
    """A model cannot be loaded or does not match the expected input/output."""


class FingerprintFileError(IPGuardError):
    """A fingerprint file is missing, truncated, altered or of an unknown schema."""
