"""A small Redis client for the rate limiter's scripts (`ferroute.routing.keys.RedisLimits`): one pipelined
connection speaking RESP2 on asyncio's protocol API, and `register_script` as redis-py has it (EVALSHA, then EVAL
when the server answers NOSCRIPT).

Why not redis-py: an admission is one script call on the way to the upstream, and redis-py's asyncio client spent
about 250 µs of CPU per call (its pool, its timeouts, its parser; 170 µs with hiredis), which made a limited key
cost twice a plain request's CPU (`bench/routing_cost.py`). Here a call is a write of the encoded command and a
future the reply resolves. Replies come back in the order the commands went, so each call appends its future to
the connection's queue; a reply for a caller that went away (cancelled) is read and dropped. A call that times
out closes the connection (the replies would be out of step) and fails every call waiting on it; the next call
connects again.

`redis://[[user]:password@]host[:port][/db]` only: other URLs (`rediss://`, `unix://`) go to redis-py
(`client_for`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

_CRLF = b"\r\n"


class RespError(Exception):
    """An error reply (`-ERR …`, `-NOSCRIPT …`) or a broken connection."""


class _Incomplete(Exception):
    pass


def encode_command(parts: Sequence[bytes | str | int | float]) -> bytes:
    """A command as RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, bytes):
            data = part
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One reply from `buf` at `pos`: the value and where the next begins. Simple strings are str, bulk strings
    bytes, integers int, arrays lists, nulls None, errors a `RespError` (returned, not raised). Raises `_Incomplete`
    when the reply has not all arrived."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    line = bytes(buf[pos + 1 : end])
    after = end + 2
    if kind == 0x3A:  # ':'
        return int(line), after
    if kind == 0x24:  # '$'
        size = int(line)
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            raise _Incomplete
        return bytes(buf[after : after + size]), after + size + 2
    if kind == 0x2A:  # '*'
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse_reply(buf, after)
            items.append(item)
        return items, after
    if kind == 0x2B:  # '+'
        return line.decode(errors="replace"), after
    if kind == 0x2D:  # '-'
        return RespError(line.decode(errors="replace")), after
    raise RespError(f"malformed reply from redis (type byte {kind!r})")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's transports are not subclasses)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos = 0
        try:
            while pos < len(buffer):
                try:
                    value, pos_after = parse_reply(buffer, pos)
                except _Incomplete:
                    break
                pos = pos_after
                if not self.waiting:
                    raise RespError("a reply nobody asked for")
                future = self.waiting.popleft()
                if not future.done():  # (its caller may have gone: cancelled)
                    if isinstance(value, RespError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except (RespError, ValueError) as e:
            self.fail(RespError(f"redis connection out of step: {e}"))
            return
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = RespError(f"redis connection lost: {exc}" if exc else "redis closed the connection")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def fail(self, error: RespError) -> None:
        """Close the connection; every call waiting on it fails with `error`."""
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class RespClient:
    """One lazily opened, pipelined connection to a Redis server."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.timeout = timeout
        self.connection: _Connection | None = None
        self.connecting: asyncio.Future[_Connection] | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 2.0) -> RespClient | None:
        """A client for a `redis://` URL; None for a URL it does not speak (TLS, a unix socket)."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            return None
        path = parts.path.strip("/")
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            db=int(path) if path else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            timeout=timeout,
        )

    async def call(self, *parts: bytes | str | int | float) -> Any:
        """One command; its reply (an error reply raises `RespError`, and so does a lost connection). At most
        `timeout` seconds."""
        connection = self.connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await self._send(connection, encode_command(parts))

    async def _send(self, connection: _Connection, command: bytes) -> Any:
        if connection.closed or connection.transport is None:  # (closed while this call waited for it)
            raise RespError("redis connection closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        connection.waiting.append(future)
        connection.transport.write(command)
        timer = loop.call_later(self.timeout, _expire, connection, future, self.timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def _connect(self) -> _Connection:
        """The connection, opened once for every caller that needs it meanwhile."""
        if self.connecting is not None:
            return await asyncio.shield(self.connecting)
        loop = asyncio.get_running_loop()
        self.connecting = opening = loop.create_future()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port), self.timeout
            )
            try:
                if self.password is not None:
                    auth = ["AUTH", self.username, self.password] if self.username else ["AUTH", self.password]
                    await self._send(connection, encode_command(auth))
                if self.db:
                    await self._send(connection, encode_command(["SELECT", self.db]))
            except BaseException:
                connection.fail(RespError("redis connection setup failed"))
                raise
        except BaseException as e:
            opening.set_exception(e if isinstance(e, Exception) else RespError("redis connect cancelled"))
            opening.exception()  # (retrieved: no "never retrieved" warning when no one else waited)
            raise
        finally:
            self.connecting = None
        self.connection = connection
        opening.set_result(connection)
        return connection

    def register_script(self, source: str) -> Script:
        return Script(self, source)

    async def aclose(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


def _expire(connection: _Connection, future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        connection.fail(RespError(f"redis did not answer in {timeout:g} s"))


class Script:
    """A Lua script called by its SHA-1 (loaded by the first call that finds it missing), as redis-py's."""

    def __init__(self, client: RespClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # (Redis names scripts so)

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[bytes | str | int | float] = ()) -> Any:
        try:
            return await self.client.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except RespError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.client.call("EVAL", self.source, len(keys), *keys, *args)


def client_for(url: str, *, timeout: float = 2.0) -> Any:
    """The limiter's client for `url`: this module's for `redis://`, redis-py's for anything else."""
    client = RespClient.from_url(url, timeout=timeout)
    if client is not None:
        return client
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
