"""The project's error types and its documented exit codes.

Every expected failure is a subclass of :class:`ScriptEc2Error`; the CLI catches that base in
one place, prints ``Error: <message>`` on stderr and exits with the error's code.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_LOCKED = 75
EXIT_TIMEOUT = 124


class ScriptEc2Error(Exception):
    """An expected failure with a one-line message a person can act on."""

    exit_code = EXIT_FAILED


class UsageError(ScriptEc2Error):
    """A bad parameter, option or URI."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A bad setting: unknown config key, wrong type, unreadable config file."""


class PartialFailure(ScriptEc2Error):
    """The run finished but some inputs were rejected (for example quarantined files)."""

    exit_code = EXIT_PARTIAL


class LockHeld(ScriptEc2Error):
    """Another run holds the lock."""

    exit_code = EXIT_LOCKED


class StoreError(ScriptEc2Error):
    """Base for object-store failures (S3 or local folder)."""


class BucketNotFound(StoreError):
    pass


class AccessDenied(StoreError):
    pass


class EndpointUnreachable(StoreError):
    pass


class KeyNotFound(StoreError):
    pass


class DatabaseError(ScriptEc2Error):
    """Base for database failures."""


class DatabaseUnavailable(DatabaseError):
    pass


class SchemaOutOfDate(DatabaseError):
    pass


class DataError(ScriptEc2Error):
    """Input data that cannot be used (bad columns, unparseable values)."""


def environment_failure(exc: BaseException) -> str | None:
    """One line for a failure of the machine around a command, or None for anything else.

    Connecting is checked up front (``DatabaseUnavailable``); this catches a database that
    fails later, and a local disk error no command turned into its own message. Only the
    driver's first line is shown: SQLAlchemy's own text would add the statement and its
    parameters.
    """
    sa_exc = sys.modules.get("sqlalchemy.exc")
    # Operational and interface errors are the server, the connection or the disk; an integrity
    # or programming error is a bug here and keeps its traceback.
    if sa_exc is not None and (
        isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)
    ):
        reason = str(exc.orig) if exc.orig is not None else type(exc).__name__
        first = next((line.strip() for line in reason.splitlines() if line.strip()), reason)
        return (
            f"database failed: {first} (every committed step is kept; run the command again "
            "once the database is back)"
        )
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return None
