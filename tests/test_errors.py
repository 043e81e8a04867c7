"""What is retryable, and how subprocesses report it."""
from cruncher.errors import (EXIT_PERMANENT, EXIT_RETRYABLE, BadInputError, ConfigError,
                             DatabaseUnavailableError, FileNotReadyError, JobTimeoutError,
                             OutsideDataRootError, ValidationError, exit_status_for, is_retryable)


def test_transient_failures_are_retryable():
    for exc in (FileNotReadyError("x"), DatabaseUnavailableError("x"), JobTimeoutError("x")):
        assert is_retryable(exc) and exit_status_for(exc) == EXIT_RETRYABLE


def test_permanent_and_foreign_failures_are_not():
    for exc in (ConfigError("x"), ValidationError("f", "r"), BadInputError("/p", "r"),
                OutsideDataRootError("x"), ValueError("x"), MemoryError()):
        assert not is_retryable(exc) and exit_status_for(exc) == EXIT_PERMANENT


def test_errors_carry_their_subject():
    err = BadInputError("/data/raw/x.fits", "truncated")
    assert err.path == "/data/raw/x.fits" and err.reason == "truncated"
    assert "/data/raw/x.fits" in str(err)
    v = ValidationError("files", "empty")
    assert (v.field, v.reason) == ("files", "empty") and str(v) == "files: empty"
