"""Exceptions raised by the core, one per kind of failure.

Every message names the object that failed (target, host, bucket, file) and
the fix, and never contains a secret: build messages from redacted values only.
"""


class BackupPipelineError(Exception):
    """Base class: a failure with a message fit to show a user as-is."""


class ConfigError(BackupPipelineError):
    """A setting is missing or malformed; raised before any work starts."""


class ConnectionFailed(BackupPipelineError):
    """A PostgreSQL server could not be reached or refused the credentials."""


class PgToolError(BackupPipelineError):
    """No usable pg_dump/pg_restore/psql of the right major version."""


class DumpError(BackupPipelineError):
    """pg_dump or pg_dumpall failed, or the archive could not be written."""


class StorageError(BackupPipelineError):
    """Object storage (S3/R2/MinIO or a local folder) failed."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class RestoreError(BackupPipelineError):
    """pg_restore failed or the destination is not fit to restore into."""


class VerifyError(BackupPipelineError):
    """A backup did not match its manifest (checksum, size, row counts)."""


class DrillError(BackupPipelineError):
    """A restore drill could not run (storage unreachable, no disk, no server): no verdict on the backup; retry."""


class IdentityMissing(DrillError):
    """An age-encrypted backup and no key that opens it: a drill cannot run (no verdict); a restore refuses."""


class BusyError(BackupPipelineError):
    """Another backup or restore holds the database; retry later."""


class BackupNotFound(BackupPipelineError, KeyError):
    """No backup with that id in the history; still a KeyError for callers written before it existed."""

    __str__ = BackupPipelineError.__str__  # KeyError would quote the whole message


class MigrationEventNotFound(BackupPipelineError, KeyError):
    """No migration event with that id in the history (a typo'd or another history's id)."""

    __str__ = BackupPipelineError.__str__
