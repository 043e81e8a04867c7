"""The exception hierarchy of cruncher.

Every error cruncher raises on purpose is a :class:`CruncherError`. Its two branches say what a
supervisor should do with the work that failed:

- :class:`RetryableError`: the cause is transient (a file still being written, a database that
  is briefly unreachable, a job that timed out); trying the same work again later can succeed.
- :class:`PermanentError`: retrying cannot help (a corrupt file, a malformed message, a bad
  configuration); the failure is recorded with its reason and the work is not retried.

Subprocesses report the class of their failure through their exit status (see
:data:`EXIT_RETRYABLE` and :data:`EXIT_PERMANENT`), so a worker thread can classify a child's
failure without parsing its output.
"""
from __future__ import annotations

#: Exit status of a subprocess whose failure is worth retrying (BSD ``EX_TEMPFAIL``).
EXIT_RETRYABLE = 75
#: Exit status of a subprocess whose failure is permanent (BSD ``EX_DATAERR``).
EXIT_PERMANENT = 65


class CruncherError(Exception):
    """Base of every error cruncher raises on purpose."""

    retryable: bool = False


class RetryableError(CruncherError):
    """A transient failure: the same work may succeed if tried again later."""

    retryable = True


class PermanentError(CruncherError):
    """A failure that retrying cannot fix; it is recorded and the work is not retried."""

    retryable = False


# --- retryable -------------------------------------------------------------------------------


class FileNotReadyError(RetryableError):
    """A file exists but is still being written (truncated for now, size still changing)."""


class DatabaseUnavailableError(RetryableError):
    """The database could not be reached or was locked; try again later."""


class WriteConflictError(DatabaseUnavailableError):
    """The database server rolled a write back to break a deadlock (or a lock wait ran out)."""


class JobTimeoutError(RetryableError):
    """A job ran past its time limit and was killed."""


# --- permanent -------------------------------------------------------------------------------


class ConfigError(PermanentError):
    """The configuration is invalid: an unknown key, a wrong type, an impossible value."""


class ValidationError(PermanentError):
    """A message or parameter failed validation.

    Parameters
    ----------
    field
        The name of the offending field (``"<message>"`` when the message as a whole is bad).
    reason
        What is wrong with it, written for a person.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class BadInputError(PermanentError):
    """An input file cannot be used: not FITS, truncated for good, missing keywords, wrong shape.

    Parameters
    ----------
    path
        The offending file.
    reason
        What is wrong with it, written for a person.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class OutsideDataRootError(PermanentError):
    """A path lies outside every configured data root and is refused."""


def is_retryable(exc: BaseException) -> bool:
    """Tell whether the work that raised ``exc`` is worth trying again.

    Errors that are not cruncher's own are treated as permanent: an unexpected exception is a
    bug or bad data far more often than a transient condition, and retrying it only delays the
    report.
    """
    return isinstance(exc, CruncherError) and exc.retryable


def exit_status_for(exc: BaseException) -> int:
    """The exit status a subprocess should end with after failing with ``exc``."""
    return EXIT_RETRYABLE if is_retryable(exc) else EXIT_PERMANENT


class NoDataError(PermanentError):
    """A query matched no usable data; the message says what was asked and what exists."""
