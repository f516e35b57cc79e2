"""`McpPool`: MCP client sessions over streamable HTTP, one per (server URL, headers, guard), shared by every request
and tool call of a worker.

A session is an `mcp.Client`, whose transport lives in anyio task groups that must be entered and left in one task:
each session has a task of its own (`_Session.run`) that opens it, publishes it and waits to be told to close. Calls
from any task go through it at once (MCP matches answers to requests by id), each in a task of its own so that its
timeout and its caller's cancellation work in whatever task the caller runs (Granian's "rust" tasks cannot be
cancelled) and end only that call.

When a session breaks (its transport's task group fails: the server went away, a request was refused), its task
ends and it leaves the pool; the next use opens a new one. A call is sent again, once, on a new session only when
the server cannot have run it: the session was already gone, or the server answered 404 to the session's id (it
restarted and forgot the session). A listing, which changes nothing, is retried once after any failure of the
session. Sessions idle for `idle_timeout` seconds, or past `max_sessions`, are closed.

Header values are credentials: they go to the HTTP client and nowhere else (no message, log line or repr).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ferroute.tools.mcp.guard import UrlGuard
from ferroute.tools.mcp.results import CallResult, McpError, McpTool, cap, render, tool

if TYPE_CHECKING:
    from mcp import Client

T = TypeVar("T")
error_log = logging.getLogger("ferroute.error")
Key = tuple[str, tuple[tuple[str, str], ...], tuple[str, ...] | None]

_MAX_PAGES = 100  # of a tools/list walk: a server whose cursor never ends cannot hang a listing
_BROKEN_GRACE = 2.0  # seconds a call that lost its connection waits to learn why the session ended


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions an exception group holds, at any depth (or the exception itself)."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple):
        for e in inner:
            yield from _leaves(e)
    else:
        yield exc


def _host(url: str) -> str:
    """The host of a server's URL, for a log line (never its path or query, which may hold a key)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _why(exc: BaseException, status: int | None) -> str:
    """What ended (or never opened) a session, in words safe for a client: no URL, no header, no server text that
    could echo them (a JSON-RPC error's message is the server's own)."""
    import httpx2
    from mcp import MCPError

    leaves = list(_leaves(exc))
    for e in leaves:
        if isinstance(e, McpError):
            return str(e)
    for e in leaves:
        if isinstance(e, httpx2.ConnectTimeout):
            return "timed out connecting to the MCP server"
        if isinstance(e, httpx2.ConnectError):
            return "could not connect to the MCP server"
        if isinstance(e, httpx2.TimeoutException):
            return "the MCP server timed out"
        if isinstance(e, httpx2.HTTPError):
            return f"the connection to the MCP server failed ({type(e).__name__})"
    if status is not None:
        return f"the MCP server refused the session (HTTP {status})"
    for e in leaves:
        if isinstance(e, MCPError):
            return f"the MCP server refused the session: {e.message}"
    return f"the MCP session failed ({type(leaves[0]).__name__})"


