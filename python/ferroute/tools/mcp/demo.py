"""A small MCP server over streamable HTTP at `/mcp`, to try the router's MCP tools with (`ferroute mcp-demo`) and
to test the MCP client against a real server. (Unlike the rest of `ferroute.tools.mcp`, it imports the `mcp` package.)

Tools: `add(a, b)`, `sleep(seconds)`, `fail(message)` (a tool error), `large(size)` (`size` x's),
`echo_header(name)` (that HTTP request header as the server saw it, or ""), `sessions()` (how many MCP sessions
were opened since start: `initialize` handshakes, and `server/discover` for the 2026 protocol, which has no
handshake).

With `$FERROUTE_DEMO_MCP_TOKEN` set, requests without `Authorization: Bearer <token>` get a 401. `legacy=True`
speaks only the handshake protocol (before 2026-07-28), as most servers in the wild still do.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from typing import Any

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import METHOD_NOT_FOUND, CallToolResult, TextContent, ToolAnnotations

TOKEN_ENV = "FERROUTE_DEMO_MCP_TOKEN"


def build_app(*, host: str = "127.0.0.1", legacy: bool = False) -> Any:
    """The server's ASGI app (Starlette, from the `mcp` package)."""
    opened = 0

    async def count_sessions(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        nonlocal opened
        if ctx.method == "server/discover" and legacy:
            raise MCPError(METHOD_NOT_FOUND, "Method not found")
        if ctx.method in ("initialize", "server/discover"):
            opened += 1
        return await call_next(ctx)

    server = MCPServer("ferroute-demo", log_level="WARNING")
    server.middleware.append(count_sessions)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
    def add(a: float, b: float) -> float:
        """Add two numbers."""
        total = a + b
        return int(total) if total.is_integer() else total

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Wait `seconds`, then say so."""
        await asyncio.sleep(seconds)
        return f"slept {seconds:g} s"

    @server.tool()
    def fail(message: str) -> CallToolResult:
        """Fail with `message` (a tool error)."""
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)

    @server.tool()
    def large(size: int) -> str:
        """`size` x's."""
        return "x" * size

    @server.tool()
    def echo_header(name: str, ctx: Context) -> str:
        """The value of HTTP request header `name` as this server received it, or "" without one."""
        return {k.lower(): v for k, v in (ctx.headers or {}).items()}.get(name.lower(), "")

    @server.tool()
    def sessions() -> int:
        """How many MCP sessions were opened since this server started."""
        return opened

    app = server.streamable_http_app(host=host)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return app
    expected = f"Bearer {token}".encode()

    async def require_token(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                body = json.dumps({"error": "missing or wrong bearer token"}).encode()
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return require_token


def serve(host: str, port: int, *, legacy: bool = False) -> None:
    """Runs the server until interrupted (blocking); prints its URL on stdout once it listens (`port` 0: a free
    one)."""
    import uvicorn

    app = build_app(host=host, legacy=legacy)
    # (Open event streams would hold a graceful shutdown up for as long as clients keep them.)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)

    async def run() -> None:
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            if serving.done():
                return await serving  # (it could not listen: uvicorn said why)
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"http://{host if ':' not in host else f'[{host}]'}:{bound}/mcp", flush=True)
        await serving

    asyncio.run(run())
