"""DSN redaction and the pg tool locator."""

import pytest

from backup_pipeline.core.errors import PgToolError
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline.core.pgtools import candidates, embedded_bin_dirs, find_tools
from backup_pipeline.core.redact import redact_dsn, redact_text


@pytest.mark.parametrize(
    "dsn, expected",
    [
        ("postgresql://app:s3cr%40t@db.example.com:5432/prod", "postgresql://app:***@db.example.com:5432/prod"),
        ("postgres://app@db/prod?sslmode=require&password=s3cr3t", "postgres://app@db/prod?sslmode=require&password=***"),
        ("host=db user=app password='a b c' dbname=prod", "host=db user=app password=*** dbname=prod"),
    ],
)
def test_redact_dsn(dsn, expected):
    assert redact_dsn(dsn) == expected


def test_redact_text_masks_urls_pairs_and_known_secrets():
    text = "failed: postgresql://u:topsecret@h/db and password=hunter22 and AKIA1234 again"
    out = redact_text(text, ["AKIA1234"])
    assert "topsecret" not in out and "hunter22" not in out and "AKIA1234" not in out


def test_subprocess_env_carries_the_password_and_drops_inherited_pg_vars():
    conn = PgConn.parse("postgresql://app:pw%21@db.example.com:6000/prod?sslmode=require")
    env = conn.subprocess_env({"PGSERVICE": "other", "PATH": "/bin"})
    assert env["PGPASSWORD"] == "pw!" and env["PGHOST"] == "db.example.com" and env["PGPORT"] == "6000"
    assert env["PGSSLMODE"] == "require" and "PGSERVICE" not in env and env["PATH"] == "/bin"
    assert conn.where == "app@db.example.com:6000/prod"


def test_locator_picks_the_smallest_major_at_least_the_servers():
    assert find_tools(16).major == 16
    assert find_tools(17).major == 18


def test_locator_reports_what_it_found_when_nothing_is_new_enough():
    with pytest.raises(PgToolError) as err:
        find_tools(99)
    message = str(err.value)
    assert "PostgreSQL 99" in message and "postgresql-client-99" in message and "16." in message and "18." in message


def test_embedded_tools_lack_ssl_so_sslmode_require_needs_system_tools():
    embedded = [t for t in candidates() if t.origin == "embedded"]
    assert embedded and not any(t.has_ssl for t in embedded)
    system_ssl = [t for t in candidates() if t.has_ssl and t.major >= 18]
    if system_ssl:
        pytest.skip("a system PostgreSQL 18 client with SSL is installed")
    with pytest.raises(PgToolError, match="with SSL support"):
        find_tools(18, need_ssl=True)


def test_explicit_bin_dir_that_is_not_a_bin_dir(tmp_path):
    with pytest.raises(PgToolError, match="does not contain pg_dump"):
        find_tools(15, pg_bin_dir=str(tmp_path))


def test_embedded_wheel_ships_16_and_18():
    assert len(embedded_bin_dirs()) >= 2
