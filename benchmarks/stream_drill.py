"""What a drill *during* the dump would cost: seed 000's way (d) against a restore from the dump's stream (s).

A prototype in shell, to inform a decision, not the product. Our drill restores
the stored object after the upload (what storage holds, with `pg_restore -j`),
so the default backup (five_ways.py's (e)) costs dump + drill; seed 000's
`pg_dump | psql` overlaps its dump and its load. Way (s) overlaps them too:

  (d)  createdb; pg_dump | psql into it; count every table in both databases
  (s)  createdb on a drill-tuned server (RESTORE_SETTINGS); pg_dump -Fc -Z0 | tee
       >(zstd -1 -T0 > archive) | pg_restore (serial: a pipe allows no -j);
       the same counts

(s) restores the bytes being stored, not the bytes read back from storage, and
gives up the parallel restore: that is the decision. It needs the zstd CLI.

    .venv/bin/python benchmarks/stream_drill.py --size-mb 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import appdata  # noqa: E402
from bench_common import DBNAME, log, pg_env  # noqa: E402
from five_ways import _SEED_000, COUNT_BOTH  # noqa: E402

from backup_pipeline.core.ephemeral import RESTORE_SETTINGS, EphemeralPostgres  # noqa: E402

_STREAM = r"""set -euo pipefail
"$CREATEDB" -p "$DST_PORT" "$DST_DB"
"$PG_DUMP" -Fc -Z0 | tee >(zstd -q -1 -T0 > "$OUT") | "$PG_RESTORE" -p "$DST_PORT" -d "$DST_DB" --no-owner
""" + COUNT_BOTH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1000, help="application data size on disk (appdata.py)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each way is kept")
    args = parser.parse_args(argv)
    if shutil.which("zstd") is None:
        print("stream_drill.py needs the zstd CLI (apt-get install -y zstd)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="stream-drill-"))
    source = EphemeralPostgres()
    seed = EphemeralPostgres(password=source.password)
    drill = EphemeralPostgres(password=source.password, settings=RESTORE_SETTINGS)
    times: dict[str, list[float]] = {"d": [], "s": []}
    try:
        for server in (source, seed, drill):
            server.start()
        source.create_database(DBNAME)
        loaded = appdata.load(source.dsn(DBNAME), args.size_mb, log=log)
        log(f"database {loaded.size / 1e6:.0f} MB, {sum(loaded.rows.values())} rows, loaded in {loaded.seconds:.0f} s")
        tools = source.tools
        env = {**pg_env(source), "PG_DUMP": tools.path("pg_dump"), "PSQL": tools.path("psql"),
               "CREATEDB": tools.path("createdb"), "PG_RESTORE": tools.path("pg_restore"), "OUT": str(work / "a.zst")}
        for r in range(args.rounds):
            for way in ("d", "s") if r % 2 == 0 else ("s", "d"):
                server = seed if way == "d" else drill
                started = time.monotonic()
                subprocess.run(["bash", "-c", _SEED_000 if way == "d" else _STREAM], check=True,
                               env={**env, "DST_PORT": str(server.port), "DST_DB": f"way_{way}_{r}"})
                times[way].append(time.monotonic() - started)
                log(f"round {r + 1}/{args.rounds} ({way}): {times[way][-1]:.2f} s")
    finally:
        for server in (drill, seed, source):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    best_d, best_s = min(times["d"]), min(times["s"])
    median_d, median_s = statistics.median(times["d"]), statistics.median(times["s"])
    print(f"(d) seed 000, pg_dump | psql, counts       best {best_d:.2f} s, median {median_d:.2f} s")
    print(f"(s) pg_dump | tee zstd | pg_restore, counts best {best_s:.2f} s, median {median_s:.2f} s")
    print(f"(s)/(d) best {best_s / best_d:.2f}, median {median_s / median_d:.2f}  "
          "(our CLI would add its start-up, ~1.2 s, and the catalog comparison)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
