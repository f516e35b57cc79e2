"""The embedded default: one SQLite file in WAL mode, queried on a small thread pool.

The event loop never waits on SQLite: each operation runs on one of a few threads, each with its own
connection (`sqlite3` releases the GIL while it works). WAL lets readers run beside the one writer,
and several processes (Granian workers on one host) can share the file; `busy_timeout` makes a
writer wait its turn instead of failing. Several hosts need Redis instead.

Puts (one per stored response, the hot one) go to a single writer thread that commits everything queued
while its previous commit ran in one transaction (group commit): under load one WAL append, one lock
and one wake-up of each event loop serve many responses, where a transaction and a thread-pool hop per
put cost as much CPU as the rest of a non-streaming request (bench/nonstream.py). Each put still
returns only once its row is committed, and a put that fails fails alone (the batch is retried one
put per transaction).

Checkpoints (copying the WAL into the database file, with its fsyncs) are kept off the puts' path. SQLite's
own, in the commit that crossed `wal_autocheckpoint`, held every put queued behind it: 170-230 ms each
at 8,192 pages on a virtual disk, a p99 of +120 ms on non-streaming requests at 250/s (bench/nonstream.py).
So the writer's connection does none; after about `_CHECKPOINT_BYTES` of puts a checkpointer thread (its
own connection) copies the WAL in PASSIVE mode while the writer goes on committing (three passes in a row, each
copying what came during the one before), and then the writer, between two batches, copies the few frames
committed meanwhile (3-4 ms). That last step matters: the
WAL is only rewound when a transaction begins with every frame copied, which a concurrent checkpoint
alone never leaves it under steady writes (the WAL grew without end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    alive REAL,
    UNIQUE (tenant, id)
);
CREATE TABLE IF NOT EXISTS items (
    tenant TEXT NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    PRIMARY KEY (tenant, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_response ON items (tenant, response_id);
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    first INTEGER NOT NULL,
    frames BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_of ON events (tenant, id, first);
"""
# No index on `responses (created)`: rows are appended as they are written, so `created` grows with the rowid
# and the prune finds its cut by a binary search over rowids (`_cutoff_rowid`). The index cost a page of WAL
# per commit: 8.25 -> 7.15 frames per put written one at a time, 106 -> 83 µs of CPU per put (2,000 puts,
# `sqlite3` alone). Files made before keep theirs (a WITHOUT ROWID table, which has no rowid, prunes by it).
_CREATED_INDEX = "CREATE INDEX IF NOT EXISTS responses_created ON responses (created)"
# `responses` is a rowid table (rows appended in insert order) with its key in an index: a response (~1.3 KB)
# is too big for an index page's local payload (~1 KB at 4 KiB pages), so as a WITHOUT ROWID table each row
# spilled to an overflow page of its own, 4 KiB written for ~300 bytes (the file grew 5 KB per response, now
# 2.4). Together with ids that begin with their time (`ferroute.store.items.new_id`), every insert lands at the
# end of each index: measured with 20,000 puts one at a time (three interleaved runs), 278-302 -> 219-244 µs
# of CPU per put (with the event loop's side), the longest put 32-64 -> 7-15 ms. (A file made before keeps its
# WITHOUT ROWID table; every query works on both.)
_COLUMNS = "id, response, input_items, ancestors, settings, alive"
# Files made before heartbeats get the column when first opened (NULL in their rows: not tracked, as a finished
# response is). Workers of one host opening the file at once may both try: the second's "duplicate column" is fine.
_ADD_ALIVE = "ALTER TABLE responses ADD COLUMN alive REAL"
_BATCH = 256  # most puts in one transaction
_CHECKPOINT_BYTES = 1 << 20  # puts (bytes) between checkpoints: ~2 MB of WAL, copied in ~10-20 ms
_PASSES = 3  # checkpointer passes in a row before the writer's catch-up (see `_checkpoint_loop`)
# A WAL past this size at a catch-up is checkpointed in TRUNCATE mode (waiting for other connections, then
# emptying the file): the backstop for writes this process does not pace (other workers on the same file).
_WAL_LIMIT = 64 << 20


