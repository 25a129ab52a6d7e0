# Two stages: build a virtualenv with the project and its dependencies, then a
# slim runtime with PostgreSQL client tools 14-18 from the PostgreSQL project's
# apt repository, so pg_dump always matches or exceeds the server's major
# (the embedded wheel's tools have no SSL, which Supabase needs).
# Runs the code location as a gRPC server; point a Dagster webserver/daemon at it.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY backup_pipeline ./backup_pipeline
RUN pip install --no-cache-dir --upgrade pip setuptools wheel \
 && pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      postgresql-client-14 postgresql-client-15 postgresql-client-16 postgresql-client-17 postgresql-client-18 \
 && apt-get purge -y curl gnupg && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 dagster
COPY --from=build /opt/venv /opt/venv
# load_from_defs_folder finds the project by its pyproject.toml, so the source
# tree sits beside it and is imported from there.
WORKDIR /opt/backup_pipeline
COPY pyproject.toml workspace.yaml ./
COPY backup_pipeline ./backup_pipeline
# The production instance: Postgres storage from DAGSTER_POSTGRES_URL, run queue, run monitoring.
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
RUN chown -R dagster /opt/dagster
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/backup_pipeline \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    BACKUP_STAGE_DIR=/tmp/backup_pipeline_stage
USER dagster
EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "backup_pipeline.definitions"]
