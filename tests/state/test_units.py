"""The store backends and the reasoning cipher in-process: what the server tests cannot see (TTLs,
pruning, what a tenant key looks like, round trips)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from ferroute.app import App, build_app
from ferroute.config import ConfigError, parse_settings
from ferroute.store import ANONYMOUS, Record, StoreError, tenant_of
from ferroute.store import sqlite as sqlite_store
from ferroute.store.crypto import ReasoningCipher, SealError
from ferroute.store.memory import MemoryStore
from ferroute.store.redis import RedisStore
from ferroute.store.sqlite import SQLiteStore
from tests.support.servers import redis_server


def test_tenants_are_hashes_of_keys() -> None:
    key = b"sk-secret-key-123"
    tenant = tenant_of(key)
    assert len(tenant) == 32
    assert "secret" not in tenant
    assert tenant == tenant_of(key) != tenant_of(b"sk-secret-key-124")
    assert tenant_of(None) == ANONYMOUS


def test_sqlite_prunes_past_its_retention(tmp_path: Path) -> None:
    async def run() -> None:
        store = SQLiteStore(str(tmp_path / "s.sqlite3"), retention=0.05)
        await store.put("t", Record(id="old", response=b"{}", item_ids=["msg_old"]))
        await asyncio.sleep(0.1)
        for k in range(1000):  # pruning runs every 1000 writes
            await store.put("t", Record(id=f"r{k}", response=b"{}"))
        assert await store.get("t", "old") is None
        assert await store.find_item("t", "msg_old") is None
        assert await store.get("t", "r999") is not None
        await store.close()
        with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite3")) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # WAL is a property of the file

    asyncio.run(run())


def test_memory_store_drops_responses_past_its_retention_with_their_items() -> None:
    """`[store] ttl_seconds` holds for the memory backend too (it kept everything before: a slow leak)."""

    async def run() -> None:
        store = MemoryStore(retention=0.2)
        await store.put("t", Record(id="old", response=b"{}", item_ids=["msg_old"]))
        await store.put("t", Record(id="old", response=b'{"again":1}', item_ids=["msg_old"]))  # keeps its time
        await asyncio.sleep(0.12)
        await store.put("t", Record(id="new", response=b"{}", item_ids=["msg_new"]))
        await store.delete("t", "new")
        await store.put("t", Record(id="new", response=b"{}", item_ids=["msg_new"]))  # put again: a new time
        await asyncio.sleep(0.12)
        assert await store.get("t", "old") is None
        assert await store.find_item("t", "msg_old") is None
        assert await store.get("t", "new") is not None  # (its stale first entry did not take the second)
        assert await store.find_item("t", "msg_new") == "new"
        for k in range(1000):
            await store.put("t", Record(id=f"r{k}", response=b"{}", item_ids=[f"msg_r{k}"]))
            if k % 100 == 99:
                await asyncio.sleep(0.05)
        assert len(store.records) < 600 and len(store.items) < 600 and len(store.order) < 600
        assert await store.get("t", "r999") is not None
        forever = MemoryStore()
        await forever.put("t", Record(id="kept", response=b"{}"))
        assert await forever.get("t", "kept") is not None
        # `ferroute serve` gives it the config's retention (0: forever).
        from ferroute.config import StoreConfig
        from ferroute.store import open_store

        configured = open_store(StoreConfig(backend="memory", ttl_seconds=5))
        assert isinstance(configured, MemoryStore) and configured.retention == 5
        unbounded = open_store(StoreConfig(backend="memory", ttl_seconds=0))
        assert isinstance(unbounded, MemoryStore) and unbounded.retention is None

    asyncio.run(run())


def test_sqlite_keeps_responses_in_a_rowid_table_and_still_serves_a_file_made_with_the_old_schema(
    tmp_path: Path,
) -> None:
    """Responses (~1.3 KB) are rows of a rowid table: in a WITHOUT ROWID table each spilled to an overflow page
    of its own. A file made before that change keeps its table, and every operation still works on it."""
    old_schema = sqlite_store._SCHEMA.replace(
        "UNIQUE (tenant, id)\n);", "PRIMARY KEY (tenant, id)\n) WITHOUT ROWID;", 1
    )
    assert old_schema != sqlite_store._SCHEMA
    with contextlib.closing(sqlite3.connect(tmp_path / "old.sqlite3")) as conn:
        conn.executescript(old_schema)

    async def run(path: Path) -> None:
        store = SQLiteStore(str(path))
        await store.put("t", Record(id="resp_a", response=b'{"a":1}', item_ids=["msg_a"]))
        await store.put("t", Record(id="resp_a", response=b'{"a":2}', item_ids=["msg_a"]))  # replaced, not added
        await store.update_response("t", "resp_a", b'{"a":3}')
        await store.request_cancel("t", "resp_a")
        record = await store.get("t", "resp_a")
        assert record is not None and record.response == b'{"a":3}'
        assert await store.cancel_requested("t", "resp_a")
        assert await store.find_item("t", "msg_a") == "resp_a"
        assert await store.get("u", "resp_a") is None
        assert await store.delete("t", "resp_a")
        assert await store.get("t", "resp_a") is None
        await store.close()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT count(*) FROM responses").fetchone()[0] == 0

    for name in ("new.sqlite3", "old.sqlite3"):
        asyncio.run(run(tmp_path / name))
    with contextlib.closing(sqlite3.connect(tmp_path / "new.sqlite3")) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'responses'").fetchone()
        assert "WITHOUT ROWID" not in sql


def test_sqlite_checkpoints_beside_the_writer_and_keeps_the_wal_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's connection never checkpoints (SQLite's own checkpoint held every queued put for up to
    230 ms); the checkpointer thread and the writer's catch-up keep the WAL rewound under steady puts."""
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_BYTES", 256 * 1024)
    path = tmp_path / "s.sqlite3"
    body = b"x" * 8192

    async def run() -> None:
        store = SQLiteStore(str(path))
        # 16 MB in all, 8 puts per batch so that the writer commits back to back, leaving no quiet moment
        # in which a concurrent checkpoint alone could find the WAL fully copied.
        monkeypatch.setattr(sqlite_store, "_BATCH", 8)
        await asyncio.gather(*(store.put("t", Record(id=f"r{k}", response=body)) for k in range(2000)))
        assert store.checkpoints >= 4
        assert store.checkpointer is not None and store.checkpointer.is_alive()
        assert [r is not None for r in await store.get_many("t", ["r0", "r999", "r1999"])] == [True] * 3
        await store.close()
        assert store.checkpointer is None

    asyncio.run(run())
    # Never rewound, the WAL would hold all 16 MB and more (26 MB measured: the writer does no automatic checkpoint).
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size < 8 * 1024 * 1024, wal.stat().st_size


