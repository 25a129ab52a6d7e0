"""Streamed vs staged dump to moto S3 behind a throttled link (throttle_proxy.py): wall time and stage peak.

The design decision: both ways run dump_database in this process on the same throwaway server and table
(md5 text, ~2:1 under zstd), alternating, so only the upload path differs: "staged" dumps to the stage and
then put_file()s it (the old path, dump + upload), "streamed" passes storage= (parts upload while pg_dump runs).

Usage: .venv/bin/python benchmarks/stream_overlap.py [MBIT_PER_S=100] [ROWS=1000000]
"""
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psycopg
from moto.server import ThreadedMotoServer
import boto3
from throttle_proxy import ThrottleProxy
from proc_sampler import DirSampler
from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.storage import S3Settings, S3Storage

MBPS = float(sys.argv[1]) if len(sys.argv) > 1 else 100
ROWS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
boto3.client("s3", endpoint_url=f"http://{host}:{port}", aws_access_key_id="a", aws_secret_access_key="b",
             region_name="us-east-1").create_bucket(Bucket="ovbench")
with EphemeralPostgres(18, password="pw") as pg:
    dsn = pg.dsn()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((-g)::text) AS v FROM generate_series(1,{ROWS}) g")
    with ThrottleProxy(upstream_port=port, mbit_per_s=MBPS) as proxy:
        st = S3Storage("s3://ovbench/x", S3Settings(endpoint_url=f"http://127.0.0.1:{proxy.port}", access_key_id="a",
                                               secret_access_key="b", region="us-east-1"))
        for mode in ("staged", "streamed", "staged", "streamed"):
            stage = Path(tempfile.gettempdir()) / f"stream-overlap-stage-{mode}"; shutil.rmtree(stage, ignore_errors=True)
            names = BackupNames.for_backup("t", datetime.now(), "zstd", f"{mode}{time.time_ns()}")
            s = DirSampler(stage); s.start(); t0 = time.monotonic()
            if mode == "streamed":
                r = dump_database(dsn, stage, names, storage=st); t_dump = time.monotonic() - t0
            else:
                r = dump_database(dsn, stage, names); t_dump = time.monotonic() - t0
                st.put_file(r.archive_path, names.archive)
            total = time.monotonic() - t0; s.stop()
            print(f"{mode:9s} archive {r.archive_size/1e6:6.1f} MB  total {total:6.1f} s  (dump step {t_dump:6.1f} s)  stage peak {s.peak/1e6:6.1f} MB", flush=True)
server.stop()
