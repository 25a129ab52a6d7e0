"""Backup KPIs per target, read from the `backup_kpis` view (revision 0003).

The view is the source of truth so operators can `SELECT * FROM
backup_kpis` themselves; this only reads it with proper types: percentages
and averages as floats rounded to 2 places (None when there is nothing to
average), timestamps as aware datetimes, last_drill_passed as a bool (None
when the target was never drilled). "Last 30 days" is relative to the
database server's clock.
"""

from __future__ import annotations

import builtins
from typing import Any

import sqlalchemy as sa

from backup_pipeline.core.history.base import StoreBase
from backup_pipeline.core.history.models import backup_kpis_view

_FLOATS = ("success_rate_30d", "avg_size_mb_30d", "avg_duration_seconds_30d", "verified_share_30d")
_INTS = ("total_30d", "completed_30d")


def _typed(row: sa.RowMapping) -> dict[str, Any]:
    out = dict(row)
    for key in _FLOATS:
        if out[key] is not None:
            out[key] = float(out[key])
    for key in _INTS:
        out[key] = int(out[key] or 0)
    if out["last_drill_passed"] is not None:
        out["last_drill_passed"] = bool(out["last_drill_passed"])
    return out


class KpisMixin(StoreBase):
    def kpis(self, target: str | None = None) -> builtins.list[dict[str, Any]]:
        """One dict per target with any history (or just target's), ordered by target."""
        query = sa.select(backup_kpis_view)
        if target is not None:
            query = query.where(backup_kpis_view.c.target == target)
        query = query.order_by(backup_kpis_view.c.target)
        with self._connect() as conn:
            return [_typed(row) for row in conn.execute(query).mappings()]
