"""Liveness of unfinished stored responses, in-process: what the stores keep (`alive`, heartbeats, the SQLite
migration), how a stale record reads, the heartbeat's batching, and a stream's `in_progress` record written off the
way to its first event and removed when the stream never started."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from ferroute.app.heartbeat import Heartbeat, as_interrupted, is_interrupted, is_running
from ferroute.config import ConfigError, parse_settings
from ferroute.errors import upstream_status
from ferroute.models import ResponsesRequest
from ferroute.providers import Upstream
from ferroute.store import Record, Store
from ferroute.store import sqlite as sqlite_store
from ferroute.store.memory import MemoryStore
from ferroute.store.redis import RedisStore
from ferroute.store.sqlite import SQLiteStore
from tests.support.inprocess import TEXT, app_streaming, app_with, call
from tests.support.servers import redis_server

# The schema of files made before heartbeats (no `alive` column).
_BEFORE = sqlite_store._SCHEMA.replace("    alive REAL,\n", "", 1)


async def _alive_round_trip(store: Store) -> None:
    """An unfinished record keeps its heartbeat time and each beat renews it; the finished put clears it, and a
    beat that comes after (one in flight meanwhile) leaves it cleared."""
    await store.put("t", Record(id="r1", response=b'{"status":"in_progress"}', alive=100.0))
    await store.put("t", Record(id="r2", response=b'{"status":"completed"}'))
    assert [r.alive for r in await store.get_many("t", ["r1", "r2"]) if r] == [100.0, None]
    await store.beat([("t", "r1"), ("t", "r2"), ("t", "gone"), ("u", "r1")], 200.5)
    assert [r.alive for r in await store.get_many("t", ["r1", "r2"]) if r] == [200.5, None]
    await store.put("t", Record(id="r1", response=b'{"status":"completed"}'))
    await store.beat([("t", "r1")], 300.0)
    record = await store.get("t", "r1")
    assert record is not None and record.alive is None and record.response == b'{"status":"completed"}'
    assert await store.delete("t", "r1")
    await store.close()


def test_memory_and_sqlite_keep_the_heartbeat(tmp_path: Path) -> None:
    asyncio.run(_alive_round_trip(MemoryStore()))
    asyncio.run(_alive_round_trip(SQLiteStore(str(tmp_path / "new.sqlite3"))))


def test_redis_keeps_the_heartbeat_in_a_key_of_its_own() -> None:
    with redis_server() as server:
        asyncio.run(_alive_round_trip(RedisStore(server.url, prefix="x:")))
        # (the finished put and the delete left no heartbeat key behind)
        import redis as sync_redis

        client = sync_redis.Redis.from_url(server.url)
        assert client.keys("x:h:*") == []
        client.close()


@pytest.mark.parametrize("rowid", [True, False])
def test_sqlite_adds_the_heartbeat_column_to_a_file_made_before(tmp_path: Path, rowid: bool) -> None:
    """A file of the schema before heartbeats (either table layout) gets the column when opened; its rows read
    with no heartbeat (not reported interrupted), and new ones keep theirs. Two stores (workers) opening it at once
    both work."""
    schema = (
        _BEFORE if rowid else _BEFORE.replace("UNIQUE (tenant, id)\n);", "PRIMARY KEY (tenant, id)\n) WITHOUT ROWID;")
    )
    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(schema)
        conn.execute(
            "INSERT INTO responses (tenant, id, created, response, input_items, ancestors, settings)"
            " VALUES ('t', 'old', 0, ?, '[]', '[]', '{}')",
            (b'{"status":"in_progress","background":true}',),
        )
        conn.commit()
        assert "alive" not in {row[1] for row in conn.execute("PRAGMA table_info(responses)")}

    async def run() -> None:
        one, two = SQLiteStore(str(path)), SQLiteStore(str(path))
        old, _ = await asyncio.gather(one.get("t", "old"), two.get("t", "old"))
        assert old is not None and old.alive is None and not is_interrupted(old, 0.0)
        await _alive_round_trip(one)
        await two.close()

    asyncio.run(run())
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert "alive" in {row[1] for row in conn.execute("PRAGMA table_info(responses)")}


def test_a_stale_unfinished_record_reads_as_failed_interrupted() -> None:
    running = json.dumps(
        {
            "id": "resp_x",
            "status": "in_progress",
            "completed_at": None,
            "error": None,
            "output": [{"type": "message", "status": "in_progress", "content": []}],
        }
    ).encode()
    record = Record(id="resp_x", response=running, alive=time.time() - 10)
    assert is_interrupted(record, 5.0) and not is_interrupted(record, 30.0)
    assert not is_interrupted(Record(id="resp_y", response=running), 0.0)  # (no heartbeat: finished, or from before)
    failed = json.loads(as_interrupted(running, 5.0))
    assert failed["status"] == "failed" and failed["completed_at"] is None
    assert failed["error"]["code"] == "interrupted" and "5 s" in failed["error"]["message"]
    assert failed["output"][0]["status"] == "incomplete"
    assert as_interrupted(running, 5.0) == as_interrupted(running, 5.0)  # (the same bytes at every read)
    done = b'{"status":"completed"}'
    assert as_interrupted(done, 5.0) is done
    # Running (so not to be continued yet): unfinished, with a fresh heartbeat.
    assert is_running(Record(id="r", response=running, alive=time.time()), 5.0)
    assert not is_running(record, 5.0)  # (stale: interrupted, it has ended)
    # (a background response cancelled by a reader for a worker that is gone keeps its last heartbeat time)
    assert not is_running(Record(id="r", response=b'{"status":"cancelled"}', alive=time.time()), 5.0)


def test_heartbeat_settings() -> None:
    settings = parse_settings("[store]\nheartbeat_interval = 1\ninterrupted_after = 10\n")
    assert settings.store is not None
    assert (settings.store.heartbeat_interval, settings.store.interrupted_after) == (1.0, 10.0)
    with pytest.raises(ConfigError, match=r"interrupted_after must be more than twice heartbeat_interval"):
        parse_settings("[store]\nheartbeat_interval = 5\ninterrupted_after = 10\n")


def test_one_heartbeat_write_per_interval_for_all_running_responses() -> None:
    class Counting(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.beats: list[list[tuple[str, str]]] = []

        async def beat(self, records: Sequence[tuple[str, str]], now: float) -> None:
            self.beats.append(sorted(records))

    async def run() -> None:
        store = Counting()
        heart = Heartbeat(store, 0.05, lambda op, e: None)
        for k in range(50):
            heart.add("t", f"r{k}")
        await asyncio.sleep(0.13)
        assert len(store.beats) == 2 and all(len(b) == 50 for b in store.beats)
        for k in range(50):
            heart.remove("t", f"r{k}")
        await asyncio.sleep(0.12)
        assert len(store.beats) == 2  # nothing running: no writes, and the timer chain has stopped
        assert heart.handle is None

    asyncio.run(run())


def test_a_stream_is_recorded_before_its_first_event_is_sent() -> None:
    """The `in_progress` record is written at the loop's turn after the upstream request went out: here the
    upstream's first read is held until the record is in the store."""
    seen: list[bytes] = []

    async def run() -> None:
        app = app_streaming([TEXT])
        store = app.store
        assert isinstance(store, MemoryStore)
        original = app.pump.work

        async def work(ex):  # type: ignore[no-untyped-def]
            for _ in range(2):  # (the upstream request on its way: a turn for the write, one for the memory put's task)
                await asyncio.sleep(0)
            record = await store.get("anonymous", ex.translator.response_id)
            assert record is not None and b'"status":"in_progress"' in record.response
            assert record.alive is not None and json.loads(record.input_items)[0]["content"][0]["text"] == "hi"
            seen.append(record.response)
            await original(ex)

        app.pump.work = work  # type: ignore[method-assign]
        status, body = await call(app, {"model": "m:p", "input": "hi", "stream": True})
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        [record] = store.records.values()
        assert b'"status":"completed"' in record.response and record.alive is None
        assert app.records.opening == {} and app.records.heartbeat.live == set()

    asyncio.run(run())
    assert seen


def test_a_stream_that_fails_before_its_first_byte_leaves_no_record() -> None:
    """An upstream error answered as an HTTP error: the client never saw the response's id, and nothing is kept
    (as before records were written at creation)."""

    async def open_(request: ResponsesRequest, upstream_model: str, transport: httpx.AsyncBaseTransport) -> Upstream:
        await asyncio.sleep(0.01)
        raise upstream_status("p", 503, None)

    async def run() -> None:
        app = app_with(open_)
        status, _ = await call(app, {"model": "m:p", "input": "hi", "stream": True})
        assert status == 502
        assert isinstance(app.store, MemoryStore) and app.store.records == {}
        assert app.records.opening == {} and app.records.heartbeat.live == set()

    asyncio.run(run())
