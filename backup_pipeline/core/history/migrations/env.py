"""Alembic environment for the backup history, configured in code (no alembic.ini).

`backup_pipeline.core.history.migrate` hands over an open connection in
`config.attributes["connection"]`; on PostgreSQL both the table and Alembic's
version table live in schema `public`, whatever the role's search_path says.
"""

import sqlalchemy as sa
from alembic import context

from backup_pipeline.core.history.models import PG_SCHEMA, metadata

config = context.config


def _version_table_schema(dialect_name: str) -> str | None:
    return PG_SCHEMA if dialect_name == "postgresql" else None


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # With the version table pinned to "public", autogenerate no longer
    # recognises it as its own and would propose dropping it.
    return not (type_ == "table" and name == "alembic_version")


def run_offline() -> None:
    url = sa.engine.make_url(config.get_main_option("sqlalchemy.url"))
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        version_table_schema=_version_table_schema(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            _run_on(connection)
    else:
        _run_on(connection)


def _run_on(connection: sa.Connection) -> None:
    dialect = connection.dialect.name
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=_version_table_schema(dialect),
        include_object=_include_object,
        render_as_batch=dialect == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
