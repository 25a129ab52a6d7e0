"""What a database contains, as comparable lists: taken at dump time, checked after a restore.

Everything is read in the caller's transaction, so at dump time it describes
the same snapshot as pg_dump. Objects that belong to an extension are left
out (pg_dump does not dump them; CREATE EXTENSION brings them back), and
each extension is listed with its schema and configuration tables so a drill
can skip one its server lacks.
"""

import psycopg

_USER_NS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""


def _not_extension_member(classid: str, oid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{classid}'::regclass "
        f"AND d.objid = {oid} AND d.deptype = 'e')"
    )


QUERIES: dict[str, str] = {
    "schemas": f"""
        SELECT n.nspname FROM pg_namespace n
        WHERE {_USER_NS} AND {_not_extension_member('pg_namespace', 'n.oid')}
          AND n.nspname <> 'public' ORDER BY 1""",
    "tables": f"""
        SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')} ORDER BY 1""",
    "views": f"""
        SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')} ORDER BY 1""",
    "functions": f"""
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_NS} AND {_not_extension_member('pg_proc', 'p.oid')} ORDER BY 1""",
    "sequences": f"""
        SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')} ORDER BY 1""",
    "indexes": f"""
        SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('i', 'I') AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}
          AND {_not_extension_member('pg_class', 'c.oid')} ORDER BY 1""",
    "constraints": f"""
        SELECT n.nspname || '.' || coalesce(t.relname, ty.typname) || '.' || co.conname
        FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
        LEFT JOIN pg_class t ON t.oid = co.conrelid LEFT JOIN pg_type ty ON ty.oid = co.contypid
        WHERE {_USER_NS} AND co.conislocal AND co.contype <> 'n'  -- NOT NULL rows exist only from PostgreSQL 18
          AND (t.oid IS NULL OR {_not_extension_member('pg_class', 't.oid')})
        ORDER BY 1""",
    "policies": """
        SELECT schemaname || '.' || tablename || '.' || policyname FROM pg_policies ORDER BY 1""",
}


def take_inventory(pg: psycopg.Connection) -> dict:
    """Lists of object names per kind, sequence values, large-object count and extensions."""
    inventory: dict = {kind: [r[0] for r in pg.execute(query).fetchall()] for kind, query in QUERIES.items()}
    inventory["sequence_values"] = sequence_values(pg)
    inventory["large_objects"] = pg.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
    inventory["extensions"] = {
        name: {"version": version, "schema": schema, "config_tables": config or []}
        for name, version, schema, config in pg.execute(
            """
            SELECT e.extname, e.extversion, n.nspname,
                   (SELECT array_agg(cn.nspname || '.' || c.relname ORDER BY 1)
                    FROM unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid
                    JOIN pg_namespace cn ON cn.oid = c.relnamespace)
            FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname <> 'plpgsql' ORDER BY 1"""
        ).fetchall()
    }
    return inventory


def sequence_values(pg: psycopg.Connection) -> dict[str, int | None]:
    """last_value of each sequence the user owns (NULL until first use)."""
    rows = pg.execute(
        f"""
        SELECT s.schemaname || '.' || s.sequencename, s.last_value FROM pg_sequences s
        JOIN pg_namespace n ON n.nspname = s.schemaname
        JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = n.oid
        WHERE {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')} ORDER BY 1"""
    ).fetchall()
    return dict(rows)
