"""The limiter's Redis client (`ferroute.routing.resp`) against a real `redis-server`: replies in order over one
pipelined connection, scripts by SHA-1 with EVAL when the server has not seen them, the URL's password and
database, error replies, a server that does not answer, and a caller that goes away mid-call."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from ferroute.routing.resp import RespClient, RespError, _Connection, client_for, encode_command, parse_reply
from tests.support.servers import Server, free_port, redis_server


@pytest.fixture(scope="module")
def redis() -> Iterator[Server]:
    with redis_server() as server:
        yield server


def test_replies_split_anywhere_resolve_their_calls_in_order() -> None:
    replies = b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n:1\r\n$0\r\n\r\n*1\r\n:-7\r\n-ERR no\r\n*-1\r\n"
    expected = ["OK", 42, b"hello", None, [1, b"", [-7]], "ERR no", None]
    for cut in range(1, len(replies)):
        loop = asyncio.new_event_loop()
        try:
            connection = _Connection()
            futures = [loop.create_future() for _ in expected]
            connection.waiting.extend(futures)
            connection.data_received(replies[:cut])
            connection.data_received(replies[cut:])
            got = [str(f.exception()) if f.exception() else f.result() for f in futures]
            assert got == expected, cut
            assert not connection.buffer
        finally:
            loop.close()


def test_encoding_and_parsing_round_trip() -> None:
    assert (
        encode_command(["SET", "k", 1, b"\x00\xff"]) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$2\r\n\x00\xff\r\n"
    )
    assert parse_reply(b"*2\r\n:1\r\n:2\r\n", 0) == ([1, 2], 12)


def test_commands_scripts_and_errors(redis: Server) -> None:
    async def run() -> None:
        client = RespClient.from_url(redis.url)
        assert client is not None
        assert await client.call("PING") == "PONG"
        # Pipelined: many calls at once on the one connection, each gets its own reply.
        values = await asyncio.gather(*(client.call("ECHO", str(i)) for i in range(200)))
        assert values == [str(i).encode() for i in range(200)]
        script = client.register_script("return {tonumber(ARGV[1]) + 1, KEYS[1]}")
        await client.call("SCRIPT", "FLUSH")
        assert await script(keys=["k"], args=[41]) == [42, b"k"]  # (NOSCRIPT: sent whole, then cached)
        assert await script(keys=["k"], args=[1]) == [2, b"k"]
        with pytest.raises(RespError, match="ERR"):
            await client.call("NOSUCHCOMMAND")
        assert await client.call("PING") == "PONG"  # (an error reply leaves the connection in step)
        await client.aclose()

    asyncio.run(run())


def test_a_caller_that_goes_away_leaves_the_replies_in_step(redis: Server) -> None:
    async def run() -> None:
        client = RespClient.from_url(redis.url)
        assert client is not None
        slow = asyncio.ensure_future(client.call("BLPOP", "never-pushed", "0.3"))
        await asyncio.sleep(0.05)
        slow.cancel()
        assert await client.call("ECHO", "after") == b"after"
        await client.aclose()

    asyncio.run(run())


@contextlib.contextmanager
def _password_redis(password: str) -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", password],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://:{password}@127.0.0.1:{port}/3"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_urls_password_and_database() -> None:
    with _password_redis("s3cret/pass") as url:

        async def run() -> None:
            client = RespClient.from_url(url.replace("s3cret/pass", "s3cret%2Fpass"))
            assert client is not None and client.db == 3
            await client.call("SET", "where", "here")
            assert await client.call("CLIENT", "INFO") is not None
            assert (await client.call("CLIENT", "INFO")).find(b"db=3") >= 0
            wrong = RespClient.from_url(url.replace("s3cret/pass", "wrong"))
            assert wrong is not None
            with pytest.raises(RespError):
                await wrong.call("PING")
            await client.aclose()

        asyncio.run(run())


def test_a_server_that_does_not_answer_times_out_and_the_next_call_connects_again() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def run() -> None:
        client = RespClient("127.0.0.1", port, timeout=0.2)
        began = time.monotonic()
        with pytest.raises(RespError, match="did not answer"):
            await client.call("PING")
        assert time.monotonic() - began < 2
        first = client.connection
        assert first is not None and first.closed
        with pytest.raises(RespError):
            await client.call("PING")
        assert client.connection is not first  # (a new connection for the next call)
        await client.aclose()

    try:
        asyncio.run(run())
    finally:
        listener.close()


def test_other_urls_go_to_redis_py() -> None:
    assert isinstance(client_for("redis://127.0.0.1:6379/0"), RespClient)
    assert not isinstance(client_for("rediss://127.0.0.1:6380/0"), RespClient)
    with pytest.raises(ConnectionRefusedError):  # (nothing listens there)
        asyncio.run(RespClient("127.0.0.1", free_port()).call("PING"))
