"""Fault injection: `kill -9` at random moments of real runs, then check what a user would check.

`make chaos` (or `python chaos/chaos.py --trials N`) starts an embedded PostgreSQL
with a source database and a restore destination, then runs N trials. Each
trial starts one CLI command (backup, restore, drill or retention) in its own
process group, kills it with SIGKILL after a random delay (the whole group,
or the parent alone as the OOM killer or a closed terminal does), runs the
*next* run (an unkilled backup) and checks the invariants of README's
"What we guarantee":

  manifest   every manifest in storage has its objects, with the recorded sha256 and size
  running    no history row is `running` once the next run has run
  complete   every `completed` row's manifest and archive are in storage
  leftovers  no throwaway server process, server directory or stage file is left
  good       the newest good backup of every target is still in storage
  dest       the restore destination is untouched or fully restored (its counts equal the backup's)

It prints a table of trials and checks, and exits 1 if any check failed.
Nothing here is mocked: the processes, the kills and the storage are real.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from backup_pipeline.core.dump import count_rows
from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.core.history import HistoryStore

CLI = str(Path(sys.executable).with_name("backup-pipeline"))
CHECKS = ("manifest", "running", "complete", "leftovers", "good", "dest")
KINDS = ("backup", "restore", "drill", "retention")
GOOD = ("verified", "checksum_ok")


class Lab:
    """The servers, folders and environment the trials share."""

    def __init__(self, root: Path, rows: int):
        self.root = root
        self.store = root / "store"
        self.stage = root / "stage"
        self.tmp = root / "tmp"
        for d in (self.store, self.stage, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        for d in (root, self.tmp):  # throwaway servers run as `nobody` in directories under these
            d.chmod(0o711)
        self.server = EphemeralPostgres(18, password="chaos-" + os.urandom(6).hex()).start()
        self.source = self.server.create_database("chaos_src")
        self.dest = self.server.create_database("chaos_dest")
        with psycopg.connect(self.source, autocommit=True) as pg:
            pg.execute("CREATE TABLE items (id bigint PRIMARY KEY, note text, at timestamptz DEFAULT now())")
            pg.execute("INSERT INTO items SELECT g, md5(g::text) || repeat('x', 40) FROM generate_series(1, %s) g",
                       (rows,))
            pg.execute("CREATE TABLE small AS SELECT g AS id FROM generate_series(1, 1000) g")
        self.reset_dest()
        targets = root / "backup_targets.yaml"
        targets.write_text(
            f"storage: {self.store.as_uri()}\n"
            "targets:\n"
            "  chaos:\n"
            "    dsn_env: CHAOS_SOURCE_URL\n"
            "    retention_days: 1\n"
            "    min_good_backups: 2\n"
            "    schedule: null\n"
            "    migrations_table: null\n"
            "  dest:\n"
            "    dsn_env: CHAOS_DEST_URL\n"
            "    restore_destination: true\n"
            "    drill: false\n"
            "    schedule: null\n"
            "    migrations_table: null\n"
        )
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(root / "dagster_home"),
            "BACKUP_TARGETS_FILE": str(targets),
            "BACKUP_STAGE_DIR": str(self.stage),
            "TMPDIR": str(self.tmp),
            "CHAOS_SOURCE_URL": self.source,
            "CHAOS_DEST_URL": self.dest,
        }
        for k in ("DATABASE_URL", "PROD_SUPABASE_DB_URL", "BACKUP_STORAGE_URL", "R2_BUCKET", "BACKUP_HISTORY_URL"):
            self.env.pop(k, None)
        (root / "dagster_home").mkdir(exist_ok=True)

    def history(self) -> HistoryStore:
        return HistoryStore(f"sqlite:///{self.root / 'dagster_home' / 'backup_history.sqlite'}")

    def age_backups(self) -> None:
        """Time passes: every backup is past its retention date, so retention always has work to do."""
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{self.root / 'dagster_home' / 'backup_history.sqlite'}")
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE backup_history SET retention_until = '2000-01-01 00:00:00.000000' "
                                 "WHERE status = 'completed'"))
        engine.dispose()

    def reset_dest(self) -> None:
        """The destination's own data: one table with a random row count, nothing of the backup's."""
        with psycopg.connect(self.dest, autocommit=True) as pg:
            pg.execute("DROP SCHEMA public CASCADE")
            pg.execute("CREATE SCHEMA public")
            pg.execute("CREATE TABLE dest_own AS SELECT g AS id FROM generate_series(1, %s) g",
                       (random.randint(100, 5000),))

    def dest_counts(self) -> dict[str, int]:
        with psycopg.connect(self.dest) as pg:
            pg.execute("SET row_security = off")
            return count_rows(pg)[0]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([CLI, *args], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def close(self) -> None:
        self.server.stop()


def command_for(kind: str, lab: Lab) -> list[str] | None:
    if kind == "backup":
        return ["backup", "--target", "chaos"]
    if kind == "drill":
        return ["drill", "--target", "chaos"]
    if kind == "retention":
        lab.age_backups()
        return ["retention"]
    good = [r for r in lab.history().list(target="chaos", limit=50)
            if r.status == "completed" and r.verification_status in GOOD]
    return ["restore", "--backup-id", good[0].id, "--to", "dest"] if good else None


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_manifests(lab: Lab) -> str | None:
    for manifest_path in lab.store.rglob("*.manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        for part in ("archive", "globals"):
            meta = manifest.get(part)
            if not meta:
                continue
            obj = lab.store / meta["key"]
            if not obj.exists():
                return f"{manifest_path.name}: {part} {meta['key']} missing"
            if meta.get("sha256") and sha256_file(obj) != (meta["sha256"], meta["size_bytes"]):
                return f"{manifest_path.name}: {part} does not match its sha256/size"
    return None


def uri_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def check_history(lab: Lab) -> tuple[str | None, str | None]:
    rows = lab.history().list(limit=10_000)
    running = [r.id[:8] for r in rows if r.status == "running"]
    missing = [r.id[:8] for r in rows if r.status == "completed"
               and not all(uri_path(u).exists() for u in (r.manifest_uri, r.archive_uri) if u)]
    return (f"running: {', '.join(running)}" if running else None,
            f"completed without objects: {', '.join(missing)}" if missing else None)


def check_leftovers(lab: Lab) -> str | None:
    problems = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(lab.tmp) in cmd or str(lab.stage) in cmd:
            problems.append(f"process {proc.pid} {cmd[:80]}")
    problems += [f"server dir {p.name}" for p in lab.tmp.glob("bp-pg*")]
    problems += [f"stage {p.relative_to(lab.stage)}" for p in lab.stage.rglob("*")
                 if p.is_file() and ".locks" not in p.parts]
    return "; ".join(problems[:4]) or None


def newest_good(lab: Lab, target: str):
    rows = [r for r in lab.history().list(target=target, limit=10_000)
            if r.status == "completed" and r.verification_status in GOOD]
    return rows[0] if rows else None


def check_good(lab: Lab, before: dict[str, str | None]) -> str | None:
    for target, backup_id in before.items():
        if backup_id is None:
            continue
        now = newest_good(lab, target)
        if now is None:
            return f"{target}: no good backup left (had {backup_id[:8]})"
        if not all(uri_path(u).exists() for u in (now.manifest_uri, now.archive_uri) if u):
            return f"{target}: newest good backup {now.id[:8]} has lost its objects"
    return None


def check_dest(lab: Lab, before: dict[str, int], expected: dict[str, int] | None) -> str | None:
    after = lab.dest_counts()
    if after == before or (expected is not None and after == expected):
        return None
    return f"destination changed but is not the backup: {dict(list(after.items())[:3])}"


def run_trial(lab: Lab, n: int, kind: str, durations: dict[str, float]) -> dict:
    args = command_for(kind, lab)
    if args is None:
        kind, args = "backup", command_for("backup", lab)
    expected = None
    if kind == "restore":
        record = lab.history().get(args[2])
        expected = record.row_counts
    dest_before = lab.dest_counts()
    good_before = {t: (g.id if (g := newest_good(lab, t)) else None) for t in ("chaos",)}
    delay = random.uniform(0.3, max(durations.get(kind, 4.0), 0.5) * 1.1)
    whole_group = random.random() < 0.5
    proc = lab.start(*args)
    try:
        proc.wait(timeout=delay)
        outcome = f"finished rc={proc.returncode}"
    except subprocess.TimeoutExpired:
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
        outcome = "killed group" if whole_group else "killed parent"
    time.sleep(0.5)  # children of a killed parent notice it (EOF, parent-death signal)
    recovery = lab.cli("backup", "--target", "chaos")
    results = {"trial": n, "kind": kind, "at": f"{delay:.1f}s", "outcome": outcome,
               "next": "ok" if recovery.returncode == 0 else f"rc={recovery.returncode}"}
    running, complete = check_history(lab)
    checks = {
        "manifest": check_manifests(lab),
        "running": running,
        "complete": complete,
        "leftovers": check_leftovers(lab),
        "good": check_good(lab, good_before),
        "dest": check_dest(lab, dest_before, expected),
    }
    results["checks"] = checks
    if recovery.returncode != 0:
        results["next_error"] = (recovery.stderr.strip().splitlines() or ["?"])[-1][:200]
    if kind == "restore" and lab.dest_counts() != dest_before:
        lab.reset_dest()
    return results


def measure(lab: Lab) -> dict[str, float]:
    """One unkilled run of each kind, so kill moments spread over each command's whole life."""
    durations = {}
    for kind in ("backup", "backup", "drill", "restore", "retention"):
        args = command_for(kind, lab)
        started = time.monotonic()
        result = lab.cli(*args)
        if result.returncode != 0:
            raise SystemExit(f"chaos set-up: `backup-pipeline {' '.join(args)}` failed: {result.stderr.strip()[-500:]}")
        durations[kind] = time.monotonic() - started
        if kind == "restore":
            lab.reset_dest()
    return durations


