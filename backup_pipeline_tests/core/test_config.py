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


@pytest.mark.parametrize(
    "body, message",
    [
        ("retention_dayz: 3\ntargets: {prod: {dsn_env: X}}", ": retention_dayz is an unknown setting: did you mean retention_days?"),
        ("targets: {prod: {dsn_env: X, retention_dayz: 3}}", ": targets.prod.retention_dayz is an unknown setting: did you mean retention_days?"),
        ("targets: {prod: {dsn_env: X, zzzz: 1}}", ": targets.prod.zzzz is an unknown setting: allowed: age_recipients, assertions, "),
        ("targets: {prod: {dsn_env: X, retention_days: 0}}", ": targets.prod.retention_days must be at least 1"),
        ("retention_days: ten\ntargets: {prod: {dsn_env: X}}", ": retention_days must be a whole number"),
        ("targets: {prod: {dsn_env: X, drill: maybe}}", ": targets.prod.drill must be true or false"),
        ("targets: {prod: {dsn_env: X, keep_weekly: -1}}", ": targets.prod.keep_weekly must be at least 0"),
        ("targets: {prod: {dsn_env: X, assertions: 5}}", ": targets.prod.assertions must be a file path or a list of them"),
        ("targets: {prod: {dsn_env: X, assertions: [nope.sql]}}", ": targets.prod.assertions: assertion file .*nope.sql does not exist"),
        ("compression: gzip\ntargets: {prod: {dsn_env: X, compression_level: 12}}", ": targets.prod.compression_level: "),
        ("targets: {prod: {dsn_env: 'postgresql://u:hunter2secret@h/d'}}", ": targets.prod.dsn_env must name an environment variable"),
        ("targets: {prod: {dsn: 'postgresql://u:hunter2secret@h/d', dsn_env: X}}", "put the URL in an environment variable"),
        ("targets: {prod: {dsn_env: X, drill: maybe}}\nzzz: 1", r"\(and 1 more problem\(s\) in the file\)"),
    ],
)
def test_every_problem_is_one_line_naming_file_key_path_and_fix(tmp_path: Path, body: str, message: str):
    path = tmp_path / "t.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings({}, targets_file=str(path))
    text = str(caught.value)
    assert text.startswith(str(path)) and "\n" not in text and "hunter2secret" not in text


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "is not UTF-8 text"),
    (b"targets:\x00\x01\x02", r"holds a binary character \(#x0000\) at position 8"),
])
def test_a_binary_targets_file_names_the_file(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "t.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings({}, targets_file=str(path))
    assert str(path) in str(caught.value) and "BACKUP_TARGETS_FILE" in str(caught.value)


def test_yaml_syntax_error_is_one_line_with_its_position(tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("targets:\n  prod: {dsn_env: X\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: .* at line 3, column 1: fix the syntax there") as caught:
        load_settings({}, targets_file=str(path))
    assert "\n" not in str(caught.value)


def test_top_level_settings_are_defaults_and_nulls_mean_default_or_off(tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "storage: file:///srv/b\nretention_days: 7\nmin_good_backups: 2\ndrill: false\n"
        "targets:\n  prod: {dsn_env: X, retention_days: null, migrations_table: null}\n  2024: {dsn_env: Y, drill: true}\n"
    )
    settings = load_settings({}, targets_file=str(path))
    prod, other = settings.target("prod"), settings.target("2024")
    assert (prod.retention_days, prod.min_good_backups, prod.drill, prod.migrations_table) == (7, 2, False, None)
    assert other.drill is True and other.storage_url == "file:///srv/b"


def test_no_configuration_at_all_names_the_variables_and_the_file():
    with pytest.raises(ConfigError) as caught:
        load_settings({}).target("prod")
    text = str(caught.value)
    assert "(configured: none)" in text
    assert all(word in text for word in ("DATABASE_URL", "PROD_SUPABASE_DB_URL", "backup_targets.yaml", "BACKUP_TARGETS_FILE"))
