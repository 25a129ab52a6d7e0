"""The one Dagster resource: where targets, history and staging come from.

It wraps the core's settings so ops receive typed objects; secrets are not
fields here (they would show in the UI) but are read from the environment
variables each target names, at run time.
"""

from pathlib import Path

import dagster as dg

from backup_pipeline.core.config import Settings, load_settings
from backup_pipeline.core.history import HistoryStore, default_history_url
from backup_pipeline.core.storage import Storage, open_storage
from backup_pipeline.core.storage.fallback import FallbackStorage

TARGET_TAG = "backup_pipeline/target"
MIGRATION_EVENT_TAG = "backup_pipeline/migration_event"
MIGRATION_ID_TAG = "backup_pipeline/migration_id"
BACKUPS_PREFIX = "backups"  # every target's asset is backups/<target>


def backup_asset_key(target: str) -> dg.AssetKey:
    return dg.AssetKey([BACKUPS_PREFIX, target])


class BackupSettings(dg.ConfigurableResource):
    """Targets file (default: $BACKUP_TARGETS_FILE or ./backup_targets.yaml) and history database URL."""

    targets_file: str | None = None
    history_url: str | None = None

    def load(self) -> Settings:
        return load_settings(targets_file=self.targets_file)

    def history(self, settings: Settings) -> HistoryStore:
        return HistoryStore(self.history_url or settings.history_url or default_history_url())

    def storage(self, settings: Settings, url: str) -> Storage:
        """The storage at url; a target's primary comes with its second copies behind it for reads."""
        primary = open_storage(url, settings.s3)
        copies = next((t.copies for t in settings.targets.values() if t.storage_url == url and t.copies), ())
        return FallbackStorage(primary, [open_storage(c, settings.s3) for c in copies]) if copies else primary

    def stage_dir(self, settings: Settings, run_id: str) -> Path:
        return settings.stage_dir / run_id
