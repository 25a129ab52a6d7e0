"""The benchmark helpers measure what they claim: appdata's size and shape, the proxy's speed, the samplers' peaks.

benchmarks/ is not a package; its folder is put on sys.path, as its scripts do.
"""

import gzip
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from backup_pipeline.core.pgtools import find_tools

from .fix_pg import new_database

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import appdata  # noqa: E402
import five_ways  # noqa: E402
from proc_sampler import DirSampler, TreeSampler, postgres_cpu_seconds  # noqa: E402
from throttle_proxy import ThrottleProxy  # noqa: E402


@pytest.fixture
def sink_server():
    """A TCP server on 127.0.0.1 that answers each connection with the sha256 of everything it received."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        digest = hashlib.sha256()
        with conn:
            while data := conn.recv(65536):
                digest.update(data)
            conn.sendall(digest.hexdigest().encode())

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def send_through(port: int, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer.decode()


def test_throttle_proxy_limits_the_link_and_keeps_the_bytes(sink_server):
    payload = os.urandom(2 * 1024 * 1024)
    with ThrottleProxy(sink_server, mbit_per_s=40) as proxy:  # 5 MB/s shared by both connections
        start = time.perf_counter()
        answers: list[str] = []
        threads = [threading.Thread(target=lambda: answers.append(send_through(proxy.port, payload)))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
    assert answers == [hashlib.sha256(payload).hexdigest()] * 2
    assert 0.7 < seconds < 5, f"4 MB at 5 MB/s took {seconds:.2f} s"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2)  # stopped: nothing listens


def test_throttle_proxy_without_a_limit_is_fast_and_bounded(sink_server):
    payload = os.urandom(4 * 1024 * 1024)
    with ThrottleProxy(sink_server, max_connections=1) as proxy:
        held = socket.create_connection(("127.0.0.1", proxy.port))  # takes the only slot
        waiting: list[str] = []
        thread = threading.Thread(target=lambda: waiting.append(send_through(proxy.port, b"late")))
        thread.start()
        time.sleep(0.5)
        assert waiting == []  # queued in the backlog, not served
        start = time.perf_counter()
        held.sendall(payload)
        held.shutdown(socket.SHUT_WR)
        assert held.recv(100).decode() == hashlib.sha256(payload).hexdigest()
        assert time.perf_counter() - start < 2
        held.close()
        thread.join(timeout=10)
    assert waiting == [hashlib.sha256(b"late").hexdigest()]


def test_appdata_loads_related_tables_that_compress_like_application_data(pg_server):
    dsn = new_database(pg_server.dsn(), "bench_appdata")
    loaded = appdata.load(dsn, 4)
    assert set(loaded.rows) == {"customers", "orders", "order_items", "events"}
    assert 4 * 1024 * 1024 < loaded.size < 24 * 1024 * 1024
    with psycopg.connect(dsn) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in loaded.rows}
        fks = conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()[0]
        types = {r[0] for r in conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'public'")}
    assert counts == loaded.rows
    assert fks == 3
    assert {"uuid", "jsonb", "inet", "numeric", "text", "timestamp with time zone"} <= types
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {**os.environ, "PGPASSWORD": params["password"]}
    dump = subprocess.run([find_tools(pg_server.major).path("pg_dump"), "-Fc", "-Z0", "-h", "127.0.0.1",
                           "-p", str(params["port"]), "-U", "postgres", params["dbname"]],
                          env=env, capture_output=True, check=True).stdout
    ratio = len(dump) / len(gzip.compress(dump, 6))
    assert 2.5 < ratio < 6, f"gzip ratio {ratio:.1f}:1, real data is 3-5:1"


def test_samplers_see_a_childs_memory_and_a_directorys_peak(tmp_path):
    script = ("import time, pathlib, sys; b = bytearray(60 * 1024 * 1024); p = pathlib.Path(sys.argv[1]) / 'f';"
              "p.write_bytes(b'x' * 3_000_000); time.sleep(0.8); p.unlink()")
    dirs = DirSampler(tmp_path)
    dirs.start()
    proc = subprocess.Popen(["bash", "-c", f'sleep 1; "{sys.executable}" -c "{script}" "{tmp_path}"; true'])
    tree = TreeSampler(proc.pid)
    tree.start()
    assert proc.wait() == 0
    tree.stop()
    dirs.stop()
    assert max(v for n, v in tree.peaks.items() if n.startswith("python")) >= 60 * 1024 * 1024
    assert tree.tree_peak >= 60 * 1024 * 1024
    assert 55 * 1024 * 1024 <= tree.pss_peak <= tree.tree_peak  # PSS: shared pages counted once
    assert tree.peak_without == tree.tree_peak  # no PostgreSQL server in this tree
    assert tree.first_start["sleep"] < min(t for n, t in tree.first_start.items() if n.startswith("python"))
    assert dirs.peak == 3_000_000
    assert list(tmp_path.iterdir()) == []


def test_cpu_seconds_count_a_grandchild_and_a_finished_backend(pg_server):
    burn = "import time; t = time.process_time(); exec('while time.process_time() - t < 0.4: pass')"
    sample, _, _ = five_ways.run_sampled(["bash", "-c", f'"{sys.executable}" -c "{burn}"; true'], dict(os.environ),
                                         "burner")
    assert 0.4 <= sample.cpu < 3
    before = postgres_cpu_seconds(pg_server.data_dir)
    with psycopg.connect(pg_server.dsn()) as conn:
        conn.execute("SELECT count(*) FROM generate_series(1, 1000000)").fetchone()
    time.sleep(0.3)  # the postmaster reaps the backend
    assert postgres_cpu_seconds(pg_server.data_dir) - before > 0.05


def test_importtime_parsing_totals_top_level_imports():
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |   zlib",
        "import time:       500 |        600 | gzip",
        "import time:      2000 |       2000 |     dagster._core",
        "import time:       300 |       2300 |   dagster",
        "import time:       700 |       3000 | backup_pipeline.launch",
        "some other line",
    ])
    probe = five_ways.parse_importtime(stderr)
    assert probe["total"] == pytest.approx(0.0036)
    assert probe["packages"][0] == (pytest.approx(0.0023), "dagster")
    assert [name for _, name in probe["top_level"]] == ["backup_pipeline.launch", "gzip"]