def print_table(rows: list[dict], durations: dict[str, float]) -> int:
    print("durations of unkilled runs: " + ", ".join(f"{k} {v:.1f}s" for k, v in durations.items()))
    header = f"{'#':>3} {'kind':9} {'kill at':>7} {'outcome':15} {'next':6} " + " ".join(f"{c:9}" for c in CHECKS)
    print(header)
    print("-" * len(header))
    failures = 0
    for r in rows:
        marks = " ".join(f"{'ok' if r['checks'][c] is None else 'FAIL':9}" for c in CHECKS)
        print(f"{r['trial']:>3} {r['kind']:9} {r['at']:>7} {r['outcome']:15} {r['next']:6} {marks}")
        for c in CHECKS:
            if r["checks"][c] is not None:
                failures += 1
                print(f"      {c}: {r['checks'][c]}")
        if "next_error" in r:
            print(f"      next run: {r['next_error']}")
    total = len(rows) * len(CHECKS)
    print(f"\n{len(rows)} trials, {total} invariant checks: {total - failures} passed, {failures} failed")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=int(os.environ.get("CHAOS_TRIALS", "24")))
    parser.add_argument("--rows", type=int, default=int(os.environ.get("CHAOS_ROWS", "400000")))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the lab folder for inspection")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` and CI stops still clean up the lab
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    print(f"chaos: {args.trials} trials, seed {seed} (rerun with --seed {seed})")
    root = Path(tempfile.mkdtemp(prefix="bp-chaos-"))
    lab = Lab(root, args.rows)
    try:
        durations = measure(lab)
        kinds = [KINDS[i % len(KINDS)] for i in range(args.trials)]
        random.shuffle(kinds)
        rows = [run_trial(lab, i + 1, kind, durations) for i, kind in enumerate(kinds)]
        return print_table(rows, durations)
    finally:
        lab.close()
        if args.keep:
            print(f"lab kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
