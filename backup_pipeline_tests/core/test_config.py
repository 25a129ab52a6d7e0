"""Targets and settings: from a YAML file or the seeds' variables, errors before work."""

from pathlib import Path

import pytest

from backup_pipeline.core.config import check_target_name, load_settings
from backup_pipeline.core.errors import ConfigError


def test_single_target_from_seed_variables():
    env = {"PROD_SUPABASE_DB_URL": "postgresql://u:p@h/db", "R2_BUCKET": "revo-erp-backups-prod",
           "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com", "R2_ACCESS_KEY_ID": "k", "R2_SECRET_ACCESS_KEY": "s"}
    settings = load_settings(env)
    target = settings.target("prod")
    assert target.dsn_env == "PROD_SUPABASE_DB_URL" and target.dsn(env) == "postgresql://u:p@h/db"
    assert target.storage_url == "s3://revo-erp-backups-prod/backups"
    assert settings.s3.endpoint_url == "https://acct.r2.cloudflarestorage.com"
    assert settings.s3.secret_access_key == "s" and "secret_access_key" not in repr(settings.s3)


def test_database_url_with_named_target_and_default_local_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"DATABASE_URL": "postgresql://h/db", "BACKUP_TARGET": "staging"})
    assert settings.target("staging").storage_url == f"file://{tmp_path / 'backups'}"


def test_r2_endpoint_without_bucket_names_the_missing_setting():
    with pytest.raises(ConfigError, match="R2_BUCKET"):
        load_settings({"DATABASE_URL": "postgresql://h/db", "R2_ENDPOINT": "https://x"})


def test_several_targets_from_yaml(tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "storage: s3://bucket/prefix\n"
        "targets:\n"
        "  prod: {dsn_env: PROD_URL, compression: gzip, retention_days: 90}\n"
        "  dev: {dsn_env: DEV_URL, storage: 'file:///srv/backups', schedule: null}\n"
    )
    settings = load_settings({}, targets_file=str(path))
    assert settings.target("prod").storage_url == "s3://bucket/prefix"
    assert (settings.target("prod").compression, settings.target("prod").retention_days) == ("gzip", 90)
    assert settings.target("dev").storage_url == "file:///srv/backups" and settings.target("dev").schedule is None


@pytest.mark.parametrize(
    "body, message",
    [
        ("targets: {prod: {storage: 's3://b/p'}}", "needs dsn_env"),
        ("targets: {prod: {dsn: 'postgresql://u:p@h/d', dsn_env: X}}", "unknown setting"),
        ("targets: {prod: {dsn_env: X, storage: 'http://bucket'}}", "not a storage URL"),
        ("targets: {'../x': {dsn_env: X}}", "is not allowed"),
        ("targets: {prod: {dsn_env: X, compression: lz4}}", "compression 'lz4' is not supported"),
        ("targets: [", "not valid YAML"),
        ("storage: s3://b\n", "needs a 'targets:' mapping"),
        ("targets: {prod: {dsn_env: X, compression_level: 99}}", "out of range for zstd"),
        ("targets: {prod: {dsn_env: X, compression: gzip, compression_level: 12}}", "out of range for gzip"),
    ],
)
def test_bad_yaml_is_a_clear_config_error(tmp_path: Path, body: str, message: str):
    path = tmp_path / "t.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_settings({}, targets_file=str(path))


def test_missing_dsn_variable_names_it():
    settings = load_settings({"DATABASE_URL": "postgresql://h/db"})
    with pytest.raises(ConfigError, match="environment variable DATABASE_URL is not set"):
        settings.target("prod").dsn({})


@pytest.mark.parametrize("name", ["", "a/b", "..", "../x", "has space", "x" * 64, "-lead"])
def test_unsafe_target_names(name):
    with pytest.raises(ConfigError, match="is not allowed"):
        check_target_name(name)


@pytest.mark.parametrize("name", ["prod", "revo-erp", "db_2", "A1"])
def test_safe_target_names(name):
    assert check_target_name(name) == name


def test_min_good_backups_defaults_to_three_and_must_be_at_least_one(tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("storage: s3://b/p\ntargets: {prod: {dsn_env: X}, dev: {dsn_env: Y, min_good_backups: 1}}\n")
    settings = load_settings({}, targets_file=str(path))
    assert settings.target("prod").min_good_backups == 3 and settings.target("dev").min_good_backups == 1
    path.write_text("storage: s3://b/p\ntargets: {prod: {dsn_env: X, min_good_backups: 0}}\n")
    with pytest.raises(ConfigError, match="min_good_backups"):
        load_settings({}, targets_file=str(path))
