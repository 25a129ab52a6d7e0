"""Fingerprints of a database's contents, to compare a source with its restore."""

import psycopg
from psycopg import sql

from backup_pipeline.core.dump import _TABLES_SQL


def fingerprint(dsn: str) -> dict[str, object]:
    """Everything a user would check after a restore, as comparable values."""
    out: dict[str, object] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET row_security = off")
        for schema, table in conn.execute(_TABLES_SQL).fetchall():
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {}.{} t")
            out[f"table {schema}.{table}"] = conn.execute(
                query.format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchone()
        out["sequences"] = conn.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
        ).fetchall()
        out["large objects"] = conn.execute(
            "SELECT encode(lo_get(oid), 'escape') FROM pg_largeobject_metadata ORDER BY 1"
        ).fetchall()
        out["policies"] = conn.execute(
            "SELECT schemaname, tablename, policyname, roles::text, qual FROM pg_policies ORDER BY 1, 2, 3"
        ).fetchall()
        out["rls"] = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relrowsecurity ORDER BY 1"
        ).fetchall()
        out["grants"] = conn.execute(
            "SELECT table_schema, table_name, grantee, privilege_type FROM information_schema.role_table_grants "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3, 4"
        ).fetchall()
        out["owners"] = conn.execute(
            "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'p', 'v') ORDER BY 1, 2"
        ).fetchall()
        out["views"] = conn.execute(
            "SELECT schemaname, viewname FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
    return out
