"""Run locks and recovery: a run whose process was killed -9 is told from a live one, and its leftovers resolved."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_pipeline.core import liveness
from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.backup import build_manifest, publish
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.history import HistoryStore
from backup_pipeline.core.recovery import recover
from backup_pipeline.core.retention import RetentionPlan, apply_retention, find_incomplete
from backup_pipeline.core.ephemeral import free_port
from backup_pipeline.core.storage import open_storage
from backup_pipeline.core.storage.local import CHUNK
from backup_pipeline.core.storage.s3 import S3Settings


def _holder(code: str) -> subprocess.Popen:
    """A child python that runs code, prints 'ready' and sleeps until killed."""
    script = textwrap.dedent(code) + "\nprint('ready', flush=True)\nimport time; time.sleep(120)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_run_lock_tells_a_live_run_from_a_killed_one(tmp_path):
    run_id = str(uuid.uuid4())
    proc = _holder(f"from backup_pipeline.core.liveness import hold_run_lock; hold_run_lock({str(tmp_path)!r}, {run_id!r})")
    try:
        # Dagster's say-so never outweighs a live lock holder.
        assert not liveness.RunJudge(tmp_path, lambda _r: liveness.RUN_TERMINAL).dead(run_id)
        assert not liveness.remove_dead_lock(tmp_path, run_id)
    finally:
        _kill(proc)
    judge = liveness.RunJudge(tmp_path, lambda _r: liveness.RUN_ACTIVE)
    assert judge.verdict(run_id) == (True, "its process is gone (run lock free)")
    assert liveness.remove_dead_lock(tmp_path, run_id)
    assert list((tmp_path / liveness.LOCK_DIR).iterdir()) == []


@pytest.mark.parametrize("state,dead", [(liveness.RUN_TERMINAL, True), (liveness.RUN_MISSING, True),
                                        (liveness.RUN_ACTIVE, False), (None, False)])
def test_without_a_lock_file_the_dagster_run_status_decides(tmp_path, state, dead):
    assert liveness.RunJudge(tmp_path, lambda _r: state).dead(str(uuid.uuid4())) is dead


def test_the_current_run_is_never_dead(tmp_path):
    run_id = str(uuid.uuid4())
    assert not liveness.RunJudge(tmp_path, lambda _r: liveness.RUN_MISSING, current_run=run_id).dead(run_id)


def _running_backup(history, storage, dsn, stage, run_id, *, published: bool):
    """A backup row left `running` by a run that died after dumping (and after publishing, if published)."""
    record = history.start(target="shop", type="daily", dagster_run_id=run_id)
    names = BackupNames.for_backup("shop", record.timestamp, "zstd", record.id)
    result = dump_database(dsn, stage / run_id, names)
    if published:
        publish(storage, names, result, build_manifest(backup_id=record.id, target="shop", backup_type="daily",
                                                       names=names, dump=result, dagster_run_id=run_id))
    return record, result


def test_dead_rows_are_resolved_from_storage_and_dead_stages_deleted(tmp_path, source_dsn):
    history = HistoryStore(f"sqlite:///{tmp_path / 'h.sqlite'}")
    url = f"file://{tmp_path / 'storage'}"
    storage = open_storage(url)
    stage = tmp_path / "stage"
    dead_run, uploaded_run, live_run = (str(uuid.uuid4()) for _ in range(3))
    interrupted, _ = _running_backup(history, storage, source_dsn, stage, dead_run, published=False)
    uploaded, result = _running_backup(history, storage, source_dsn, stage, uploaded_run, published=True)
    live = history.start(target="shop", type="daily", dagster_run_id=live_run)
    (stage / live_run).mkdir()
    proc = _holder(f"from backup_pipeline.core.liveness import hold_run_lock; hold_run_lock({str(stage)!r}, {live_run!r})")
    try:
        states = {dead_run: liveness.RUN_MISSING, uploaded_run: liveness.RUN_TERMINAL}
        judge = liveness.RunJudge(stage, states.get)
        found = recover(history, judge, open_storage=open_storage, configured_storage={"shop": url}.get)
        assert history.get(live.id).status == "running" and (stage / live_run).is_dir()
    finally:
        _kill(proc)

    failed = history.get(interrupted.id)
    assert failed.status == "failed" and failed.error == f"interrupted: the run {dead_run} died before finishing"
    done = history.get(uploaded.id)
    assert (done.status, done.verification_status) == ("completed", "checksum_ok")
    assert (done.sha256, done.size_bytes, done.row_counts) == (result.archive_sha256, result.archive_size, result.row_counts)
    assert done.manifest_uri.endswith(".manifest.json") and done.archive_uri.startswith(url)
    assert sorted(found.failed + found.completed) == sorted([interrupted.id, uploaded.id])
    assert sorted(p.name for p in found.stage_dirs_removed) == sorted([dead_run, uploaded_run])
    assert sorted(p.name for p in stage.iterdir()) == sorted([".locks", live_run])

    # Next time round the live run's process is gone too (lock free, and Dagster never heard of it).
    recover(history, liveness.RunJudge(stage, lambda _r: liveness.RUN_ACTIVE), open_storage=open_storage,
            configured_storage=lambda _t: None)
    assert history.get(live.id).status == "failed"
    assert sorted(p.name for p in stage.iterdir()) == [".locks"] and not list((stage / ".locks").iterdir())


def test_a_dead_row_is_left_running_while_its_storage_cannot_be_read(tmp_path):
    history = HistoryStore(f"sqlite:///{tmp_path / 'h.sqlite'}")
    run_id = str(uuid.uuid4())
    record = history.start(target="shop", type="daily", dagster_run_id=run_id)
    (tmp_path / run_id).mkdir()
    nowhere = S3Settings(endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="k", secret_access_key="s",
                         max_attempts=0)
    found = recover(history, liveness.RunJudge(tmp_path, lambda _r: liveness.RUN_MISSING),
                    open_storage=lambda url: open_storage(url, nowhere), configured_storage=lambda _t: "s3://gone/b")
    assert history.get(record.id).status == "running" and found.failed == found.completed == []
    assert "is left running" in found.warnings[0] and "the next run retries" in found.warnings[0]
    assert not (tmp_path / run_id).exists()  # its stage can go all the same


def _killed_local_upload(storage_root: Path, key: str) -> Path:
    """Kill -9 a real LocalStorage.put_file half-way (its source is a FIFO that never ends)."""
    fifo = storage_root.parent / f"fifo-{uuid.uuid4().hex[:6]}"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from backup_pipeline.core.storage.local import LocalStorage
        LocalStorage({storage_root.as_uri()!r}).put_file({str(fifo)!r}, {key!r})
    """)])
    with open(fifo, "wb") as feed:
        feed.write(b"x" * (CHUNK + 1000))  # put_file copies in CHUNK reads: one gets written
        feed.flush()
        partial_dir = storage_root / key.rpartition("/")[0]
        for _ in range(200):
            partials = [p for p in partial_dir.glob(".*partial-*")] if partial_dir.is_dir() else []
            if partials and partials[0].stat().st_size >= CHUNK:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    fifo.unlink()
    (partial,) = partials
    return partial


