"""Drills and verification in core: what a drill catches, and that its server always goes away."""

from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pytest

from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.backup import build_manifest, publish
from backup_pipeline.core.drill import drill_backup, filter_toc
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.errors import BusyError, RestoreError
from backup_pipeline.core.locks import lock_database
from backup_pipeline.core.restore import create_database, restore_from_storage
from backup_pipeline.core.storage import open_storage
from backup_pipeline.core.verify import compare_with_manifest, split_statements
from backup_pipeline_tests.pgcheck import fingerprint


def _publish(dsn: str, tmp_path: Path, target: str = "shop"):
    names = BackupNames.for_backup(target, datetime.now(UTC), "zstd")
    result = dump_database(dsn, tmp_path / "stage", names)
    manifest = build_manifest(backup_id=f"id-{names.base}", target=target, backup_type="manual", names=names,
                              dump=result, dagster_run_id=None)
    storage = open_storage(f"file://{tmp_path / 'store'}")
    publish(storage, names, result, manifest)
    return storage, names, manifest


def _drill_servers(under: Path) -> set[int]:
    """postgres processes of drill servers whose data directory is in under."""
    return {p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and any(a.startswith(str(under)) and "bp-pg" in a and "/data" in a
                                                    for a in (p.info["cmdline"] or []))}


def test_drill_passes_and_runs_assertions(source_dsn, tmp_path, drill_tmp):
    storage, names, _ = _publish(source_dsn, tmp_path)
    checks = tmp_path / "asserts.sql"
    checks.write_text(
        "-- name: every order has items\n"
        "SELECT count(*) = 0 AS ok FROM sales.orders o\n"
        "WHERE NOT EXISTS (SELECT 1 FROM sales.order_items i WHERE i.order_id = o.id);\n"
        "-- name: no negative prices\nSELECT bool_and(price_cents >= 0) AS ok FROM public.products;\n"
        "-- name: impossible\nSELECT false AS ok;\n"
    )
    result = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill", assertion_files=[checks])
    assert result.restorable and result.row_counts_match and result.comparison.ok
    assert [(a.name, a.ok) for a in result.assertions] == [
        ("every order has items", True), ("no negative prices", True), ("impossible", False)]
    assert not result.passed and "assertion 'impossible'" in result.reason
    assert result.restore_seconds > 0 and result.restored_bytes > 0
    assert not _drill_servers(drill_tmp) and not (tmp_path / "drill").exists()


def test_a_flipped_byte_fails_the_drill_before_any_server_starts(source_dsn, tmp_path, drill_tmp):
    storage, names, manifest = _publish(source_dsn, tmp_path)
    archive = Path(storage.root) / manifest["archive"]["key"]
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    result = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert not result.passed and not result.restorable
    assert "does not match its manifest" in result.reason and "corrupt" in result.reason
    assert not _drill_servers(drill_tmp) and not list(drill_tmp.iterdir())


