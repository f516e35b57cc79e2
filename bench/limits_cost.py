"""What a limited key's request costs the router in the limiter: one admission and one end (slot freed, tokens
settled), per backend, in one process on one machine.

    .venv/bin/python -m bench.limits_cost [--redis-url redis://127.0.0.1:6379/0]

- `file`: `LocalLimits` on a shared file (what the workers of one instance use: mmap + flock);
- `sqlite`: the same state in a SQLite file with `BEGIN IMMEDIATE` transactions (WAL, synchronous off, in /dev/shm
  where there is one): the alternative the file was chosen over;
- `redis`: `RedisLimits` (two scripts, one round trip each), when `--redis-url` is given.
Prints µs per request (admission + end), the median of `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time

from ferroute.config import KeyConfig
from ferroute.routing.keys import PERIOD, KeyTable, LocalLimits, RedisLimits, gcra, make_file, settled


class SQLiteLimits:
    """The shared-file limiter's work, as SQLite transactions (for comparison only)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE IF NOT EXISTS windows (name TEXT PRIMARY KEY, requests REAL, tokens REAL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS slots (name TEXT, lease INTEGER)")
        self.db.execute("INSERT OR IGNORE INTO windows VALUES ('k', 0, 0)")
        self.serial = 0

    def admit(self, rpm: int, tpm: int, most: int, cost: int, now: float) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            requests, tokens = db.execute("SELECT requests, tokens FROM windows WHERE name = 'k'").fetchone()
            ok_r, requests, *_ = gcra(requests, now, rpm, 1)
            ok_t, tokens, *_ = gcra(tokens, now, tpm, cost)
            (busy,) = db.execute("SELECT count(*) FROM slots WHERE name = 'k'").fetchone()
            if not (ok_r and ok_t and busy < most):
                raise RuntimeError("refused")
            db.execute("UPDATE windows SET requests = ?, tokens = ? WHERE name = 'k'", (requests, tokens))
            self.serial += 1
            db.execute("INSERT INTO slots VALUES ('k', ?)", (os.getpid() << 32 | self.serial,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.serial

    def end(self, lease: int, tpm: int, delta: int, now: float) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        (tokens,) = db.execute("SELECT tokens FROM windows WHERE name = 'k'").fetchone()
        db.execute("UPDATE windows SET tokens = ? WHERE name = 'k'", (settled(tokens, now, tpm, delta),))
        db.execute("DELETE FROM slots WHERE name = 'k' AND lease = ?", (os.getpid() << 32 | lease,))
        db.execute("COMMIT")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url")
    args = parser.parse_args(argv)
    # Limits high enough never to refuse: every request is admitted and ended.
    rpm, tpm, most = 10**9, 10**12, 64
    keys = KeyTable([], [KeyConfig(name="k", key="sk-k", requests_per_minute=rpm, tokens_per_minute=tpm,
                                   max_concurrent=most)])  # fmt: skip
    key = keys.limited[0]
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results: dict[str, list[float]] = {}

    shared = make_file(keys.limited, folder)
    local = LocalLimits(keys.limited, shared)

    def file_round() -> None:
        for _ in range(args.requests):
            now = time.time()
            local.end_now(local.admit_now(key, 100, now), 120, now)

    database = tempfile.mktemp(prefix="ferroute-limits-bench-", suffix=".sqlite3", dir=folder)
    lite = SQLiteLimits(database)

    def sqlite_round() -> None:
        for _ in range(args.requests // 10):
            now = time.time()
            lite.end(lite.admit(rpm, tpm, most, 100, now), tpm, 20, now)

    try:
        for name, run, count in (("file", file_round, args.requests), ("sqlite", sqlite_round, args.requests // 10)):
            run()  # (warm-up)
            rounds = []
            for _ in range(args.rounds):
                began = time.perf_counter()
                run()
                rounds.append((time.perf_counter() - began) / count * 1e6)
            results[name] = rounds
    finally:
        lite.db.close()
        for path in (shared, database, database + "-wal", database + "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(path)

    if args.redis_url:

        async def redis_rounds() -> list[float]:
            limits = RedisLimits(args.redis_url, "bench-limits:")
            count = args.requests // 10
            rounds = []
            try:
                for round_ in range(args.rounds + 1):
                    began = time.perf_counter()
                    for _ in range(count):
                        await limits.end(await limits.admit(key, 100), 120)
                    if round_:  # (the first: a warm-up)
                        rounds.append((time.perf_counter() - began) / count * 1e6)
            finally:
                await limits.aclose()
            return rounds

        results["redis"] = asyncio.run(redis_rounds())

    for name, rounds in results.items():
        print(f"{name:>6}: {statistics.median(rounds):8.1f} µs per request (admission + end), window {PERIOD:g} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