def test_retention_sweeps_temp_files_of_killed_local_uploads_only(tmp_path):
    root = tmp_path / "storage"
    storage = open_storage(root.as_uri())
    history = HistoryStore(f"sqlite:///{tmp_path / 'h.sqlite'}")
    old = _killed_local_upload(root, "shop/2026/01/01/shop_20260101T000000Z_aaaa.dump.zst")
    recent = _killed_local_upload(root, "shop/2026/01/02/shop_20260102T000000Z_bbbb.dump.zst")
    day_ago = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    os.utime(old, (day_ago, day_ago))
    minute_ago = (datetime.now(UTC) - timedelta(minutes=5)).timestamp()
    os.utime(recent, (minute_ago, minute_ago))
    # A write in progress: its writer is alive and holds the temp file, however old it looks.
    live_dir = root / "shop/2026/01/03"
    live_dir.mkdir(parents=True)
    live = live_dir / ".shop_20260103T000000Z_cccc.dump.zst.partial-live"
    proc = _holder(f"""
        import fcntl
        f = open({str(live)!r}, "xb"); fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    """)
    try:
        os.utime(live, (day_ago, day_ago))
        plan = RetentionPlan()
        find_incomplete(storage, storage.url, "shop", datetime.now(UTC), plan)
        assert sorted(p.uri for _t, _u, p in plan.partial_files) == sorted([old.as_uri(), recent.as_uri()])
        apply_retention(plan, history, open_storage, dry_run=False)
        assert not old.exists() and not recent.exists() and live.exists()
    finally:
        _kill(proc)
    logged = history.retention_log(target="shop")
    assert sorted(e["object_uri"] for e in logged if e["action"] == "delete_partial") == sorted([old.as_uri(), recent.as_uri()])
    assert list(storage.list_keys("shop/")) == []
