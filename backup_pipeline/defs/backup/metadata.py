"""Asset metadata for `backups/<target>`, built from the history row so both say the same.

The asset's event comes after the verdict, so the UI's latest materialization
says verified/failed and carries KPIs that count this backup: verify yields it in
the `backup` job; in a run of the asset itself (Materialize, its schedule) the
graph's output is the materialization, so sync_standby, the chain's last step,
yields that output with the same report (and verify logs only a failure).
"""

import dagster as dg

from backup_pipeline.core.backup import StoredBackup
from backup_pipeline.core.history import BackupRecord, HistoryStore
from backup_pipeline.resources import backup_asset_key

ROW_COUNT_SCHEMA = dg.TableSchema(
    columns=[dg.TableColumn("table", "string"), dg.TableColumn("rows", "int")]
)


KPI_FIELDS = ("success_rate_30d", "avg_size_mb_30d", "avg_duration_seconds_30d", "verified_share_30d", "total_30d")


def kpi_metadata(kpis: list[dict]) -> dict[str, object]:
    """The target's 30-day KPIs (seed 000's "Métricas"), so they plot over materializations in the UI."""
    row = kpis[0] if kpis else {}
    return {f"kpi_{name}": dg.MetadataValue.float(float(row[name])) for name in KPI_FIELDS if row.get(name) is not None}


def backup_metadata(record: BackupRecord) -> dict[str, object]:
    counts = record.row_counts or {}
    return {
        "backup_id": record.id,
        "type": record.type,
        "status": record.status,
        "verification_status": record.verification_status,
        "timestamp": dg.MetadataValue.timestamp(record.timestamp),
        "retention_until": dg.MetadataValue.timestamp(record.retention_until),
        "archive_uri": dg.MetadataValue.path(record.archive_uri or ""),
        "manifest_uri": dg.MetadataValue.path(record.manifest_uri or ""),
        "size_bytes": dg.MetadataValue.int(record.size_bytes or 0),
        "size_mb": dg.MetadataValue.float(record.size_mb or 0.0),
        "sha256": record.sha256 or "",
        "duration_seconds": dg.MetadataValue.float(record.duration_seconds or 0.0),
        "server_version": record.server_version or "",
        "pg_dump_version": record.pg_dump_version or "",
        "compression": record.compression or "",
        "total_rows": dg.MetadataValue.int(sum(counts.values())),
        "row_counts": dg.MetadataValue.table(
            records=[dg.TableRecord({"table": name, "rows": rows}) for name, rows in sorted(counts.items())],
            schema=ROW_COUNT_SCHEMA,
        ),
        "dagster_run_id": record.dagster_run_id or "",
    }


def backup_report(history: HistoryStore, stored: StoredBackup) -> tuple[str, dict[str, object]]:
    """The description and metadata of the asset event for a backup: its row, verdict and the target's KPIs."""
    record = history.get(stored.backup_id)
    metadata = {**backup_metadata(record), **kpi_metadata(history.kpis(stored.target.name))}
    if record.drill_error:
        metadata["drill_error"] = record.drill_error
    return f"{record.type} backup {record.id}: {record.verification_status}", metadata


def backup_event(history: HistoryStore, stored: StoredBackup) -> dg.AssetMaterialization | dg.AssetObservation:
    """A materialization for a backup this run made; an observation (new verdict) for an older one drilled now.

    Ops yield it (never context.log_event): Dagster drops logged events when the op then raises,
    and a failed verdict is reported exactly when the op fails.
    """
    key = backup_asset_key(stored.target.name)
    description, metadata = backup_report(history, stored)
    return (dg.AssetMaterialization(asset_key=key, description=description, metadata=metadata) if stored.new
            else dg.AssetObservation(asset_key=key, description=description, metadata=metadata))


def reported_by_output(context: dg.OpExecutionContext) -> bool:
    """True in a run of the asset backups/<target> itself, where the chain's last output is the materialization."""
    return context.has_assets_def
