"""The error tree of db-backup.

Every error a user can cause or meet is a subclass of :class:`BackupError`,
and its message names the object and the cause on one line::

    BackupError
    ├── ConfigError            bad input: a URL, a flag, a fleet file, a policy
    │   └── FleetError         a fleet file that cannot be applied (every problem listed)
    ├── SourceError            the database cannot be read
    │   ├── ToolFailed         pg_dump / mariadb-dump / ... exited non-zero
    │   │   └── TransientToolFailed   ... because the server was unreachable or restarting
    │   └── TransientSourceError  server unreachable or restarting: a retry may succeed
    ├── TargetError            the restore target cannot be written, or holds data
    ├── StorageError           the store cannot be read or written
    │   ├── ObjectNotFound     a key that is not in the store
    │   ├── PermanentStorageError  bad credentials, missing bucket, access denied
    │   └── StagingError       the local staging directory cannot hold the dump
    ├── BackupNotFound         no manifest for that id / name
    ├── ManifestError          a manifest that cannot be read or has an unknown version
    ├── IntegrityError         size or sha256 does not match the manifest
    │   ├── ChecksumMismatch
    │   ├── VerificationFailed  one or more backups failed verify (all are named)
    │   └── DrillFailed        a restore drill found the backup unusable
    └── EncryptionError        wrong key, unknown header, tampered ciphertext
        └── PassphraseRequired an encrypted backup read without its passphrase (also a
                               ConfigError: a set-up problem, never a verdict on the backup)

``exit_code`` is what the CLI exits with; ``transient`` says whether a retry
may help (network blips, throttling), which the Prefect tasks' retry condition
reads.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base class: a one-line, user-facing message naming the object and the cause."""

    exit_code: int = 1
    transient: bool = False


class ConfigError(BackupError):
    """Bad input: a URL, flag, parameter or configuration file."""

    exit_code = 2


class FleetError(ConfigError):
    """A fleet file that cannot be applied; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem(s)" if len(problems) != 1 else "1 problem"
        super().__init__(f"{source} has {count}; nothing was changed: " + "; ".join(problems))


class SourceError(BackupError):
    """The source database cannot be read (missing, not a database, unreachable)."""

    exit_code = 3


class ToolFailed(SourceError):
    """An external tool (pg_dump, mariadb-dump, ...) exited non-zero; carries its stderr."""


class TransientSourceError(SourceError):
    """The server refused or dropped the connection (down, restarting, full): retry later.

    Bad passwords, unknown databases and missing privileges are plain SourceErrors.
    """

    transient = True


class TransientToolFailed(ToolFailed, TransientSourceError):
    """A tool failed because its server was unreachable or restarting; a retry may succeed."""


class TargetError(BackupError):
    """The restore target cannot be written, or holds data and ``force`` was not given."""

    exit_code = 4


class StorageError(BackupError):
    """The backup store cannot be read or written."""

    exit_code = 5
    transient = True


class PermanentStorageError(StorageError):
    """Bad credentials, a missing bucket, access denied: retrying cannot help."""

    transient = False


class ObjectNotFound(StorageError):
    """A key that is not in the store."""

    transient = False


class StagingError(StorageError):
    """The local staging directory cannot hold the dump (full disk, permissions)."""

    transient = False


class BackupNotFound(BackupError):
    """No complete backup (no manifest) matches the requested name and id."""

    exit_code = 6


class ManifestError(BackupError):
    """A manifest that cannot be parsed, or whose format_version is unknown."""

    exit_code = 7


class IntegrityError(BackupError):
    """A stored object whose size or digest does not match the manifest."""

    exit_code = 8


class ChecksumMismatch(IntegrityError):
    """The sha256 of an object differs from the one recorded in the manifest."""


class VerificationFailed(IntegrityError):
    """One or more backups failed verification; the message names every one."""


class DrillFailed(IntegrityError):
    """A restore drill found the backup unusable (bad object, row counts, engine check)."""


class EncryptionError(BackupError):
    """Wrong key, unknown encryption header version, or tampered ciphertext."""

    exit_code = 9


class PassphraseRequired(EncryptionError, ConfigError):
    """An encrypted backup was to be read but no passphrase (no data key) was given.

    A configuration problem, not a fault of the backup: drills record no verdict for it.
    """


def is_transient(exc: BaseException) -> bool:
    """True when retrying the operation that raised ``exc`` may succeed."""
    if isinstance(exc, BackupError):
        return exc.transient
    return isinstance(exc, ConnectionError | TimeoutError)
