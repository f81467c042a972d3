"""The project's error types and its documented exit codes.

Every expected failure is a subclass of :class:`ScriptEc2Error`; the CLI catches that base in
one place, prints ``Error: <message>`` on stderr and exits with the error's code.
"""

from __future__ import annotations

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
