"""The words a backup's history is written in: its status, its verification and its type, defined once.

The design decision: `StrEnum`s name the vocabulary for code, but the tuples of plain `str` values below
are what reaches the database, argparse choices and Dagster config (`BackupTypeName`), so stored rows
and run configs keep the exact strings they always had ("pre-migration", never "PRE_MIGRATION").
The migrations spell their own copies on purpose: a revision describes the schema of its date.
"""

from enum import StrEnum
from typing import Literal


class BackupStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"


class Verification(StrEnum):
    PENDING = "pending"
    CHECKSUM_OK = "checksum_ok"  # sha256 and size match the manifest; not restored
    VERIFIED = "verified"  # restored in a throwaway server and matched the manifest
    FAILED = "failed"


class BackupType(StrEnum):
    DAILY = "daily"
    MANUAL = "manual"
    PRE_MIGRATION = "pre-migration"
    POST_MIGRATION = "post-migration"
    PRE_RESTORE = "pre-restore"


BACKUP_STATUSES: tuple[str, ...] = tuple(s.value for s in BackupStatus)
VERIFICATION_STATUSES: tuple[str, ...] = tuple(s.value for s in Verification)
BACKUP_TYPES: tuple[str, ...] = tuple(t.value for t in BackupType)

# The type field of run config: a Literal of the same strings, so Dagster's launchpad offers them as choices.
BackupTypeName = Literal[BACKUP_TYPES]  # type: ignore[valid-type]
