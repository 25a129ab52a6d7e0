"""Fixtures for running the real jobs: an isolated environment and Dagster instance."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from backup_pipeline.core.history import HistoryStore
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY

SOURCE_DSN_ENV = "TEST_SOURCE_DATABASE_URL"


@dataclass
class BackupEnv:
    history_url: str
    local_storage_url: str
    stage_dir: Path

    def history(self) -> HistoryStore:
        return HistoryStore(self.history_url)


@pytest.fixture
def backup_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BackupEnv:
    """No targets file, no seed variables: each test says exactly what it configures."""
    for var in ("DATABASE_URL", "PROD_SUPABASE_DB_URL", "BACKUP_TARGETS_FILE", "BACKUP_STORAGE_URL",
                "R2_ENDPOINT", "R2_BUCKET", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY",
                "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    env = BackupEnv(
        history_url=f"sqlite:///{tmp_path / 'history.sqlite'}",
        local_storage_url=f"file://{tmp_path / 'storage'}",
        stage_dir=tmp_path / "stage",
    )
    monkeypatch.setenv("BACKUP_HISTORY_URL", env.history_url)
    monkeypatch.setenv("BACKUP_STAGE_DIR", str(env.stage_dir))
    return env


@pytest.fixture
def s3_env(backup_env: BackupEnv, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> BackupEnv:
    """The standard AWS_* variables pointing at the local moto endpoint, as a user sets them for R2."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return backup_env


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def configure(backup_env, tmp_path, monkeypatch):
    """Write backup_targets.yaml with the given targets (name -> settings) and DSN variables."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir(exist_ok=True)

    def write(targets: dict, dsns: dict[str, str]) -> None:
        for var, dsn in dsns.items():
            monkeypatch.setenv(var, dsn)
        lines = [f"storage: {backup_env.local_storage_url}", "targets:"]
        for name, settings in targets.items():
            lines.append(f"  {name}: {json.dumps(settings)}")
        (tmp_path / "targets.yaml").write_text("\n".join(lines) + "\n")
        monkeypatch.setenv("BACKUP_TARGETS_FILE", str(tmp_path / "targets.yaml"))

    return write
