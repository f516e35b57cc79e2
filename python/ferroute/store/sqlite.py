"""The embedded default: one SQLite file in WAL mode, queried on a small thread pool.

The event loop never waits on SQLite: each operation runs on one of a few threads, each with its own
connection (`sqlite3` releases the GIL while it works). WAL lets readers run beside the one writer,
and several processes (Granian workers on one host) can share the file; `busy_timeout` makes a
writer wait its turn instead of failing. Several hosts need Redis instead.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ferroute.store import Record, Store, StoreError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    created REAL NOT NULL,
    response BLOB NOT NULL,
    input_items BLOB NOT NULL,
    ancestors TEXT NOT NULL,
    settings BLOB NOT NULL,
    cancel INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    tenant TEXT NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    PRIMARY KEY (tenant, item_id)
) WITHOUT ROWID;
"""
_COLUMNS = "id, response, input_items, ancestors, settings"


def _record(row: tuple[str, bytes, bytes, str, bytes]) -> Record:
    return Record(id=row[0], response=row[1], input_items=row[2], ancestors=json.loads(row[3]), settings=row[4])


class SQLiteStore(Store):
    name = "sqlite"

    def __init__(self, path: str, *, threads: int = 4, retention: float | None = None) -> None:
        self.path = str(Path(path).expanduser())
        self.retention = retention
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ferroute-sqlite")
        self.local = threading.local()
        self.connections: list[sqlite3.Connection] = []
        self.lock = threading.Lock()
        self.schema_ready = False
        self.puts = 0

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            with self.lock:
                if not self.schema_ready:
                    conn.executescript(_SCHEMA)
                    self.schema_ready = True
                self.connections.append(conn)
            self.local.conn = conn
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            return fn(self._conn())

        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, call)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store ({self.path}): {e}") from e

    async def put(self, tenant: str, record: Record) -> None:
        self.puts += 1
        prune = self.retention is not None and self.puts % 1000 == 1

        def put(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO responses (tenant, id, created, response, input_items, ancestors, settings)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (tenant, record.id, now, record.response, record.input_items, json.dumps(record.ancestors),
                     record.settings),
                )  # fmt: skip
                if record.item_ids:
                    conn.executemany(
                        "INSERT OR REPLACE INTO items (tenant, item_id, response_id) VALUES (?, ?, ?)",
                        [(tenant, item_id, record.id) for item_id in record.item_ids],
                    )
                if prune and self.retention is not None:
                    conn.execute("DELETE FROM responses WHERE created < ?", (now - self.retention,))
                    conn.execute(
                        "DELETE FROM items WHERE NOT EXISTS (SELECT 1 FROM responses r"
                        " WHERE r.tenant = items.tenant AND r.id = items.response_id)"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(put)

    async def update_response(self, tenant: str, id: str, response: bytes) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE responses SET response = ? WHERE tenant = ? AND id = ?", (response, tenant, id)
            )
        )

    async def get(self, tenant: str, id: str) -> Record | None:
        [record] = await self.get_many(tenant, [id])
        return record

    async def get_many(self, tenant: str, ids: Sequence[str]) -> list[Record | None]:
        if not ids:
            return []
        wanted = list(ids)

        def get(conn: sqlite3.Connection) -> list[tuple[str, bytes, bytes, str, bytes]]:
            found: list[tuple[str, bytes, bytes, str, bytes]] = []
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found += conn.execute(
                    f"SELECT {_COLUMNS} FROM responses WHERE tenant = ? AND id IN ({marks})", (tenant, *chunk)
                ).fetchall()
            return found

        rows = {row[0]: _record(row) for row in await self._run(get)}
        return [rows.get(id) for id in wanted]

    async def delete(self, tenant: str, id: str) -> bool:
        cursor = await self._run(
            lambda conn: conn.execute("DELETE FROM responses WHERE tenant = ? AND id = ?", (tenant, id))
        )
        return cursor.rowcount > 0

    async def find_item(self, tenant: str, item_id: str) -> str | None:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT response_id FROM items WHERE tenant = ? AND item_id = ?", (tenant, item_id)
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def request_cancel(self, tenant: str, id: str) -> None:
        await self._run(
            lambda conn: conn.execute("UPDATE responses SET cancel = 1 WHERE tenant = ? AND id = ?", (tenant, id))
        )

    async def cancel_requested(self, tenant: str, id: str) -> bool:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT cancel FROM responses WHERE tenant = ? AND id = ?", (tenant, id)
            ).fetchone()
        )
        return bool(row and row[0])

    async def close(self) -> None:
        self.pool.shutdown(wait=True)
        with self.lock:
            for conn in self.connections:
                conn.close()
            self.connections.clear()