def test_sqlite_checkpointer_runs_its_passes_before_the_writers_catch_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each time it is woken the checkpointer runs `_PASSES` passes in a row (each copies what came during the
    one before), so that the writer's catch-up, which holds the queued puts, finds little left to copy."""
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "s.sqlite3"
    body = b"w" * 8192

    async def run() -> None:
        store = SQLiteStore(str(path))
        await asyncio.gather(*(store.put("t", Record(id=f"r{k}", response=body)) for k in range(10)))  # > 64 KB
        for _ in range(200):  # the passes run on their own thread
            if store.checkpoints >= sqlite_store._PASSES:
                break
            await asyncio.sleep(0.01)
        assert store.checkpoints == sqlite_store._PASSES >= 2
        await store.put("t", Record(id="after", response=b"{}"))  # the writer's next batch, then its catch-up
        for _ in range(200):
            if store.checkpoints > sqlite_store._PASSES:
                break
            await asyncio.sleep(0.01)
        assert store.checkpoints == sqlite_store._PASSES + 1
        await store.close()

    asyncio.run(run())


def test_sqlite_truncates_a_wal_past_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backstop for WAL growth this process does not pace (other workers writing the same file)."""
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_BYTES", 64 * 1024)
    monkeypatch.setattr(sqlite_store, "_WAL_LIMIT", 0)
    path = tmp_path / "s.sqlite3"

    async def run() -> None:
        store = SQLiteStore(str(path))
        body = b"y" * 8192
        for start in range(0, 200, 10):
            await asyncio.gather(*(store.put("t", Record(id=f"r{k}", response=body)) for k in range(start, start + 10)))
        # The catch-up runs at the writer's first batch after the checkpointer's passes: on a busy machine the
        # passes can outlast the puts above, so a few more puts (bounded) give the writer that batch.
        deadline = time.monotonic() + 10
        extra = 200
        while store.truncations < 1 and time.monotonic() < deadline:
            await store.put("t", Record(id=f"r{extra}", response=body))
            extra += 1
            await asyncio.sleep(0.01)
        assert store.truncations >= 1
        assert [r is not None for r in await store.get_many("t", ["r0", "r199"])] == [True, True]
        await store.close()

    asyncio.run(run())


@pytest.mark.parametrize("retention", [None, 3600.0], ids=["keep", "pruned"])
def test_sqlite_put_to_a_file_that_cannot_open_fails_and_does_not_hang(tmp_path: Path, retention: float | None) -> None:
    """Also with a retention, where the first put of a store also prunes (the prune's failure ended the writer
    thread, and every later put waited for ever)."""

    async def run() -> None:
        store = SQLiteStore(str(tmp_path / "missing-dir" / "s.sqlite3"), retention=retention)
        for _ in range(2):  # the writer thread lives on after a failure
            with pytest.raises(StoreError, match="sqlite store"):
                await asyncio.wait_for(store.put("t", Record(id="r", response=b"{}")), 10)
        await store.close()

    asyncio.run(run())


def test_sqlite_commits_queued_puts_together_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"

    async def blocked(store: SQLiteStore, records: list[Record]) -> list[BaseException | None]:
        """Put `records` while another connection holds the write lock, so they queue behind the writer's
        first transaction; release the lock once all are queued."""
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        tasks = [asyncio.ensure_future(store.put("t", record)) for record in records]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in tasks)  # nothing is reported before it is committed
        blocker.execute("COMMIT")
        blocker.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    async def run() -> None:
        store = SQLiteStore(str(path))
        await store.put("t", Record(id="first", response=b"{}"))  # creates the schema
        assert store.commits == 1
        results = await blocked(store, [Record(id=f"r{k}", response=b"{}", item_ids=[f"msg_{k}"]) for k in range(50)])
        assert results == [None] * 50
        # The writer's first (blocked) transaction took what was queued by then; the rest went in one more.
        assert store.commits <= 1 + 2
        assert await store.find_item("t", "msg_7") == "r7"
        bad = Record(id="bad", response=object())  # type: ignore[arg-type]  # sqlite refuses it
        results = await blocked(store, [Record(id="a", response=b"{}"), bad, Record(id="b", response=b"{}")])
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], StoreError) and "sqlite store" in str(results[1])
        assert [r is not None for r in await store.get_many("t", ["a", "bad", "b", "r49"])] == [True, False, True, True]
        await store.close()
        assert store.writer is None

    asyncio.run(run())


def test_redis_sets_and_renews_the_ttl() -> None:
    with redis_server() as server:
        client = sync_redis.Redis.from_url(server.url)

        async def run() -> None:
            store = RedisStore(server.url, ttl=1000, prefix="p:")
            await store.put("t", Record(id="a", response=b"{}", item_ids=["msg_a"]))
            await store.put("t", Record(id="b", response=b"{}", ancestors=["a"]))
            for key in ("p:o:t:a", "p:m:t:a", "p:i:t:msg_a"):
                assert 990 < client.ttl(key) <= 1000
            client.expire("p:o:t:a", 10)
            client.expire("p:m:t:a", 10)
            records = await store.get_many("t", ["missing", "a", "b"])  # one command, renewing the chain
            assert [r.id if r else None for r in records] == [None, "a", "b"]
            assert records[2] is not None and records[2].ancestors == ["a"]
            assert client.ttl("p:o:t:a") > 990 and client.ttl("p:m:t:a") > 990
            # A background progress update keeps the TTL and does not bring back a deleted record.
            await store.update_response("t", "a", b'{"v":2}')
            assert client.ttl("p:o:t:a") > 990
            assert await store.delete("t", "a")
            await store.update_response("t", "a", b'{"v":3}')
            assert await store.get("t", "a") is None
            assert await store.get("other", "a") is None
            await store.close()

        asyncio.run(run())
        client.close()


def test_cipher_round_trip_and_refusals() -> None:
    cipher = ReasoningCipher("k1")
    item = {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "because"}], "summary": []}
    blob = cipher.seal("tenant-a", item)
    assert cipher.open("tenant-a", blob)["content"] == item["content"]
    assert cipher.seal("tenant-a", item) != blob  # a fresh nonce each time
    for tenant, text, key in [("tenant-b", blob, "k1"), ("tenant-a", blob, "k2"), ("tenant-a", blob[:-2], "k1")]:
        with pytest.raises(SealError):
            ReasoningCipher(key).open(tenant, text)


def test_store_config() -> None:
    settings = parse_settings('[store]\nbackend = "memory"\ndefault_store = false\nttl_seconds = 60\n')
    assert settings.store is not None
    assert (settings.store.default_store, settings.store.ttl_seconds) == (False, 60)
    with pytest.raises(ConfigError, match=r":1: store: the redis store needs url"):
        parse_settings('[store]\nbackend = "redis"\n')


def _post(app: App, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    out: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": "/v1/responses", "headers": []}
    asyncio.run(app(scope, receive, send))
    return out["status"], json.loads(out["body"])


def test_default_store_false_stores_nothing_unless_asked() -> None:
    app = build_app(parse_settings('[store]\nbackend = "memory"\ndefault_store = false\n'))
    status, response = _post(app, {"model": "m", "input": "hi"})
    assert status == 200 and response["store"] is False
    status, stored = _post(app, {"model": "m", "input": "hi", "store": True})
    assert status == 200 and stored["store"] is True
    assert isinstance(app.store, MemoryStore)
    assert [id for _, id in app.store.records] == [stored["id"]]


@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")  # (Python 3.12+)
def test_item_ids_are_unique_and_a_forked_worker_does_not_repeat_its_parents() -> None:
    import os

    from ferroute.store.items import new_id

    ids = {new_id("message") for _ in range(1000)}  # (several refills of the buffer)
    assert len(ids) == 1000
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # from several threads at once
        threaded = list(pool.map(lambda _: new_id("message"), range(4000)))
    assert len(set(threaded)) == 4000
    assert all(i.startswith("msg_") and len(i) == 52 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, as a Granian worker forked after the parent made ids
        os.write(write, new_id("message").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child.startswith("msg_")
    # (The random parts: the time before them may differ between the two, and so hide a repeat.)
    assert child[-36:] != new_id("message")[-36:]


def test_item_ids_start_with_the_time_in_milliseconds_so_they_sort_by_creation() -> None:
    import time

    from ferroute.store.items import new_id

    before = time.time_ns() // 1_000_000
    first = new_id("function_call")
    time.sleep(0.002)
    second = new_id("function_call")
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"fc_[0-9a-f]{48}", first)
    assert before <= int(first[3:15], 16) <= after
    assert first < second
