"""The HTTP client under one pooled MCP session (httpx2, which the `mcp` package's streamable HTTP transport uses).

With a `UrlGuard`, every request the client sends passes through `GuardedTransport`: the MCP transport follows
same-origin redirects itself, one `send` per hop, so each hop's URL is checked here, against the prefixes and for
its addresses, before anything connects. The request then goes to the address that was checked (the host name
stays in the `Host` header and in TLS's SNI and certificate check), so DNS cannot answer the check with a public
address and the connection with a private one.

Imported only when a pool opens its first session (it imports httpx2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx2

from ferroute.tools.mcp.guard import UrlGuard, parse
from ferroute.tools.mcp.results import McpError

SSE_READ_TIMEOUT = 300.0  # the mcp package's default: a server may hold a response stream open that long


class GuardedTransport(httpx2.AsyncBaseTransport):
    """Sends a request only when its URL passes `guard`, to the address the guard checked."""

    def __init__(self, guard: UrlGuard, url: str, inner: httpx2.AsyncBaseTransport) -> None:
        self._guard = guard
        self._url = url  # the session's own URL: any other is a redirect's
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        try:
            self._guard.check(url)
            addresses = await self._guard.addresses(url)
        except McpError as e:
            if parse(url).normalized != parse(self._url).normalized:
                raise McpError(f"the MCP server redirected to a URL that is not allowed ({e})") from None
            raise
        if addresses is not None:
            host = request.url.host
            request = httpx2.Request(
                request.method,
                request.url.copy_with(host=addresses[0]),
                headers=request.headers,  # (with the Host header of the name)
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def http_client(
    url: str,
    headers: Mapping[str, str],
    guard: UrlGuard | None,
    connect_timeout: float,
    on_error_status: Callable[[int, bool], None],
) -> httpx2.AsyncClient:
    """The client for one session: `headers` on every request; `on_error_status(status, had_session_id)` hears of
    every answer of 400 or more (a 404 to a request that carried a session id: the server forgot the session)."""

    async def on_response(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            on_error_status(response.status_code, "mcp-session-id" in response.request.headers)

    transport = None if guard is None else GuardedTransport(guard, url, httpx2.AsyncHTTPTransport())
    return httpx2.AsyncClient(
        headers=dict(headers),
        timeout=httpx2.Timeout(30.0, connect=connect_timeout, read=SSE_READ_TIMEOUT),
        transport=transport,
        event_hooks={"response": [on_response]},
    )
