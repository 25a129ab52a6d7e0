"""Where backups live: a local folder or an S3-compatible bucket behind one interface.

Use `open_storage(url, s3_settings)` and keys relative to the URL; every write
is atomic and every failure is a `StorageError` (transient=True when a retry
may help).
"""

from backup_pipeline.core.storage.base import Storage, open_storage
from backup_pipeline.core.storage.local import LocalStorage
from backup_pipeline.core.storage.s3 import IncompleteUpload, S3Settings, S3Storage, choose_part_size

__all__ = [
    "IncompleteUpload",
    "LocalStorage",
    "S3Settings",
    "S3Storage",
    "Storage",
    "choose_part_size",
    "open_storage",
]
