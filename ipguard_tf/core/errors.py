"""Exceptions of ipguard_tf. Every error a user can cause is an :class:`IPGuardError` with a one-line message;
the CLI prints that line and exits with status 2. Anything else that escapes is a bug in ipguard_tf (or a
library below it): the CLI reports it as an internal error (status 1) and ``--debug`` shows its traceback."""


class IPGuardError(Exception):
    """Base class: a user-facing error whose ``str`` is a complete one-line explanation."""


class ParameterError(IPGuardError, ValueError):
    """A parameter given by the user is out of range or of the wrong kind (a method's hyperparameter, a
    threshold, a pruning level ...). A ``ValueError`` too, so ``except ValueError`` callers keep working."""


class DataError(IPGuardError):
    """A dataset is missing, malformed or outside the expected domain."""


class ModelError(IPGuardError):
    """A model cannot be loaded or does not match the expected input/output."""


class FingerprintFileError(IPGuardError):
    """A fingerprint file is missing, truncated, altered or of an unknown schema."""
