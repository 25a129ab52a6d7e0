"""Binds the settings resource every op uses."""

import dagster as dg

from backup_pipeline.resources import BackupSettings


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"backup_settings": BackupSettings()})
