"""Tripwire for silent data loss: a backup whose tables shrank sharply against the previous one.

Each completed backup's exact row counts are compared with those of the
previous completed backup of the same target. A table that disappeared, or
that had at least `min_rows` rows and lost more than `drop_share` of them,
trips the wire. Design decision: the earlier backup (the last one known to hold
the data) is pinned without a schema change, by setting its retention_until to
KEEP_FOREVER with a retention_detail saying why; `keep ID --days N` releases it.
The comparison is a pure function of the history, so the asset check can be
re-evaluated at any time from `backup_history` alone.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .history import BackupRecord, HistoryStore

DEFAULT_DROP_SHARE = 0.5
DEFAULT_MIN_ROWS = 1000
PIN_DETAIL_PREFIX = "pinned by the row-count tripwire"


@dataclass(frozen=True)
class TableDrop:
    table: str
    before: int
    after: int | None  # None: the table is gone

    @property
    def lost_share(self) -> float:
        return 1.0 if self.after is None or self.before == 0 else (self.before - self.after) / self.before

    def describe(self) -> str:
        if self.after is None:
            return f"{self.table} disappeared (had {self.before} rows)"
        return f"{self.table} {self.before} -> {self.after} rows (-{self.lost_share:.0%})"


@dataclass
class TripwireResult:
    target: str
    backup_id: str
    previous_id: str | None
    drop_share: float
    min_rows: int
    drops: list[TableDrop] = field(default_factory=list)
    pinned: bool = False

    @property
    def tripped(self) -> bool:
        return bool(self.drops)

    @property
    def summary(self) -> str:
        if self.previous_id is None:
            return f"backup {self.backup_id} is the first of target {self.target} with row counts: nothing to compare"
        if not self.drops:
            return f"no table of backup {self.backup_id} disappeared or lost more than {self.drop_share:.0%} of its rows " \
                   f"since backup {self.previous_id}"
        listed = "; ".join(d.describe() for d in self.drops[:10])
        more = f" and {len(self.drops) - 10} more" if len(self.drops) > 10 else ""
        kept = (f"; backup {self.previous_id} is pinned: release it with `backup-pipeline keep {self.previous_id} "
                "--days N` once the drop is explained") if self.pinned else ""
        return (f"possible data loss in target {self.target}: since backup {self.previous_id}, "
                f"{listed}{more}{kept}")

    def metadata(self) -> dict:
        return {
            "backup_id": self.backup_id,
            "compared_with": self.previous_id or "none",
            "tables_dropped": [{"table": d.table, "before": d.before, "after": d.after} for d in self.drops],
            "drop_share": self.drop_share,
            "min_rows": self.min_rows,
            "previous_pinned": self.pinned,
            "reason": self.summary,
        }


def compare_counts(previous: dict[str, int], current: dict[str, int], *, drop_share: float = DEFAULT_DROP_SHARE,
                   min_rows: int = DEFAULT_MIN_ROWS) -> list[TableDrop]:
    """Tables of previous that are gone from current, or had >= min_rows and lost more than drop_share of them."""
    drops = []
    for table in sorted(previous):
        before, after = previous[table], current.get(table)
        if after is None:
            drops.append(TableDrop(table, before, None))
        elif before >= min_rows and before - after > drop_share * before:
            drops.append(TableDrop(table, before, after))
    return drops


def previous_backup(history: "HistoryStore", record: "BackupRecord") -> "BackupRecord | None":
    """The newest completed backup of the same target taken before record, with row counts."""
    for other in history.completed_backups(record.target):
        if other.id != record.id and other.timestamp <= record.timestamp and other.row_counts is not None:
            return other
    return None


def evaluate(history: "HistoryStore", record: "BackupRecord", *, drop_share: float = DEFAULT_DROP_SHARE,
             min_rows: int = DEFAULT_MIN_ROWS) -> TripwireResult:
    previous = previous_backup(history, record)
    result = TripwireResult(target=record.target, backup_id=record.id, previous_id=previous.id if previous else None,
                            drop_share=drop_share, min_rows=min_rows)
    if previous is not None and record.row_counts is not None:
        result.drops = compare_counts(previous.row_counts, record.row_counts, drop_share=drop_share, min_rows=min_rows)
        result.pinned = _is_pinned(previous)
    return result


def check_backup(history: "HistoryStore", record: "BackupRecord", *, drop_share: float = DEFAULT_DROP_SHARE,
                 min_rows: int = DEFAULT_MIN_ROWS, pin: bool = True) -> TripwireResult:
    """Compare a just-completed backup with the previous one; pin the previous one if the wire trips."""
    result = evaluate(history, record, drop_share=drop_share, min_rows=min_rows)
    if result.tripped and pin and not result.pinned:
        detail = (f"{PIN_DETAIL_PREFIX}: backup {record.id} lost "
                  + "; ".join(d.describe() for d in result.drops[:10])
                  + f"; release with `backup-pipeline keep {result.previous_id} --days N`")
        history.set_retention(result.previous_id, None, detail=detail)
        result.pinned = True
    return result


def _is_pinned(record: "BackupRecord") -> bool:
    return bool(record.retention_detail and record.retention_detail.startswith(PIN_DETAIL_PREFIX))
