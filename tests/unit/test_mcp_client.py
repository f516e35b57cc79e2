"""The MCP client (`ferroute.tools.mcp`) against real MCP servers: `ferroute mcp-demo` processes, in both protocol eras
(the 2026 one without a handshake, and the handshake-era one most servers still speak)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from ferroute.tools.mcp import CallResult, McpError, McpPool, UrlGuard
from ferroute.tools.mcp.results import cap, render
from tests.support.mcp_server import mcp_demo, mcp_server_fixture, shared_mcp_demo  # noqa: F401
from tests.support.servers import Server, free_port

T = TypeVar("T")
SECRET = "tok-0f1e2d3c-SECRET"


def run(work: Awaitable[T]) -> T:
    async def main() -> T:
        return await work

    return asyncio.run(main())


@pytest.fixture(scope="module", params=[False, True], ids=["2026", "handshake"])
def server(request: pytest.FixtureRequest) -> Server:
    """A demo server of each protocol era."""
    return shared_mcp_demo(legacy=request.param)


async def sessions(pool: McpPool, url: str, headers: dict[str, str] | None = None) -> int:
    """How many sessions the server has opened so far (asked over `pool`'s session for `headers`)."""
    result = await pool.call(url, headers or {}, "sessions", {})
    assert result.output is not None, result.error
    return int(result.output)


@contextlib.asynccontextmanager
async def pool_of(**options: Any) -> Any:
    pool = McpPool(**{"call_timeout": 10.0, "max_output_bytes": 65536, **options})
    try:
        yield pool
    finally:
        await pool.aclose()


def test_importing_the_package_does_not_import_mcp() -> None:
    code = (
        "import sys, ferroute.tools.mcp as m; m.UrlGuard(['https://']).check('https://example.com/mcp');"
        "m.McpPool(call_timeout=1, max_output_bytes=1);"
        "print(sorted(n for n in ('mcp', 'mcp_types', 'httpx2', 'anyio') if n in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_lists_the_tools(server: Server) -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            tools = {tool.name: tool for tool in await pool.list_tools(server.url, {})}
            assert sorted(tools) == ["add", "echo_header", "fail", "large", "sessions", "sleep"]
            add = tools["add"]
            assert add.description == "Add two numbers."
            assert add.input_schema["type"] == "object"
            assert add.input_schema["properties"]["a"]["type"] == "number"
            assert add.input_schema["required"] == ["a", "b"]
            assert add.annotations == {"readOnlyHint": True, "idempotentHint": True}
            assert tools["sleep"].annotations is None

    run(scenario())


def test_calls_a_tool(server: Server) -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            assert await pool.call(server.url, {}, "add", {"a": 2, "b": 3}) == CallResult(output="5")
            assert await pool.call(server.url, {}, "add", {"a": 2.5, "b": 1}) == CallResult(output="3.5")

    run(scenario())


def test_a_tool_error_is_the_result_not_an_exception(server: Server) -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            assert await pool.call(server.url, {}, "fail", {"message": "no such city"}) == CallResult(
                error="no such city"
            )
            unknown = await pool.call(server.url, {}, "no_such_tool", {})
            assert unknown.output is None and unknown.error and "no_such_tool" in unknown.error
            # (and the session goes on)
            assert await pool.call(server.url, {}, "add", {"a": 1, "b": 1}) == CallResult(output="2")

    run(scenario())


def test_a_call_times_out_and_the_session_goes_on(server: Server) -> None:
    async def scenario() -> None:
        async with pool_of(call_timeout=0.5) as pool:
            before = await sessions(pool, server.url)
            started = time.monotonic()
            result = await pool.call(server.url, {}, "sleep", {"seconds": 5})
            assert result == CallResult(error="the tool call timed out after 0.5 s")
            assert result.kind == "timeout"
            assert time.monotonic() - started < 2
            assert await pool.call(server.url, {}, "sleep", {"seconds": 0.1}) == CallResult(output="slept 0.1 s")
            assert await sessions(pool, server.url) == before  # the same session

    run(scenario())


def test_a_timeout_works_in_a_task_that_cannot_be_cancelled(mcp_server: Server) -> None:
    # Granian's "rust" task implementation runs requests in tasks whose `cancel` does nothing: a timeout that
    # cancels the caller's task (asyncio.timeout, anyio.fail_after) would never fire there.
    class Uncancellable(asyncio.Task[Any]):
        def cancel(self, msg: Any = None) -> bool:
            return False

    async def scenario() -> None:
        async with pool_of(call_timeout=0.5) as pool:
            work = pool.call(mcp_server.url, {}, "sleep", {"seconds": 5})
            task = Uncancellable(work, loop=asyncio.get_running_loop())
            started = time.monotonic()
            done, _ = await asyncio.wait((task,), timeout=4)
            assert done and task.result() == CallResult(error="the tool call timed out after 0.5 s")
            assert time.monotonic() - started < 2.5

    run(scenario())


def test_large_output_is_cut_with_a_note(mcp_server: Server) -> None:
    async def scenario() -> None:
        async with pool_of(max_output_bytes=1000) as pool:
            result = await pool.call(mcp_server.url, {}, "large", {"size": 5000})
            assert result == CallResult(output="x" * 1000 + "\n[output cut: 1000 of 5000 bytes]")
            assert await pool.call(mcp_server.url, {}, "large", {"size": 1000}) == CallResult(output="x" * 1000)
            failed = await pool.call(mcp_server.url, {}, "fail", {"message": "é" * 600})
            assert failed == CallResult(error="é" * 500 + "\n[output cut: 1000 of 1200 bytes]")

    run(scenario())


def test_results_as_text_for_the_model() -> None:
    from mcp_types import (
        BlobResourceContents,
        CallToolResult,
        EmbeddedResource,
        ImageContent,
        ResourceLink,
        TextContent,
        TextResourceContents,
    )

    def text(*content: Any, structured: Any = None, error: bool = False) -> CallResult:
        return render(CallToolResult(content=list(content), structured_content=structured, is_error=error), 1000)

    image = ImageContent(type="image", data="AAECAw==", mime_type="image/png")  # 4 bytes
    assert text(TextContent(type="text", text="a"), TextContent(type="text", text="b")) == CallResult(output="a\nb")
    assert text(TextContent(type="text", text="a"), structured={"n": 1}) == CallResult(output="a")
    assert text(structured={"n": 1, "s": "é"}) == CallResult(output='{"n": 1, "s": "é"}')
    assert text(image, structured=[1]) == CallResult(output="[1]\n[image: image/png, 4 bytes]")
    assert text(image, TextContent(type="text", text="a")) == CallResult(output="[image: image/png, 4 bytes]\na")
    link = ResourceLink(type="resource_link", uri="file:///r.txt", name="r")
    assert text(link) == CallResult(output="[resource link: file:///r.txt]")
    page = TextResourceContents(uri="file:///p.md", text="# page", mime_type="text/markdown")
    assert text(EmbeddedResource(type="resource", resource=page)) == CallResult(output="# page")
    blob = BlobResourceContents(uri="file:///b.bin", blob="AAEC", mime_type="application/zip")
    assert text(EmbeddedResource(type="resource", resource=blob)) == CallResult(
        output="[resource: file:///b.bin, application/zip, 3 bytes]"
    )
    assert text() == CallResult(output="")
    assert text(error=True) == CallResult(error="the tool reported an error")
    assert text(TextContent(type="text", text="x" * 2000), error=True) == CallResult(
        error="x" * 1000 + "\n[output cut: 1000 of 2000 bytes]"
    )
    with pytest.raises(ValueError, match="exactly one"):
        CallResult(output="a", error="b")


def test_the_cut_keeps_whole_characters() -> None:
    assert cap("aé€😀", 100) == "aé€😀"
    assert cap("aé€😀", 5) == "aé\n[output cut: 3 of 10 bytes]"  # (€ would have been cut in two)
    assert cap("€€", 3) == "€\n[output cut: 3 of 6 bytes]"


def test_one_session_per_server_and_credentials(server: Server) -> None:
    async def scenario() -> None:
        async with pool_of() as other:
            before = await sessions(other, server.url)
        async with pool_of() as pool:
            headers = {"X-Api-Key": "one"}
            # Several requests at once on a new pool share one handshake.
            listings = await asyncio.gather(*(pool.list_tools(server.url, headers) for _ in range(5)))
            assert all(len(tools) == 6 for tools in listings)
            assert await sessions(pool, server.url, headers) == before + 1
            for _ in range(3):
                assert await pool.call(server.url, headers, "add", {"a": 1, "b": 2}) == CallResult(output="3")
            await asyncio.gather(*(pool.list_tools(server.url, {"x-api-key": "one"}) for _ in range(3)))
            assert await sessions(pool, server.url, headers) == before + 1
            # Other credentials: a session of their own.
            assert await sessions(pool, server.url, {"X-Api-Key": "two"}) == before + 2
            assert await sessions(pool, server.url, headers) == before + 2

    run(scenario())


def test_concurrent_calls_share_one_session(server: Server) -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            before = await sessions(pool, server.url)
            started = time.monotonic()
            results = await asyncio.gather(*(pool.call(server.url, {}, "sleep", {"seconds": 1}) for _ in range(10)))
            assert time.monotonic() - started < 3  # (one after the other: 10 s)
            assert results == [CallResult(output="slept 1 s")] * 10
            assert await sessions(pool, server.url) == before

    run(scenario())


def test_a_cancelled_caller_is_cancelled_at_once_and_the_session_goes_on(server: Server) -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            before = await sessions(pool, server.url)
            slow = asyncio.ensure_future(pool.call(server.url, {}, "sleep", {"seconds": 5}))
            beside = asyncio.ensure_future(pool.call(server.url, {}, "sleep", {"seconds": 0.5}))
            await asyncio.sleep(0.2)
            slow.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await slow
            assert time.monotonic() - started < 0.2
            assert await beside == CallResult(output="slept 0.5 s")
            assert await pool.call(server.url, {}, "add", {"a": 1, "b": 2}) == CallResult(output="3")
            assert await sessions(pool, server.url) == before

    run(scenario())


@pytest.mark.parametrize("legacy", [False, True], ids=["2026", "handshake"])
def test_a_restarted_server_gets_a_new_session(legacy: bool, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()

    async def call(pool: McpPool, url: str) -> CallResult:
        return await pool.call(url, {}, "add", {"a": 1, "b": 2})

    async def scenario() -> None:
        async with pool_of(connect_timeout=3) as pool:
            with mcp_demo(port, legacy=legacy) as server:
                url = server.url
                assert await call(pool, url) == CallResult(output="3")
            # The server is gone: an error, soon.
            started = time.monotonic()
            assert await call(pool, url) == CallResult(error="could not connect to the MCP server")
            assert time.monotonic() - started < 3
            assert "MCP session to 127.0.0.1 ended: could not connect to the MCP server" in caplog.text
            with mcp_demo(port, legacy=legacy):
                assert await call(pool, url) == CallResult(output="3")
                assert await sessions(pool, url) == 1  # this server's first
            # Restarted while the session was idle: a handshake-era server answers the old session's id with 404,
            # so the call did not run, and goes again on a new session; a 2026 server has no sessions to forget.
            with mcp_demo(port, legacy=legacy):
                assert await call(pool, url) == CallResult(output="3")
                assert await sessions(pool, url) == (1 if legacy else 0)

    run(scenario())


def test_a_server_that_never_answers_the_handshake() -> None:
    # It accepts connections (the kernel does, into the backlog) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"

        async def scenario() -> None:
            async with pool_of(connect_timeout=0.5) as pool:
                started = time.monotonic()
                with pytest.raises(McpError, match=r"^timed out connecting to the MCP server after 0.5 s$"):
                    await pool.list_tools(url, {})
                result = await pool.call(url, {}, "add", {"a": 1, "b": 2})
                assert result == CallResult(error="timed out connecting to the MCP server after 0.5 s")
                assert time.monotonic() - started < 3

        run(scenario())


def test_credentials_reach_the_server_and_no_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": f"key-{SECRET}"}
    bad = {"Authorization": f"Bearer wrong-{SECRET}"}
    errors: list[str] = []

    async def scenario(url: str) -> None:
        async with pool_of(call_timeout=0.5) as pool:
            assert await pool.call(url, good, "echo_header", {"name": "x-api-key"}) == CallResult(
                output=f"key-{SECRET}"
            )
            assert await pool.call(url, good, "echo_header", {"name": "x-none"}) == CallResult(output="")
            errors.append((await pool.call(url, good, "sleep", {"seconds": 5})).error or "")
            errors.append((await pool.call(url, good, "fail", {"message": "boom"})).error or "")
            with pytest.raises(McpError) as refused:
                await pool.list_tools(url, bad)
            assert str(refused.value) == "the MCP server refused the session (HTTP 401)"
            errors.append(repr(refused.value))
            called = await pool.call(url, bad, "add", {"a": 1, "b": 2})
            assert called == CallResult(error="the MCP server refused the session (HTTP 401)")
            dead = f"http://127.0.0.1:{free_port()}/mcp"
            with pytest.raises(McpError) as unreachable:
                await pool.list_tools(dead, good)
            errors.append(repr(unreachable.value))
            errors.append((await pool.call(dead, good, "add", {"a": 1, "b": 2})).error or "")
            with pytest.raises(McpError) as guarded:
                await pool.list_tools(url, good, guard=UrlGuard(["http://"]))
            errors.append(repr(guarded.value))
            errors.append(repr(pool))

    with mcp_demo(env={"FERROUTE_DEMO_MCP_TOKEN": SECRET}) as server:
        run(scenario(server.url))
    assert len(errors) == 7 and all(errors)
    assert not [e for e in errors if SECRET in e]
    assert SECRET not in caplog.text


def test_a_closed_pool_closes_its_sessions_and_opens_no_more(mcp_server: Server) -> None:
    async def scenario() -> None:
        pool = McpPool(call_timeout=5, max_output_bytes=100)
        assert len(await pool.list_tools(mcp_server.url, {})) == 6
        await pool.aclose()
        assert repr(pool) == "<McpPool 0 sessions>"
        with pytest.raises(McpError, match="shut down"):
            await pool.list_tools(mcp_server.url, {})
        assert await pool.call(mcp_server.url, {}, "add", {"a": 1, "b": 1}) == CallResult(
            error="the MCP client is shut down"
        )

    run(scenario())


def test_idle_sessions_past_the_limit_are_closed(mcp_server: Server) -> None:
    async def scenario() -> None:
        async with pool_of(max_sessions=1) as pool:
            first = await sessions(pool, mcp_server.url, {"X-N": "1"})
            assert await sessions(pool, mcp_server.url, {"X-N": "2"}) == first + 1
            assert await sessions(pool, mcp_server.url, {"X-N": "1"}) == first + 2  # (its session was closed)
        async with pool_of(idle_timeout=0.2) as pool:
            first = await sessions(pool, mcp_server.url)
            assert await sessions(pool, mcp_server.url) == first
            await asyncio.sleep(0.3)
            assert await sessions(pool, mcp_server.url) == first + 1

    run(scenario())


# ---- the URL guard on the way


def test_a_request_named_server_on_loopback_is_refused_before_anything_is_sent(mcp_server: Server) -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            before = await sessions(pool, mcp_server.url)
            with pytest.raises(McpError, match="its host is a loopback address"):
                await pool.list_tools(mcp_server.url, {}, guard=UrlGuard(["http://"]))
            refusal = await pool.call(mcp_server.url, {}, "add", {"a": 1, "b": 1}, guard=UrlGuard(["http://"]))
            assert refusal == CallResult(error="the MCP server URL is not allowed: its host is a loopback address")
            trusted = UrlGuard(["http://127.0.0.1:"])
            assert len(await pool.list_tools(mcp_server.url, {}, guard=trusted)) == 6
            assert await pool.call(mcp_server.url, {}, "add", {"a": 1, "b": 1}, guard=trusted) == CallResult(output="2")
            assert await sessions(pool, mcp_server.url) == before + 1  # (the trusted one; the refused ones none)

    run(scenario())


class _Redirector(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to the server's `target`, and records the paths it was asked for."""

    def _answer(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self.send_response(307)
        self.send_header("Location", self.server.target)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def redirector(target: str) -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1 redirecting everything to `target` ("{port}" in it: its own): (port, paths)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    port = httpd.server_address[1]
    httpd.seen = []  # type: ignore[attr-defined]
    httpd.target = target.format(port=port)  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield port, httpd.seen  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_a_redirect_to_a_url_outside_the_prefixes_is_not_followed() -> None:
    # The MCP transport follows a redirect that stays on the origin (a 307 to another path of the same host and
    # port): the guard must check that request too, else the second path is reached.
    async def scenario() -> None:
        with redirector("/private/mcp") as (port, seen):
            guard = UrlGuard([f"http://127.0.0.1:{port}/public/"])
            async with pool_of(connect_timeout=5) as pool:
                with pytest.raises(McpError) as e:
                    await pool.list_tools(f"http://127.0.0.1:{port}/public/mcp", {}, guard=guard)
                assert str(e.value) == (
                    "the MCP server redirected to a URL that is not allowed (the MCP server URL is not allowed: it "
                    "starts with none of the router's allowed prefixes)"
                )
                assert seen and all(path == "/public/mcp" for path in seen)
                # A path that leaves the prefix by its dot segments, which the HTTP client resolves before sending.
                result = await pool.call(f"http://127.0.0.1:{port}/public/../private/mcp", {}, "add", {}, guard=guard)
                assert result.error and "not allowed" in result.error
                assert all(path == "/public/mcp" for path in seen)

    run(scenario())


def test_every_request_of_a_guarded_client_is_checked_redirects_included() -> None:
    # The session's HTTP client itself, following a redirect to another host: the first host is trusted by name,
    # the second matches only the bare "http://" and resolves to loopback.
    from ferroute.tools.mcp._http import http_client

    async def scenario() -> None:
        with redirector("http://localhost:{port}/landing") as (port, seen):
            url = f"http://127.0.0.1:{port}/hop"
            guard = UrlGuard([f"http://127.0.0.1:{port}/", "http://"])
            async with http_client(url, {}, guard, 5, lambda status, had_session: None) as client:
                with pytest.raises(McpError, match=r"redirected to a URL that is not allowed .*loopback address"):
                    await client.get(url, follow_redirects=True)
            assert seen == ["/hop"]

    run(scenario())