class _Session:
    """One pooled MCP session and the task that owns it."""

    def __init__(self, pool: McpPool, key: Key, url: str, headers: Mapping[str, str], guard: UrlGuard | None) -> None:
        self.pool = pool
        self.key = key
        self.client: Client | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # (read: never "not retrieved")
        self.failure: str | None = None  # why the session ended, once it did
        self.status: int | None = None  # the last HTTP status of 400 or more
        self.session_lost = False  # the server answered 404 to the session's id
        self.in_use = 0
        self.last_used = time.monotonic()
        self._stop = asyncio.Event()
        self.task = asyncio.ensure_future(self.run(url, headers, guard))

    def __repr__(self) -> str:
        return f"<MCP session {_host(self.key[0])} {'open' if self.alive else 'ended'}>"

    @property
    def alive(self) -> bool:
        return not self.task.done() and not self.session_lost

    def _on_error_status(self, status: int, had_session_id: bool) -> None:
        self.status = status
        if status == 404 and had_session_id:
            self.session_lost = True

    async def run(self, url: str, headers: Mapping[str, str], guard: UrlGuard | None) -> None:
        """Opens the session, publishes it (`ready`), and holds it open until `close` or until it breaks."""
        import anyio
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        from ferroute.tools.mcp._http import http_client

        timeout = self.pool.connect_timeout
        deadline = anyio.current_time() + timeout
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                async with (
                    http_client(url, headers, guard, timeout, self._on_error_status) as http,
                    Client(streamable_http_client(url, http_client=http), cache=None) as client,
                ):
                    scope.deadline = math.inf  # (the deadline bounds the handshake only)
                    self.client = client
                    self.ready.set_result(None)
                    await self._stop.wait()
            if scope.cancelled_caught and not self.ready.done():
                self.failure = f"timed out connecting to the MCP server after {timeout:g} s"
        except Exception as e:
            if not self.ready.done() and anyio.current_time() >= deadline:
                self.failure = f"timed out connecting to the MCP server after {timeout:g} s"
            else:
                self.failure = _why(e, None if self.ready.done() else self.status)
            if self.ready.done():  # (an open session broke: the callers hear why; the operator should too)
                error_log.warning("MCP session to %s ended: %s", _host(url), self.failure)
        finally:
            self.client = None
            if self.failure is None:
                self.failure = "the MCP session was closed"
            if not self.ready.done():
                self.ready.set_exception(McpError(self.failure))
            self.pool._forget(self)

    def close(self) -> None:
        self._stop.set()