def test_verify_catches_a_table_altered_after_the_dump(source_dsn, restore_server, tmp_path):
    storage, names, manifest = _publish(source_dsn, tmp_path)
    to_dsn = create_database(restore_server.dsn(), "altered")
    restore_from_storage(storage, names.manifest, to_dsn, stage_dir=tmp_path / "r")
    with psycopg.connect(to_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.documents")
        conn.execute("ALTER TABLE public.customers DROP CONSTRAINT customers_email_key")
        conn.execute("CREATE TABLE public.sneaky (x int)")
        conn.execute("SELECT setval('public.products_id_seq', 5)")
    with psycopg.connect(to_dsn) as conn:
        comparison = compare_with_manifest(conn, manifest)
    assert comparison.row_count_mismatches["public.documents"] == (1, 0)
    assert comparison.row_count_mismatches["public.sneaky"] == (None, 0)
    assert "public.customers.customers_email_key" in comparison.missing["constraints"]
    assert "public.customers_email_key" in comparison.missing["indexes"]
    assert comparison.unexpected["tables"] == ["public.sneaky"]
    assert comparison.sequences_behind["public.products_id_seq"] == (1000, 5)
    assert not comparison.ok


def test_extensions_the_drill_server_lacks_are_taken_out_of_the_restore_list():
    toc = (
        "1; 3079 16385 EXTENSION - pgsodium \n"
        "2; 0 0 COMMENT - EXTENSION pgsodium \n"
        "3; 3079 16390 EXTENSION - pgcrypto \n"
        "4; 0 16400 TABLE DATA vault secrets supabase_admin\n"
        "5; 0 16401 TABLE DATA public orders postgres\n"
    )
    out = filter_toc(toc, {"pgsodium"}, {"vault.secrets"}).splitlines()
    assert [line.startswith(";") for line in out] == [True, True, False, True, False]


def test_assertion_files_split_on_line_ending_semicolons():
    text = "-- name: a\nSELECT 1 = 1 AS ok;\nSELECT ';' <> 'x' AS ok; -- trailing comment\n\n-- only a comment;\n"
    assert [name for name, _ in split_statements(text)] == ["a", "SELECT ';' <> 'x' AS ok"]


def test_a_restore_waits_for_no_one_while_a_backup_holds_the_database(source_dsn):
    with psycopg.connect(source_dsn, autocommit=True) as backup_side, psycopg.connect(source_dsn, autocommit=True) as restore_side:
        lock_database(backup_side, exclusive=False, where="shop")
        with pytest.raises(BusyError, match="a backup or restore of it is running"):
            lock_database(restore_side, exclusive=True, where="shop")


@pytest.mark.pg15
def test_supabase_shaped_database_drills_clean_with_missing_extensions_reported(pg15_database, tmp_path):
    """Source: the machine's PostgreSQL 15 with contrib; drill server: embedded 18 without it."""
    with psycopg.connect(pg15_database, autocommit=True) as conn:
        conn.execute(SUPABASE_SHAPED_SQL)
    storage, names, manifest = _publish(pg15_database, tmp_path)
    assert {"pgcrypto", "pg_trgm"} <= set(manifest["inventory"]["extensions"])
    result = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill", server_major=18)
    assert result.passed, result.reason
    assert result.skipped_extensions == ["pg_trgm", "pgcrypto"] and "skipped extensions: pg_trgm, pgcrypto" in result.reason
    assert result.server_version.startswith("18.")


SUPABASE_SHAPED_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF;
END $$;
CREATE SCHEMA extensions;
CREATE EXTENSION pgcrypto WITH SCHEMA extensions;
CREATE EXTENSION pg_trgm WITH SCHEMA extensions;
CREATE SCHEMA auth;
CREATE TABLE auth.users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text, raw_user_meta_data jsonb);
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
CREATE SCHEMA storage;
CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL, public boolean DEFAULT false);
CREATE TABLE storage.objects (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), bucket_id text REFERENCES storage.buckets(id), name text, owner uuid);
CREATE TABLE public.profiles (id uuid PRIMARY KEY REFERENCES auth.users(id), username text UNIQUE, avatar_url text);
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Public profiles are viewable by everyone." ON public.profiles FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "Users can update own profile." ON public.profiles FOR UPDATE TO authenticated USING (auth.uid() = id);
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Avatar images are publicly accessible." ON storage.objects FOR SELECT USING (bucket_id = 'avatars');
GRANT USAGE ON SCHEMA public, storage TO anon, authenticated, service_role;
GRANT SELECT ON public.profiles TO anon;
GRANT ALL ON public.profiles TO authenticated, service_role;
CREATE FUNCTION public.hash_token(t text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN RETURN encode(extensions.digest(t, 'sha256'), 'hex'); END $f$;
INSERT INTO auth.users (email, raw_user_meta_data)
SELECT 'user' || g || '@example.com', jsonb_build_object('n', g) FROM generate_series(1, 300) g;
INSERT INTO public.profiles (id, username) SELECT id, split_part(email, '@', 1) FROM auth.users;
INSERT INTO storage.buckets VALUES ('avatars', 'avatars', true);
INSERT INTO storage.objects (bucket_id, name, owner) SELECT 'avatars', username || '.png', id FROM public.profiles;
"""


@pytest.mark.pg15
def test_a_failed_replace_leaves_the_destination_untouched(pg15_database, restore_server, tmp_path):
    """The backup needs pg_trgm, which the embedded server lacks: the one-transaction restore rolls back."""
    with psycopg.connect(pg15_database, autocommit=True) as conn:
        conn.execute(SUPABASE_SHAPED_SQL)
    storage, names, _ = _publish(pg15_database, tmp_path)
    to_dsn = create_database(restore_server.dsn(), "busy")
    with psycopg.connect(to_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)")
    before = fingerprint(to_dsn)
    with pytest.raises(RestoreError, match="nothing was changed") as err:
        restore_from_storage(storage, names.manifest, to_dsn, stage_dir=tmp_path / "r", replace=True)
    assert "pg_trgm" in str(err.value) or "pgcrypto" in str(err.value)
    assert fingerprint(to_dsn) == before