@dataclass(slots=True)
class _Put:
    tenant: str
    record: Record
    prune: bool
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Beat:
    """Heartbeats, queued for the writer like puts: committed in its batches (no write lock taken beside it), and
    after the puts queued before them (a record's first put is in before its first beat)."""

    records: Sequence[tuple[str, str]]
    now: float
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop
    prune: bool = False


def _settle(done: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    """On the putter's loop: each put's outcome (a future cancelled meanwhile is left alone)."""
    for future, error in done:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


_Row = tuple[str, bytes, bytes, str, bytes, float | None]


def _record(row: _Row) -> Record:
    return Record(id=row[0], response=row[1], input_items=row[2], ancestors=json.loads(row[3]), settings=row[4],
                  alive=row[5])  # fmt: skip


def _wal(conn: sqlite3.Connection) -> None:
    """`journal_mode=WAL`. Turning a file made in another mode to WAL needs it to itself, and SQLite answers "database
    is locked" at once, without its busy timeout, while another connection (another worker opening it) holds it:
    asked again for up to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


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
        self.commits = 0  # transactions the writer committed (puts / commits = the mean batch)
        self.queue: queue.SimpleQueue[_Put | _Beat | None] = queue.SimpleQueue()
        self.writer: threading.Thread | None = None
        self.checkpoints = 0  # checkpoint passes run (the checkpointer's and the writer's catch-ups)
        self.truncations = 0  # catch-ups that found the WAL past `_WAL_LIMIT`
        self.checkpointer: threading.Thread | None = None
        self._unchecked = 0  # bytes put since the last checkpoint was asked for (writer thread only)
        self._in_pass = False  # a checkpointer pass and its catch-up are under way (writer thread only)
        self._writer_ready = False  # the writer's connection has its automatic checkpoint off
        self._wake = threading.Event()  # the writer asks the checkpointer for a pass
        self._catch_up = threading.Event()  # the checkpointer asks the writer to copy what came meanwhile
        self._closing = False
        self._rowid: bool | None = None  # `responses` has rowids (see `_has_rowid`)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            # The writer turns this off (the checkpointer does its checkpoints); for the other writes
            # (cancel, delete, background progress) SQLite's own stays as a backstop the WAL never reaches.
            conn.execute("PRAGMA wal_autocheckpoint=8192")
            with self.lock:
                if not self.schema_ready:
                    conn.executescript(_SCHEMA)
                    columns = {row[1] for row in conn.execute("PRAGMA table_info(responses)")}
                    if "alive" not in columns:
                        with contextlib.suppress(sqlite3.OperationalError):
                            conn.execute(_ADD_ALIVE)
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

    def put(self, tenant: str, record: Record) -> asyncio.Future[None]:
        """Queued for the writer at once; the future is done when its transaction is committed (a future, not
        a coroutine: no task to start, and the writer has it a turn of the loop sooner)."""
        self.puts += 1
        prune = self.retention is not None and self.puts % 1000 == 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self.writer is None:
            self.writer = threading.Thread(target=self._write_loop, name="ferroute-sqlite-writer", daemon=True)
            self.writer.start()
        self.queue.put(_Put(tenant, record, prune, future, loop))
        return future

    def beat(self, records: Sequence[tuple[str, str]], now: float) -> asyncio.Future[None]:
        """Queued for the writer, as a put is (see `_Beat`)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self.writer is None:
            self.writer = threading.Thread(target=self._write_loop, name="ferroute-sqlite-writer", daemon=True)
            self.writer.start()
        self.queue.put(_Beat(records, now, future, loop))
        return future

    def _write_loop(self) -> None:
        """The writer thread: take what is queued (up to `_BATCH`), commit it together, report back."""
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    more = self.queue.get_nowait()
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
            errors = self._commit(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]] = {}
            for put, error in zip(batch, errors, strict=True):
                by_loop.setdefault(put.loop, []).append((put.future, error))
            if any(put.prune for put in batch):
                self._prune()
            for loop, done in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_settle, done)
            self._unchecked += sum(
                len(put.record.response) + len(put.record.input_items)
                for put, error in zip(batch, errors, strict=True)
                if error is None and isinstance(put, _Put)
            )
            if self._catch_up.is_set():
                self._catch_up.clear()
                self._checkpoint(self._writer_conn, "TRUNCATE" if self._wal_bytes() > _WAL_LIMIT else "PASSIVE")
                self._in_pass = False
            elif not self._in_pass and self._unchecked >= _CHECKPOINT_BYTES:
                # (Never while a pass runs: the catch-up must find no other checkpoint running, or it is
                # refused as busy and the WAL is not rewound.)
                self._unchecked = 0
                self._in_pass = True
                if self.checkpointer is None:
                    self.checkpointer = threading.Thread(
                        target=self._checkpoint_loop, name="ferroute-sqlite-checkpointer", daemon=True
                    )
                    self.checkpointer.start()
                self._wake.set()
            if stop:
                return

    def _writer_conn(self) -> sqlite3.Connection:
        """The writer thread's connection, which leaves checkpoints to the checkpointer (see the module's doc)."""
        conn = self._conn()
        if not self._writer_ready:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._writer_ready = True
        return conn

    def _checkpoint_loop(self) -> None:
        """The checkpointer thread: a PASSIVE checkpoint when the writer asks, beside its commits."""
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            # (If this thread cannot connect, the writer's catch-up still copies the whole WAL.)
            # A pass copies the WAL as it was when the pass began; what was committed meanwhile the writer copies
            # between two batches (with nothing new, that is no work), so that its next transaction finds every
            # frame copied and rewinds the WAL. That catch-up holds the queued puts for its fsyncs, which on a
            # virtual disk take as long as the writeback they wait behind: right after a long pass, 13-55 ms
            # (a p99 of +20 ms on non-streaming requests at 500/s, bench/nonstream.py). So this thread runs
            # `_PASSES` passes in a row, each copying what came during the one before, and the writer's catch-up
            # follows the last, short one. Measured at 500 requests/s (router, sqlite store, 20 s runs): catch-up
            # 27 ms median with one pass, 13-16 with two, 3.3-3.7 with three; the requests' p99 40-45 ms, 30-37,
            # 28-29 (20 ms of it the upstream).
            for _ in range(_PASSES):
                if self._closing:
                    break
                self._checkpoint(self._conn)
            self._catch_up.set()

    def _checkpoint(self, connect: Callable[[], sqlite3.Connection], mode: str = "PASSIVE") -> None:
        """One checkpoint on the calling thread's connection (no connection, busy or a transient error: the
        next one catches up)."""
        with contextlib.suppress(sqlite3.Error):
            connect().execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            self.checkpoints += 1
            if mode == "TRUNCATE":
                self.truncations += 1

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    def _prune(self) -> None:
        """Drop responses older than the retention, and their items, in a transaction of its own after the
        batch's, through the indexes (it runs every 1,000 puts: a scan of the items table there held every
        put behind it for 175 ms with 20,000 responses stored)."""
        if self.retention is None:
            return
        cutoff = time.time() - self.retention
        # (Busy, transient, or a file that cannot be opened: the next prune catches up. An error here ended the
        # writer thread before, and every put after it waited forever.)
        with contextlib.suppress(sqlite3.Error):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                bound: float
                if self._has_rowid(conn):
                    expired, bound = "rowid < ?", self._cutoff_rowid(conn, cutoff)
                else:
                    conn.execute(_CREATED_INDEX)  # (a file made with the first schema has it already)
                    expired, bound = "created < ?", cutoff
                conn.execute(
                    "DELETE FROM items WHERE (tenant, response_id) IN"
                    f" (SELECT tenant, id FROM responses WHERE {expired})",
                    (bound,),
                )
                conn.execute(
                    f"DELETE FROM events WHERE (tenant, id) IN (SELECT tenant, id FROM responses WHERE {expired})",
                    (bound,),
                )
                conn.execute(f"DELETE FROM responses WHERE {expired}", (bound,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _has_rowid(self, conn: sqlite3.Connection) -> bool:
        """Whether `responses` is a rowid table (files made before it was are WITHOUT ROWID)."""
        if self._rowid is None:
            try:
                conn.execute("SELECT rowid FROM responses LIMIT 0")
                self._rowid = True
            except sqlite3.OperationalError:
                self._rowid = False
        return self._rowid

    @staticmethod
    def _cutoff_rowid(conn: sqlite3.Connection, cutoff: float) -> int:
        """The first rowid of a response written at or after `cutoff` (every row before it is older): rows
        are appended in the order they are written, so a binary search over rowids (~20 probes of one b-tree
        descent each) finds it without an index on `created`. (A wall clock stepped back only moves the cut
        by the step.)"""
        low, high = conn.execute("SELECT min(rowid), max(rowid) FROM responses").fetchone()
        if low is None:
            return 0
        high += 1  # the answer lies in [low, high]; high: nothing is fresh
        while low < high:
            middle = (low + high) // 2
            row = conn.execute(
                "SELECT rowid, created FROM responses WHERE rowid >= ? ORDER BY rowid LIMIT 1", (middle,)
            ).fetchone()
            if row is None or row[1] >= cutoff:
                high = middle
            else:
                low = row[0] + 1
        return int(low)

    def _commit(self, batch: list[_Put | _Beat]) -> list[BaseException | None]:
        """One transaction for the whole batch; if it fails, one per put, so a failure stays its own."""
        try:
            self._transaction(self._writer_conn(), batch)
            return [None] * len(batch)
        except Exception as e:
            if len(batch) == 1:
                return [StoreError(f"sqlite store ({self.path}): {e}") if isinstance(e, sqlite3.Error) else e]
        return [self._commit([put])[0] for put in batch]

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Put | _Beat]) -> None:
        now = time.time()
        puts = [put for put in batch if isinstance(put, _Put)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO responses"
                " (tenant, id, created, response, input_items, ancestors, settings, alive)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (put.tenant, put.record.id, now, put.record.response, put.record.input_items,
                     json.dumps(put.record.ancestors) if put.record.ancestors else "[]", put.record.settings,
                     put.record.alive)
                    for put in puts
                ],
            )  # fmt: skip
            items = [(put.tenant, item_id, put.record.id) for put in puts for item_id in put.record.item_ids]
            if items:
                conn.executemany("INSERT OR REPLACE INTO items (tenant, item_id, response_id) VALUES (?, ?, ?)", items)
            beats = [(beat.now, tenant, id) for beat in batch if isinstance(beat, _Beat) for tenant, id in beat.records]
            if beats:
                conn.executemany(
                    "UPDATE responses SET alive = ? WHERE tenant = ? AND id = ? AND alive IS NOT NULL", beats
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.commits += 1

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

        def get(conn: sqlite3.Connection) -> list[_Row]:
            found: list[_Row] = []
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
        def delete(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM events WHERE tenant = ? AND id = ?", (tenant, id))
            return conn.execute("DELETE FROM responses WHERE tenant = ? AND id = ?", (tenant, id)).rowcount

        return await self._run(delete) > 0

    async def append_events(self, tenant: str, id: str, first: int, frames: bytes) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO events (tenant, id, first, frames) VALUES (?, ?, ?, ?)", (tenant, id, first, frames)
            )
        )

    async def read_events(self, tenant: str, id: str, after: int) -> list[tuple[int, bytes]]:
        def read(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            # (From the last piece that begins at or before the first event wanted.)
            start = conn.execute(
                "SELECT max(first) FROM events WHERE tenant = ? AND id = ? AND first <= ?", (tenant, id, after + 1)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT first, frames FROM events WHERE tenant = ? AND id = ? AND first >= ? ORDER BY first, rowid",
                (tenant, id, start if start is not None else 0),
            ).fetchall()
            return [(int(first), bytes(frames)) for first, frames in rows]

        return await self._run(read)

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
        if self.writer is not None:
            self.queue.put(None)  # after every queued put
            await asyncio.get_running_loop().run_in_executor(None, self.writer.join)
            self.writer = None
        if self.checkpointer is not None:
            self._closing = True
            self._wake.set()
            await asyncio.get_running_loop().run_in_executor(None, self.checkpointer.join)
            self.checkpointer = None
        self.pool.shutdown(wait=True)
        with self.lock:
            for conn in self.connections:
                conn.close()
            self.connections.clear()