class McpPool:
    """MCP client sessions over streamable HTTP, pooled per (url, headers): one initialize handshake per server and
    credentials, reused by every request and call until it breaks (then one reconnect, then the error).

    `call_timeout` bounds each tool call, `connect_timeout` each handshake and each listing; `max_output_bytes`
    caps a result's text. Sessions unused for `idle_timeout` seconds are closed, and the least recently used
    idle ones past `max_sessions` (requests may name servers and credentials of their own)."""

    def __init__(
        self,
        *,
        call_timeout: float,
        max_output_bytes: int,
        connect_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        max_sessions: int = 64,
    ) -> None:
        self.call_timeout = call_timeout
        self.max_output_bytes = max_output_bytes
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._sessions: dict[Key, _Session] = {}
        self._ending: set[asyncio.Future[Any]] = set()  # tasks left to finish on their own (closing, cancelled)
        self._closed = False

    def __repr__(self) -> str:
        return f"<McpPool {len(self._sessions)} sessions>"

    # ---- sessions

    def _forget(self, session: _Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]

    def _let_finish(self, task: asyncio.Future[Any]) -> None:
        """Keeps a task that nobody awaits any more referenced until it ends (and reads its outcome)."""
        if not task.done():
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _retire(self, session: _Session) -> None:
        self._forget(session)
        session.close()
        self._let_finish(session.task)

    def _sweep(self, room: int) -> None:
        """Closes idle sessions: those unused for `idle_timeout`, and the least recently used past `max_sessions`
        less `room` (for sessions about to open)."""
        now = time.monotonic()
        idle = sorted((s for s in self._sessions.values() if s.in_use == 0), key=lambda s: s.last_used)
        excess = len(self._sessions) + room - self.max_sessions
        for session in idle:
            if excess > 0 or now - session.last_used > self.idle_timeout:
                self._retire(session)
                excess -= 1

    async def _open(self, url: str, headers: Mapping[str, str], guard: UrlGuard | None) -> _Session:
        """A live session for (url, headers, guard), opening one if needed; raises `McpError`. The caller must
        `_release` it."""
        if self._closed:
            raise McpError("the MCP client is shut down")
        if guard is not None:
            guard.check(url)  # (and the HTTP client checks every request it sends, addresses included)
        key: Key = (
            url,
            tuple(sorted((name.lower(), value) for name, value in headers.items())),
            None if guard is None else guard.prefixes,
        )
        self._sweep(0)
        session = self._sessions.get(key)
        if session is None or not session.alive:
            if session is not None:
                self._retire(session)
            self._sweep(1)
            session = self._sessions[key] = _Session(self, key, url, headers, guard)
        session.in_use += 1
        try:
            await asyncio.shield(session.ready)
        except BaseException:
            self._release(session)
            raise
        return session

    def _release(self, session: _Session) -> None:
        session.in_use -= 1
        session.last_used = time.monotonic()

    async def _bounded(self, work: Awaitable[T], seconds: float) -> T:
        """`work` run in a task of its own, for at most `seconds`: raises TimeoutError after that (and cancels the
        task). If the caller is cancelled, the task is cancelled too and the caller's cancellation goes on at once
        (the task's own cancellation runs on beside it)."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task,), timeout=seconds)
        except BaseException:
            task.cancel()
            self._let_finish(task)
            raise
        if not task.done():
            task.cancel()
            self._let_finish(task)
            raise TimeoutError
        return task.result()

    async def _broken(self, session: _Session) -> str:
        """Why `session` broke under a request: its task ends (moments after the request learnt) and says."""
        await asyncio.wait((session.task,), timeout=_BROKEN_GRACE)
        return session.failure or "the connection to the MCP server broke"

    # ---- the API

    async def list_tools(self, url: str, headers: Mapping[str, str], *, guard: UrlGuard | None = None) -> list[McpTool]:
        """The tools the server at `url` lists (every page). Raises `McpError`; `guard` None: a config server
        (trusted). Bounded by `connect_timeout` (besides the handshake's own)."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED
        from pydantic import ValidationError

        for attempt in range(2):
            session = await self._open(url, headers, guard)
            try:
                return await self._bounded(self._list(session), self.connect_timeout)
            except TimeoutError:
                raise McpError(f"the MCP server did not list its tools within {self.connect_timeout:g} s") from None
            except MCPError as e:
                if e.code != CONNECTION_CLOSED and not session.session_lost:
                    raise McpError(f"the MCP server failed to list its tools: {e.message}") from None
                why = await self._broken(session) if e.code == CONNECTION_CLOSED else "the MCP server lost the session"
                self._retire(session)
                if attempt == 1:
                    raise McpError(why) from None
            except ValidationError:
                raise McpError("the MCP server sent a malformed tool list") from None
            finally:
                self._release(session)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _list(self, session: _Session) -> list[McpTool]:
        client = session.client
        if client is None:
            raise McpError(session.failure or "the MCP session was closed")
        tools: list[McpTool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools += (tool(listed) for listed in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call(
        self,
        url: str,
        headers: Mapping[str, str],
        name: str,
        arguments: dict[str, Any],
        *,
        guard: UrlGuard | None = None,
    ) -> CallResult:
        """Calls tool `name` on the server at `url`. Never raises for the tool's errors, a timeout or a dead server:
        those come back as `CallResult(error=...)`. A caller's cancellation goes on at once, and only this call is
        cancelled on the session."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED
        from pydantic import ValidationError

        for attempt in range(2):
            try:
                session = await self._open(url, headers, guard)
            except McpError as e:
                return self._error(str(e))
            try:
                client = session.client
                if client is None:  # (ended between its publication and now)
                    raise MCPError(CONNECTION_CLOSED, "Connection closed")
                result = await self._bounded(client.call_tool(name, arguments), self.call_timeout)
            except TimeoutError:
                return self._error(f"the tool call timed out after {self.call_timeout:g} s", "timeout")
            except MCPError as e:
                if session.session_lost and attempt == 0:
                    self._retire(session)  # the server forgot the session, so it did not run the call: again
                    continue
                if e.code == CONNECTION_CLOSED or session.session_lost:
                    why = (
                        await self._broken(session)
                        if e.code == CONNECTION_CLOSED
                        else "the MCP server lost the session"
                    )
                    self._retire(session)
                    return self._error(why)
                return self._error(f"the MCP server failed the call: {e.message}")
            except ValidationError:
                return self._error("the MCP server sent a malformed tool result")
            except Exception as e:  # (the mcp package's own failures, e.g. a result claimed by no extension)
                return self._error(f"the MCP tool call failed ({type(e).__name__})")
            finally:
                self._release(session)
            return render(result, self.max_output_bytes)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, message: str, kind: str = "server") -> CallResult:
        return CallResult(error=cap(message, self.max_output_bytes), kind=kind)

    async def aclose(self) -> None:
        """Closes every session (the worker's shutdown); the pool opens no more."""
        self._closed = True
        sessions = list(self._sessions.values())
        for session in sessions:
            self._retire(session)
        pending = [t for t in self._ending if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.connect_timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
