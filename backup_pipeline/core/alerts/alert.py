"""`Alert`: what happened, to which target, where to look; rendered as plain text for every channel."""

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from backup_pipeline.core.freshness import BACKUP_MAX_AGE, hours
from backup_pipeline.core.redact import redact_text

Kind = Literal["run_failed", "verification_failed", "drill_error", "stale_target", "row_counts_dropped", "copy_failed"]
KINDS: tuple[str, ...] = ("run_failed", "verification_failed", "drill_error", "stale_target", "row_counts_dropped", "copy_failed")
# A drill that could not run says nothing about the backup; the alert says so, whatever the op wrote.
DRILL_ERROR_NOTE = "the backup's verdict is unchanged; the drill will be retried"
# Discord's Slack-compatible endpoint rejects messages over 2000 characters.
MAX_ERROR_CHARS = 1500


@dataclasses.dataclass(frozen=True)
class Alert:
    kind: Kind
    target: str | None
    error: str
    job: str | None = None
    step: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    backup_id: str | None = None
    happened_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"alert kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def redacted(self, secrets: Iterable[str | None] = ()) -> "Alert":
        """A copy whose every text field is redacted and whose error is cut to a size every channel accepts."""
        secrets = list(secrets)
        clean = {
            field.name: redact_text(value, secrets)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), str)
        }
        error = clean["error"]
        if len(error) > MAX_ERROR_CHARS:
            clean["error"] = error[: MAX_ERROR_CHARS - 1] + "…"
        return dataclasses.replace(self, **clean)

    @property
    def title(self) -> str:
        target = self.target or "all targets"
        if self.kind == "stale_target":
            return f"Backup stale: no completed backup of target {target} in the last {hours(BACKUP_MAX_AGE)}"
        where = ", ".join([f"target {target}", *(f"{label} {value}" for label, value in
                                                  (("job", self.job), ("step", self.step)) if value)])
        headline = {"verification_failed": "Backup verification failed",
                    "drill_error": "Backup drill could not run",
                    "row_counts_dropped": "Possible data loss: tables shrank since the previous backup",
                    "copy_failed": "Second copy of a backup failed",
                    }.get(self.kind, "Backup pipeline run failed")
        return f"{headline}: {where}"

    def fields(self) -> list[tuple[str, str]]:
        """Label/value pairs that are set, in reading order."""
        pairs = [
            ("Target", self.target or "all targets"),
            ("Job", self.job),
            ("Step", self.step),
            ("Error", self.error),
            ("Verdict", DRILL_ERROR_NOTE if self.kind == "drill_error" else None),
            ("Backup", self.backup_id),
            ("Run", self.run_url or self.run_id),
            ("At", self.happened_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ]
        return [(label, value) for label, value in pairs if value]

    def text(self) -> str:
        return "\n".join([self.title, *(f"{label}: {value}" for label, value in self.fields())])

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["happened_at"] = self.happened_at.astimezone(UTC).isoformat()
        out["title"] = self.title
        out["text"] = self.text()
        return out
