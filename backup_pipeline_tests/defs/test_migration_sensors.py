"""Migration-triggered backups: events, the gate command, and the migrations-table watcher."""

import json

import dagster as dg
import psycopg

from backup_pipeline.cli import main
from backup_pipeline.definitions import defs
from backup_pipeline.defs.migrations.sensors import post_migration_backup_sensor, pre_migration_backup_sensor
from backup_pipeline.resources import BackupSettings

RESOURCES = {"backup_settings": BackupSettings()}


def evaluate(sensor, instance, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], cursor, result.skip_message
    skip = result.skip_reason.skip_message if result.skip_reason else None
    return list(result.run_requests or []), result.cursor, skip


def launch(request: dg.RunRequest, instance) -> dg.ExecuteInProcessResult:
    """What the daemon does with a RunRequest, in process."""
    return defs().resolve_job_def("backup").execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=instance, resources=RESOURCES,
        partition_key=request.partition_key, raise_on_error=False,
    )


def record(capsys, *args: str) -> dict:
    assert main(["migration-event", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_two_events_for_one_migration_make_one_backup(configure, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False}}, {"SHOP_URL": source_dsn})
    first = record(capsys, "--target", "shop", "--migration", "20261125_add_index")
    second = record(capsys, "--target", "shop", "--migration", "20261125_add_index")
    assert first["id"] == second["id"]
    with dg.DagsterInstance.get() as instance:
        requests, cursor, _ = evaluate(pre_migration_backup_sensor, instance)
        assert [r.run_key for r in requests] == [first["id"]]
        assert requests[0].run_config["ops"]["dump"]["config"] == {"type": "pre-migration"}
        assert requests[0].partition_key == "shop"  # the partition is the target
        assert requests[0].tags["backup_pipeline/migration_id"] == "20261125_add_index"
        again, _, skip = evaluate(pre_migration_backup_sensor, instance, cursor)
        assert again == [] and "no migration events" in skip


def test_events_recorded_while_the_daemon_was_down_are_all_picked_up_once(configure, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn})
    ids = [record(capsys, "--target", "shop", "--migration", f"m{i}")["id"] for i in range(3)]
    with dg.DagsterInstance.get() as instance:
        requests, cursor, _ = evaluate(pre_migration_backup_sensor, instance)
        assert [r.run_key for r in requests] == ids
        late = record(capsys, "--target", "shop", "--migration", "m3")["id"]
        requests, _, _ = evaluate(pre_migration_backup_sensor, instance, cursor)
        assert [r.run_key for r in requests] == [late]


def _daemon_tick(instance) -> list[dg.ExecuteInProcessResult]:
    requests, _, _ = evaluate(pre_migration_backup_sensor, instance)
    return [launch(r, instance) for r in requests]


def test_gate_passes_once_the_pre_migration_backup_is_verified(configure, backup_env, source_dsn, capsys):
    """The deploy script's sequence: record the event, the daemon backs up, the gate (same command) lets it through."""
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn})
    record(capsys, "--target", "shop", "--migration", "v42")
    with dg.DagsterInstance.get() as instance:
        [run] = _daemon_tick(instance)
    assert run.success
    assert main(["migration-event", "--target", "shop", "--migration", "v42", "--wait", "--timeout", "2m"]) == 0
    assert "is verified" in capsys.readouterr().out
    [row] = backup_env.history().list(target="shop")
    assert (row.type, row.status, row.verification_status) == ("pre-migration", "completed", "verified")


def test_gate_fails_when_the_backup_fails(configure, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn.replace("password=", "password=wrong")})
    record(capsys, "--target", "shop", "--migration", "v43")
    with dg.DagsterInstance.get() as instance:
        [run] = _daemon_tick(instance)
    assert not run.success
    assert main(["migration-event", "--target", "shop", "--migration", "v43", "--wait", "--timeout", "2m"]) == 1
    assert "password authentication failed" in capsys.readouterr().err


def test_gate_times_out_when_no_daemon_launches_the_backup(configure, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn})
    assert main(["migration-event", "--target", "shop", "--migration", "v44", "--wait", "--timeout", "1s"]) == 1
    assert "is the Dagster daemon running?" in capsys.readouterr().err


def test_post_migration_sensor_backs_up_after_a_new_version(configure, source_dsn, empty_source_dsn):
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA supabase_migrations; "
                     "CREATE TABLE supabase_migrations.schema_migrations (version text PRIMARY KEY, name text); "
                     "INSERT INTO supabase_migrations.schema_migrations VALUES ('20261101000000', 'init')")
    configure({"shop": {"dsn_env": "SHOP_URL"}, "other": {"dsn_env": "OTHER_URL"}},
              {"SHOP_URL": source_dsn, "OTHER_URL": empty_source_dsn})
    with dg.DagsterInstance.get() as instance:
        requests, cursor, skip = evaluate(post_migration_backup_sensor, instance)
        assert requests == [] and "other" in skip and "has no table supabase_migrations.schema_migrations" in skip
        assert json.loads(cursor) == {"shop": "20261101000000"}
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO supabase_migrations.schema_migrations VALUES ('20261125093000', 'add_index')")
        requests, cursor, _ = evaluate(post_migration_backup_sensor, instance, cursor)
        assert [r.run_key for r in requests] == ["shop:post-migration:20261125093000"]
        assert requests[0].run_config["ops"]["dump"]["config"]["type"] == "post-migration"
        assert evaluate(post_migration_backup_sensor, instance, cursor)[0] == []
