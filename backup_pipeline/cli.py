"""`backup-pipeline`: the command line over the same Dagster jobs the UI runs.

Every command exits 0 on success and non-zero with a one-line error on stderr;
`--json` prints machine-readable output on stdout only.
"""

import argparse
import gc
import os
import json
import re
import sys
from datetime import UTC, datetime, timedelta

from backup_pipeline.core.vocabulary import BACKUP_TYPES
from backup_pipeline.core.errors import BackupPipelineError
from backup_pipeline.core.redact import redact_text


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _fail(message: str, secrets: list[str | None] = ()) -> int:
    print(f"error: {redact_text(message, secrets).splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return 1


def _check_listed_target(name: str | None) -> None:
    """Refuse a misspelt --target, but still list a target that has history and is no longer configured."""
    from backup_pipeline.core.config import load_settings
    from backup_pipeline.launch import history

    if name is None:
        return
    settings = load_settings()
    if name not in settings.targets and not history().list(target=name, limit=1):
        settings.target(name)  # raises the unknown-target error naming the configured ones


def _full_dagster_home(exc: BaseException | None = None) -> str | None:
    from backup_pipeline.core.diskspace import full_disk_message

    return full_disk_message(os.environ.get("DAGSTER_HOME"), "DAGSTER_HOME", exc)


def _record_cut_short(target: str, started: datetime, message: str) -> None:
    """Mark what this command's run left behind as failed, if the history can still be written."""
    from backup_pipeline.launch import history

    try:
        store = history()
        for record in store.list(target=target, limit=5):
            if record.timestamp < started - timedelta(seconds=1):
                continue
            if record.status == "running":
                store.fail(record.id, message)
            elif record.status == "failed" and message not in (record.error or ""):
                store.fail(record.id, f"{message} ({record.error})", finished_at=record.finished_at,
                           duration_seconds=record.duration_seconds)
            elif record.status == "completed" and record.verification_status == "pending":
                store.set_verification(record.id, "failed", f"the run stopped before verifying it: {message}")
    except Exception:  # noqa: BLE001 - the history may live on the same full disk; the error line still goes out
        pass


def cmd_backup(args: argparse.Namespace) -> int:
    from backup_pipeline.core.config import load_settings
    from backup_pipeline.launch import backup_json, run_backup

    # An unknown target or a bad targets file fails here, before a run is launched and recorded.
    load_settings().adhoc_target(args.target, dsn_env="--dsn" if args.dsn else None, storage_url=args.storage)
    started = datetime.now(UTC)
    try:
        outcome, record = run_backup(
            args.target, backup_type=args.type, dsn=args.dsn, storage_url=args.storage, verbose=args.verbose
        )
    except Exception as exc:
        if (message := _full_dagster_home(exc)) is None:
            raise
        _record_cut_short(args.target, started, message)
        return _fail(message, [args.dsn])
    if not outcome.success and (message := _full_dagster_home()):
        _record_cut_short(args.target, started, message)
        return _fail(message, [args.dsn])
    if args.json and record is not None:
        _print_json(backup_json(record))
    elif record is not None and (outcome.success or record.status == "completed"):
        print(f"backup {record.id} of {record.target}: {record.status}, {record.size_mb} MB, {record.archive_uri}; "
              f"{_verification_text(record)}")
    if not outcome.success:
        return _fail(outcome.error or "backup failed", [args.dsn])
    return 0


def _verification_text(record) -> str:
    """What the drill proved about a backup, with its reason: verified / checksum_ok / drill error / failed."""
    if record.drill_error and (record.drilled_at is None or (record.drill_error_at or record.drilled_at) > record.drilled_at):
        return f"drill error, {record.verification_status}: {record.drill_error}"
    return f"{record.verification_status}: {record.verification_detail or 'not checked yet'}"


def cmd_list(args: argparse.Namespace) -> int:
    from backup_pipeline.launch import backup_json, history

    from backup_pipeline.defs.recovery import recover_outside_runs

    _check_listed_target(args.target)
    store = history()
    recover_outside_runs(store)
    records = store.list(target=args.target, limit=args.limit)
    if args.json:
        _print_json([backup_json(r) for r in records])
        return 0
    w = max([12, *(len(r.target) for r in records)])  # columns as wide as the longest target name
    print(f"{'started (UTC)':19} {'target':{w}} {'type':14} {'status':10} {'verified':12} {'size MB':>9}  id")
    for r in records:
        print(
            f"{r.timestamp:%Y-%m-%d %H:%M:%S} {r.target:{w}} {r.type:14} {r.status:10} "
            f"{r.verification_status:12} {r.size_mb if r.size_mb is not None else '-':>9}  {r.id}"
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from backup_pipeline.launch import run_restore

    if args.latest_verified and not args.target:
        return _fail("--latest-verified needs --target NAME (whose latest verified backup to restore)")
    outcome = run_restore(
        backup_id=args.backup_id, latest_verified_of=args.target if args.latest_verified else None,
        to_target=args.to, to_dsn=args.to_dsn, confirm=args.confirm, jobs=args.jobs, verbose=args.verbose,
    )
    if not outcome.success:
        # The job's message speaks of its run config; on the command line it is the --confirm flag.
        error = re.sub(r"set confirm to '([^']*)'", r"pass --confirm \1", outcome.error or "restore failed")
        return _fail(error, [args.to_dsn])
    result = outcome.output
    if args.json:
        _print_json({**result, "status": "restored", "dagster_run_id": outcome.run_id})
    else:
        safety = f" (safety backup {result['safety_backup_id']} taken first)" if result["safety_backup_id"] else ""
        print(f"restored backup {result['backup_id']} into {result['destination']}{safety}: "
              f"{sum(result['row_counts'].values())} rows in {len(result['row_counts'])} tables")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from backup_pipeline.core.config import load_settings
    from backup_pipeline.launch import backup_json, history, run_drill

    if args.backup_id:
        from backup_pipeline.core.drill import manifest_uri_of

        manifest_uri_of(history().get(args.backup_id))  # an unknown id or an attempt without manifest fails here
        names: list[str | None] = [args.target]
    elif args.target:
        load_settings().target(args.target)
        names = [args.target]
    else:
        names = sorted(load_settings().targets)
        if not names:
            return _fail("no target is configured, so there is nothing to drill: set DATABASE_URL to the database URL, "
                         "list targets in backup_targets.yaml (or the file BACKUP_TARGETS_FILE names), or pass --backup-id")
    results = []
    for name in names:
        started = datetime.now(UTC)
        outcome = run_drill(name, args.backup_id, verbose=args.verbose)
        record = _drilled_record(history(), name, args.backup_id, started)
        result = {"target": name or (record.target if record else None), "passed": outcome.success,
                  "dagster_run_id": outcome.run_id, "error": None if outcome.success else outcome.error or "drill failed"}
        results.append({**(backup_json(record) if record else {"backup_id": None}), **result})
        if not args.json:
            print(_drill_line(result, record), flush=True)
    if args.json:
        _print_json(results[0] if args.target or args.backup_id else results)  # no --target: one object per target
    failed = [r for r in results if not r["passed"]]
    if len(failed) == 1 and len(results) == 1:
        return _fail(failed[0]["error"])
    if failed:
        return _fail(f"{len(failed)} of {len(results)} drills failed: " + "; ".join(
            f"{r['target']}: {r['error']}" for r in failed))
    return 0


def _drilled_record(store, target: str | None, backup_id: str | None, since: datetime):
    """The backup this drill run looked at: the given one, else the target's backup drilled (or not) since `since`."""
    if backup_id:
        return store.get(backup_id)
    cutoff = since - timedelta(seconds=1)
    touched = [r for r in store.list(target=target, limit=20)
               if max(r.drilled_at or cutoff, r.drill_error_at or cutoff) > cutoff]
    return max(touched, key=lambda r: max(r.drilled_at or cutoff, r.drill_error_at or cutoff), default=None)


def _drill_line(result: dict, record) -> str:
    if record is None:
        return (f"drill of target {result['target']}: no backup in storage to drill" if result["passed"]
                else f"drill of target {result['target']}: failed: {result['error']}")
    return f"drill of backup {record.id} ({record.target}): {_verification_text(record)}"


def cmd_verify(args: argparse.Namespace) -> int:
    from backup_pipeline.core.backup import check_stored, split_backup_uri
    from backup_pipeline.core.config import load_settings
    from backup_pipeline.core.storage import open_storage
    from backup_pipeline.launch import backup_json, history

    store = history()
    record = store.get(args.backup_id)
    if not record.manifest_uri:
        return _fail(f"backup {record.id} is {record.status}: it has no manifest to verify")
    base, key = split_backup_uri(record.manifest_uri)
    storage = open_storage(base, load_settings().s3)
    try:
        digest, size, compared = check_stored(storage, key, record)  # the same check as the verify step
    except BackupPipelineError as exc:
        if record.status == "completed":
            record = store.set_verification(record.id, "failed", str(exc))
        if args.json:
            _print_json({**backup_json(record), "ok": False, "error": str(exc)})
        return _fail(str(exc))
    if record.verification_status in ("pending", "failed"):
        record = store.set_verification(record.id, "checksum_ok", f"sha256 {digest} and size {size} match the manifest")
    if args.json:
        _print_json({**backup_json(record), "ok": True, "error": None, "checked_sha256": digest, "checked_size_bytes": size,
                     "manifest_matches_history": bool(compared)})
        return 0
    note = (", and the manifest matches the history row" if compared else
            "; only the checksum was checked (the history row was rebuilt from this manifest, nothing to compare)")
    print(f"backup {record.id}: {storage.uri(key)} matches its manifest (sha256 {digest[:16]}…, {size} bytes){note}")
    return 0


def cmd_migration_event(args: argparse.Namespace) -> int:
    from backup_pipeline.core.config import load_settings
    from backup_pipeline.launch import history, parse_duration, wait_for_migration_backup

    timeout = parse_duration(args.timeout)
    load_settings().target(args.target)  # an unknown target fails now, not in the sensor
    event = history().record_migration_event(args.target, args.migration)
    if not args.wait:
        _print_json(event.to_dict()) if args.json else print(f"migration event {event.id} recorded ({event.status})")
        return 0
    ok, message = wait_for_migration_backup(event.id, timeout)
    if args.json:
        _print_json({**history().get_migration_event(event.id).to_dict(), "ok": ok, "message": message})
    if not ok:
        return _fail(message)
    if not args.json:
        print(message)
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    from backup_pipeline.resources import TARGET_TAG

    ui = args.url.rstrip("/")
    parts = urlsplit(ui)
    client = DagsterGraphQLClient(parts.hostname, port_number=parts.port, use_https=parts.scheme == "https",
                                  path_prefix=parts.path, timeout=30)
    try:
        run_id = client.submit_job_execution(
            "backup", run_config={"ops": {"dump": {"config": {"target": args.target, "type": args.type}}}},
            tags={TARGET_TAG: args.target},
        )
    except (DagsterGraphQLClientError, OSError) as exc:
        return _fail(f"cannot launch a run on the Dagster webserver at {ui}: {exc} (is it running? set --url or BACKUP_UI_URL)")
    url = f"{ui}/runs/{run_id}"
    _print_json({"run_id": run_id, "url": url}) if args.json else print(url)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from backup_pipeline.launch import history

    from backup_pipeline.defs.recovery import recover_outside_runs

    _check_listed_target(args.target)
    store = history()
    recover_outside_runs(store)
    rows = store.kpis(args.target)
    if args.json:
        _print_json(rows)
        return 0
    w = max([14, *(len(r["target"]) for r in rows)])
    print(f"{'target':{w}} {'30d backups':>11} {'success %':>9} {'avg MB':>8} {'avg s':>7} {'verified %':>10}  "
          f"{'last backup (UTC)':19}  last drill")
    for r in rows:
        def fmt(v, spec):
            return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])
        last_backup = f"{r['last_backup_at']:%Y-%m-%d %H:%M}" if r.get("last_backup_at") else "-"
        drill = "-" if not r.get("last_drill_at") else f"{r['last_drill_at']:%Y-%m-%d %H:%M} {'passed' if r.get('last_drill_passed') else 'FAILED'}"
        print(f"{r['target']:{w}} {r['total_30d']:>11} {fmt(r['success_rate_30d'], '9.1f')} "
              f"{fmt(r['avg_size_mb_30d'], '8.2f')} {fmt(r['avg_duration_seconds_30d'], '7.1f')} "
              f"{fmt(r['verified_share_30d'], '10.1f')}  {last_backup:19}  {drill}")
    return 0


