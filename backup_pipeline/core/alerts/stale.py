"""Which targets are stale (no completed backup within core/freshness.py's BACKUP_MAX_AGE) and due an alert today.

A stale target alerts once per UTC day, not on every sensor tick: the cursor
maps target -> the date of its last alert. The decision is a pure function of
(last backups, cursor, now) so it can be tested at any time of day.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from backup_pipeline.core.freshness import BACKUP_MAX_AGE
from backup_pipeline.core.alerts.alert import Alert

STALE_AFTER = BACKUP_MAX_AGE


def _describe(last: datetime | None, now: datetime) -> str:
    if last is None:
        return "no completed backup is recorded for this target"
    hours = (now - last).total_seconds() / 3600
    return f"the last completed backup finished {last.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {hours:.1f} hours ago"


def due_stale_alerts(
    last_backups: Mapping[str, datetime | None],
    cursor: Mapping[str, str],
    now: datetime,
    stale_after: timedelta = STALE_AFTER,
) -> tuple[list[Alert], dict[str, str]]:
    """Alerts for stale targets not yet alerted today (UTC), and the cursor to store once they are sent.

    A target that is fresh again (or no longer configured) leaves the cursor, so
    its next staleness alerts at once.
    """
    today = now.astimezone(UTC).date().isoformat()
    alerts: list[Alert] = []
    new_cursor: dict[str, str] = {}
    for target in sorted(last_backups):
        last = last_backups[target]
        if last is not None and now - last <= stale_after:
            continue
        if cursor.get(target) == today:
            new_cursor[target] = today
            continue
        alerts.append(Alert(kind="stale_target", target=target, error=_describe(last, now), happened_at=now))
        new_cursor[target] = today
    return alerts, new_cursor
