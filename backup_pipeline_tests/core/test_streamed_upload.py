"""Dump and upload overlap: the archive streams into storage while pg_dump runs, with no stage copy.

The S3 endpoint is moto behind benchmarks/throttle_proxy.py (a slow link), so the
upload, not pg_dump, sets the pace; the tests check what a user would: the parts
stored while pg_dump was still alive, the stage staying empty, equal part sizes,
and nothing under the key when a stream is abandoned.
"""

import hashlib
import sys
import threading
from pathlib import Path

import boto3
import psutil
import psycopg
import pytest

from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.errors import StorageError
from backup_pipeline.core.storage import LocalStorage, S3Settings, S3Storage
from backup_pipeline.core.storage.s3 import MiB
from backup_pipeline_tests.fix_pg import new_database
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from proc_sampler import DirSampler  # noqa: E402
from throttle_proxy import ThrottleProxy  # noqa: E402

PART = 5 * MiB


@pytest.fixture(scope="module")
def hex_dsn(pg_server):
    """~40 MB of pg_dump output that codec 'none' keeps as is: eight 5 MiB parts and a short last one.

    At most max_concurrency + 1 parts wait in memory, so pg_dump cannot finish before several parts
    are in S3: the overlap check does not depend on how fast this machine is.
    """
    dsn = new_database(pg_server.dsn(), "bp_stream")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((-g)::text) AS v "
                     "FROM generate_series(1, 600000) g")
    return dsn


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY_ID,
                        aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1")


def _stored_parts(client, bucket: str) -> int:
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sum(len(client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
               for u in uploads)


def _pg_dump_alive() -> bool:
    return any(p.name() == "pg_dump" for p in psutil.Process().children(recursive=True))


def test_a_backup_to_a_slow_s3_uploads_parts_while_pg_dump_runs(hex_dsn, s3_server, s3_bucket, tmp_path):
    port = int(s3_server.rsplit(":", 1)[1])
    client = _client(s3_server)
    stage = tmp_path / "stage"
    seen = {"parts_while_dumping": 0}
    with ThrottleProxy(upstream_port=port, mbit_per_s=80) as proxy:
        storage = S3Storage(f"s3://{s3_bucket}/b", S3Settings(
            endpoint_url=f"http://127.0.0.1:{proxy.port}", access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY, region="us-east-1", part_size=PART, max_concurrency=2))
        names = BackupNames.for_backup("shop", __import__("datetime").datetime(2026, 12, 1), "none", "abcdef12")
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.1):
                if _pg_dump_alive():
                    seen["parts_while_dumping"] = max(seen["parts_while_dumping"], _stored_parts(client, s3_bucket))

        watcher = threading.Thread(target=watch)
        stage_peak = DirSampler(stage)
        stage_peak.start()
        watcher.start()
        try:
            result = dump_database(hex_dsn, stage, names, level=1, storage=storage)
        finally:
            done.set()
            watcher.join()
            stage_peak.stop()
    assert result.archive_uri == storage.uri(names.archive)
    assert result.archive_size > 3 * PART
    assert seen["parts_while_dumping"] >= 2, "no part reached S3 before pg_dump ended: dump and upload did not overlap"
    assert stage_peak.peak < PART, f"the stage held {stage_peak.peak} bytes: the archive was staged"
    head = client.head_object(Bucket=s3_bucket, Key=f"b/{names.archive}", PartNumber=1)
    assert head["ContentLength"] == PART and int(head["PartsCount"]) == -(-result.archive_size // PART)
    body = client.get_object(Bucket=s3_bucket, Key=f"b/{names.archive}")["Body"].read()
    assert (len(body), hashlib.sha256(body).hexdigest()) == (result.archive_size, result.archive_sha256)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_stream_shorter_than_a_part_is_one_put(s3_settings, s3_bucket):
    storage = S3Storage(f"s3://{s3_bucket}", s3_settings)
    with storage.open_write("a/x.bin", 100) as out:
        out.write(b"small")
        out.commit()
    assert storage.get_bytes("a/x.bin") == b"small"


def test_an_abandoned_s3_stream_leaves_no_object_and_no_parts(s3_settings, s3_bucket):
    storage = S3Storage(f"s3://{s3_bucket}", s3_settings)
    with pytest.raises(RuntimeError), storage.open_write("a/x.bin", 100 * MiB) as out:
        out.write(b"x" * (2 * storage.settings.part_size + 10))
        raise RuntimeError("the dump failed")
    assert not storage.exists("a/x.bin")
    assert storage.list_incomplete_uploads() == []


def test_a_failing_part_fails_the_stream_with_a_storage_error(s3_settings, s3_bucket, tmp_path):
    storage = S3Storage(f"s3://{s3_bucket}", s3_settings)
    with storage.open_write("a/x.bin", 100 * MiB) as out:
        out.write(b"x" * storage.settings.part_size)  # the upload is started
        _client(s3_settings.endpoint_url).abort_multipart_upload(
            Bucket=s3_bucket, Key="a/x.bin", UploadId=out._upload_id)  # someone aborts it under us
        with pytest.raises(StorageError, match=f"s3://{s3_bucket}/a/x.bin"):
            out.write(b"y" * storage.settings.part_size)
            out.commit()
    assert not storage.exists("a/x.bin")


def test_local_streams_go_straight_into_the_temp_file(tmp_path):
    storage = LocalStorage((tmp_path / "s").as_uri())
    with storage.open_write("t/a.dump") as out:
        out.write(b"abc")
        assert out.tmp.exists() and out.tmp.parent == tmp_path / "s" / "t"
        assert list(storage.list_keys("t/")) == []
        out.commit()
    assert storage.get_bytes("t/a.dump") == b"abc" and [p.name for p in (tmp_path / "s" / "t").iterdir()] == ["a.dump"]
    with pytest.raises(RuntimeError), storage.open_write("t/b.dump") as out:
        out.write(b"half")
        raise RuntimeError("dump failed")
    assert [p.name for p in (tmp_path / "s" / "t").iterdir()] == ["a.dump"]
