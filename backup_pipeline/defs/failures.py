"""Turning core errors into Dagster failures, and recording them in history first.

Core errors already carry a redacted, user-facing message; anything else is
redacted here. `from None` drops chained exceptions, whose text could hold a DSN.
"""

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from backup_pipeline.core.errors import BackupPipelineError
from backup_pipeline.core.history import HistoryStore
from backup_pipeline.core.redact import redact_text


def user_message(exc: BaseException, secrets: list[str] | None = None) -> str:
    if isinstance(exc, BackupPipelineError):
        return redact_text(str(exc), secrets or [])
    return redact_text(f"{type(exc).__name__}: {exc}", secrets or [])


@contextlib.contextmanager
def failing_as(history: HistoryStore | None = None, backup_id: str | None = None, secrets: list[str] | None = None,
               cleanup: Path | None = None) -> Iterator[None]:
    """Record any error as the attempt's failure, delete cleanup (the run's stage), then fail the step."""
    try:
        yield
    except (dg.Failure, dg.RetryRequested):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure must be recorded
        message = user_message(exc, secrets)
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        if history is not None and backup_id is not None:
            history.fail(backup_id, message)
        raise dg.Failure(description=message, allow_retries=False) from None
