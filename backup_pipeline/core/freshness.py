"""The freshness limits, in one place: a completed backup within 26 hours, a passing drill within 8 days.

Everything that judges or describes freshness (the asset's FreshnessPolicy,
the drill_fresh check, the stale-backup alert and its wording) imports these,
so changing a limit changes the policy, the alert and the text together.
"""

from datetime import timedelta

BACKUP_MAX_AGE = timedelta(hours=26)
DRILL_MAX_AGE = timedelta(days=8)


def hours(limit: timedelta) -> str:
    return f"{limit.total_seconds() / 3600:g} hours"


def days(limit: timedelta) -> str:
    return f"{limit.total_seconds() / 86400:g} days"