def cmd_history_sync(args: argparse.Namespace) -> int:
    from backup_pipeline.core import catalog
    from backup_pipeline.core.config import load_settings
    from backup_pipeline.core.storage import open_storage
    from backup_pipeline.launch import history

    settings = load_settings()
    store = history()
    if args.storage:
        if not args.target:
            return _fail("--storage needs --target (whose backups to read)")
        sources = [(args.target, args.storage)]
    else:
        names = [args.target] if args.target else sorted(settings.targets)
        sources = [(name, settings.target(name).storage_url) for name in names]
    summary = []
    for target, url in sources:
        configured = settings.targets.get(target)
        added, existing = catalog.sync_history(open_storage(url, settings.s3), target, store,
                                               retention_days=configured.retention_days if configured else None)
        summary.append({"target": target, "storage": url, "added": added, "already_recorded": existing})
    if args.json:
        _print_json(summary)
    else:
        for row in summary:
            print(f"{row['target']}: {row['added']} backups added from {row['storage']}, {row['already_recorded']} already recorded")
    return 0


def cmd_keep(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from backup_pipeline.core.config import load_settings
    from backup_pipeline.core.history.models import KEEP_FOREVER
    from backup_pipeline.core.object_lock import extend_backup_locks
    from backup_pipeline.launch import backup_json, history

    store = history()
    record = store.get(args.backup_id)
    if record.status == "expired":
        return _fail(f"backup {record.id} has expired (retention ran on {record.expired_at:%Y-%m-%d}): it can no longer be kept")
    if not args.forever and args.days is None:
        return _fail("give --days N or --forever")
    if not args.forever and not 1 <= args.days <= 36500:
        return _fail(f"--days {args.days}: give 1 to 36500 days, or --forever")
    # More days on top of the current date; a backup kept forever counts from now instead.
    start = datetime.now(UTC) if record.retention_until >= KEEP_FOREVER else max(record.retention_until, datetime.now(UTC))
    until = None if args.forever else start + timedelta(days=args.days)
    record = store.set_retention(record.id, until)
    configured = load_settings().targets.get(record.target)
    locked = extend_backup_locks(record, configured.object_lock_mode if configured else None)
    if args.json:
        _print_json(backup_json(record))
    else:
        print(f"backup {record.id}: kept {'forever' if args.forever else f'until {record.retention_until:%Y-%m-%d %H:%M} UTC'}"
              + (f"; Object Lock extended on {len(locked)} objects" if locked else ""))
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from backup_pipeline.launch import run_retention

    outcome = run_retention(dry_run=args.dry_run, target=args.target, verbose=args.verbose)
    if not outcome.success:
        return _fail(outcome.error or "retention failed")
    plan = outcome.output
    if args.json:
        _print_json({**plan, "dry_run": args.dry_run})
        return 0
    verb = "would" if args.dry_run else "did"
    for item in plan["expire"]:
        objects = f", {verb} delete {len(item['objects'])} objects" if item["delete_objects"] else ", objects kept"
        print(f"expire {item['backup_id']} ({item['target']}, retention until {item['retention_until'][:10]}){objects}")
        for uri in item["objects"] if item["delete_objects"] else []:
            print(f"    {uri}")
    for item in plan["kept"]:
        print(f"keep   {item['backup_id']}: {item['why']}")
    for item in plan["orphans"]:
        print(f"sweep  {item['object']} (no manifest: interrupted upload)")
    for item in plan["incomplete_uploads"]:
        print(f"abort  unfinished multipart upload {item['key']} ({item['storage']})")
    for item in plan.get("partial_files", []):
        print(f"sweep  {item['file']} (temp file of a killed local upload)")
    if not any(plan.get(k) for k in ("expire", "kept", "orphans", "incomplete_uploads", "partial_files")):
        print("nothing to expire")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from backup_pipeline.demo.run import run_demo

    return run_demo(verbose=args.verbose)


def cmd_dev(args: argparse.Namespace) -> int:
    from backup_pipeline.demo.run import run_dev

    return run_dev(port=args.port)


def cmd_instance_init(args: argparse.Namespace) -> int:
    from backup_pipeline.dagster_home import init_instance

    home = init_instance(postgres=args.postgres, force=args.force, print_fn=lambda line: print(line, file=sys.stderr))
    print(f"Dagster instance ready in {home} (storage created or migrated); start dagster-daemon and dagster-webserver now")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backup-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("backup", help="back up one target now")
    p.add_argument("--target", required=True, help="target name (from backup_targets.yaml or the environment)")
    p.add_argument("--dsn", help="database URL (prefer the target's environment variable: argv is visible to ps)")
    p.add_argument("--storage", help="file:///dir or s3://bucket/prefix (overrides the target's storage)")
    p.add_argument("--type", default="manual", choices=BACKUP_TYPES)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("list", help="list recorded backups, newest first")
    p.add_argument("--target")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("restore", help="restore a backup into a database (a non-empty one is backed up first)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--backup-id")
    which.add_argument("--latest-verified", action="store_true", help="the newest verified backup of --target")
    p.add_argument("--target", help="with --latest-verified: whose backup")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", help="a target marked restore_destination or protected")
    where.add_argument("--to-dsn", help="destination database URL")
    p.add_argument("--confirm", help="the destination's name, required for protected targets")
    p.add_argument("--jobs", type=int, default=1, help="ignored, kept for scripts: a restore runs as one transaction, so one pg_restore")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("drill", help="restore a stored backup into a throwaway server and verify it")
    p.add_argument("--target", help="default: every configured target")
    p.add_argument("--backup-id", help="default: the newest backup of the target in storage")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("verify", help="check a stored backup's sha256 and size against its manifest")
    p.add_argument("--backup-id", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("migration-event", help="record a migration about to be applied; --wait gates on its backup")
    p.add_argument("--target", required=True)
    p.add_argument("--migration", required=True, help="migration id (e.g. the migration file's version)")
    p.add_argument("--wait", action="store_true", help="block until the pre-migration backup is verified (exit 0) or failed")
    p.add_argument("--timeout", default="30m", help="with --wait: give up after this long (e.g. 30m, 90s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migration_event)

    p = sub.add_parser("trigger", help="launch a backup on a running Dagster webserver; prints the run's URL")
    p.add_argument("--target", required=True)
    p.add_argument("--type", default="manual", choices=BACKUP_TYPES)
    p.add_argument("--url", default=os.environ.get("BACKUP_UI_URL", "http://127.0.0.1:3000"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("status", help="30-day KPIs per target: success rate, sizes, durations, drills")
    p.add_argument("--target")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", help="maintain the history database")
    hsub = p.add_subparsers(dest="history_command", required=True)
    h = hsub.add_parser("sync", help="rebuild or repair backup_history from the manifests in storage")
    h.add_argument("--target")
    h.add_argument("--storage", help="read this storage URL instead of the target's")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_history_sync)

    p = sub.add_parser("keep", help="extend a backup's retention, or keep it forever")
    p.add_argument("backup_id")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--days", type=int, help="keep this many more days")
    how.add_argument("--forever", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keep)

    p = sub.add_parser("retention", help="expire backups past their retention now (the daily job does it at 03:00 UTC)")
    p.add_argument("--dry-run", action="store_true", help="list exactly what would go; change nothing")
    p.add_argument("--target")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser("demo", help="back up and restore a sample database on embedded PostgreSQL")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("dev", help="open the Dagster UI on a running demo database")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("instance", help="the Dagster instance in $DAGSTER_HOME (default ~/.backup_pipeline/dagster_home)")
    isub = p.add_subparsers(dest="instance_command", required=True)
    i = isub.add_parser("init", help="write its dagster.yaml and create or migrate its storage (before daemon and webserver start)")
    i.add_argument("--postgres", action="store_true", help="storage in PostgreSQL at $DAGSTER_POSTGRES_URL (deploy/dagster.yaml)")
    i.add_argument("--force", action="store_true", help="replace a dagster.yaml that differs from the shipped one")
    i.set_defaults(func=cmd_instance_init)
    # -v also after the command (`backup --target x -v`); SUPPRESS keeps a -v given before it.
    for command in _commands(parser):
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show Dagster's step logs")
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the commands that run something (leaves: `history sync`, not `history`)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [leaf for a in subs for p in a.choices.values() for leaf in _commands(p)] if subs else [parser]


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command's own parser, so an error about its flags shows its usage, not the top-level one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _chosen_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except BackupPipelineError as exc:
        return _fail(str(exc), [getattr(args, "dsn", None), getattr(args, "to_dsn", None)])
    except KeyboardInterrupt:
        return _fail("interrupted")
    except Exception as exc:
        if (message := _full_dagster_home(exc)) is None:
            raise
        return _fail(message)
    finally:
        # Spare the interpreter a last collection over Dagster's large object graph at exit (~0.5 s).
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
