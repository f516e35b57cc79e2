"""`UrlGuard`: which MCP server URLs a request may name (prefixes; no private addresses unless a prefix names the
host), and the guarded HTTP client connecting to the address it checked. (Redirects, against real servers:
test_mcp_client.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ferroute.tools.mcp import McpError, UrlGuard


def run(work: Any) -> Any:
    async def main() -> Any:
        return await work

    return asyncio.run(main())


def refused(guard: UrlGuard, url: str) -> str:
    """The guard's refusal of `url`, checks of the prefix and of the address together."""

    async def check() -> None:
        guard.check(url)
        await guard.check_address(url)

    with pytest.raises(McpError) as e:
        run(check())
    return str(e.value)


def allowed(guard: UrlGuard, url: str) -> bool:
    guard.check(url)
    run(guard.check_address(url))
    return True


def test_the_guard_refuses_urls_outside_the_prefixes() -> None:
    guard = UrlGuard(["https://mcp.example.com/", "https://tools.example.org/v1/"])
    assert guard.check("https://mcp.example.com/mcp") is None
    assert guard.check("HTTPS://MCP.Example.com/mcp") is None  # (scheme and host are case-insensitive)
    reason = "the MCP server URL is not allowed: it starts with none of the router's allowed prefixes"
    for url in (
        "https://evil.example/mcp",
        "https://mcp.example.com.evil.example/mcp",
        "http://mcp.example.com/mcp",
        "https://tools.example.org/v2/mcp",
        "https://tools.example.org/V1/mcp",  # (a path is case-sensitive)
    ):
        with pytest.raises(McpError, match=reason):
            guard.check(url)
    with pytest.raises(McpError, match="credentials"):
        guard.check("https://mcp.example.com@evil.example/")
    with pytest.raises(McpError, match="http:// or https://"):
        guard.check("file:///etc/passwd")
    for malformed in ("https://mcp.example.com/ mcp", "https://mcp.example.com\\@evil/", "https://mcp.exämple.com/"):
        with pytest.raises(McpError, match="malformed"):
            guard.check(malformed)
    assert UrlGuard([]).prefixes == ()
    with pytest.raises(McpError):
        UrlGuard([]).check("https://mcp.example.com/")


def test_the_guard_refuses_non_public_addresses() -> None:
    guard = UrlGuard(["http://", "https://"])
    for url, why in [
        ("http://127.0.0.1:9000/mcp", "its host is a loopback address"),
        ("http://[::1]:9000/mcp", "its host is a loopback address"),
        ("http://[::ffff:127.0.0.1]/mcp", "its host is a loopback address"),
        ("http://10.1.2.3/mcp", "its host is a private address"),
        ("https://192.168.1.10/mcp", "its host is a private address"),
        ("http://172.16.0.1/mcp", "its host is a private address"),
        ("http://[fd12::1]/mcp", "its host is a private address"),
        ("http://169.254.10.1/mcp", "its host is a link-local address"),
        ("http://[fe80::1]/mcp", "its host is a link-local address"),
        ("http://169.254.169.254/latest/meta-data/", "its host is a cloud metadata address"),
        ("http://[fd00:ec2::254]/", "its host is a cloud metadata address"),
        ("http://100.64.1.1/mcp", "its host is a carrier-grade NAT address (100.64.0.0/10)"),
        ("http://0.0.0.0:9000/mcp", "its host is an unspecified address"),
        ("http://224.0.0.1/mcp", "its host is a multicast address"),
        ("http://240.0.0.1/mcp", "its host is a reserved address"),
        ("http://[64:ff9b::a00:1]/mcp", "its host is a private address"),  # (NAT64 of 10.0.0.1)
        ("http://localhost:9000/mcp", "its host name resolves to a loopback address"),
    ]:
        assert refused(guard, url) == f"the MCP server URL is not allowed: {why}", url
    assert refused(guard, "http://mcp.invalid/mcp") == "the MCP server's host name does not resolve"
    assert allowed(guard, "https://93.184.216.34/mcp")
    assert allowed(guard, "https://[2606:2800:220:1::1]/mcp")


def test_a_prefix_naming_a_host_trusts_it() -> None:
    assert allowed(UrlGuard(["http://127.0.0.1:"]), "http://127.0.0.1:9000/mcp")
    assert allowed(UrlGuard(["http://localhost:9000/"]), "http://localhost:9000/mcp")
    assert allowed(UrlGuard(["http://[::1]:"]), "http://[::1]:9000/mcp")
    assert allowed(UrlGuard(["http://10.1.2.3/"]), "http://10.1.2.3/mcp")
    # A prefix that stops inside the host names no host: "http://127.0.0.1" also matches 127.0.0.1.evil.example.
    for prefix in ("http://127.0.0.1", "http://127.0.0", "http://"):
        assert "loopback" in refused(UrlGuard([prefix]), "http://127.0.0.1:9000/mcp"), prefix
    # Only the prefixes a URL matches count: the first names 127.0.0.1, but only for port 9000.
    guard = UrlGuard(["http://127.0.0.1:9000/", "http://"])
    assert allowed(guard, "http://127.0.0.1:9000/mcp")
    assert "loopback" in refused(guard, "http://127.0.0.1:9001/mcp")


def test_a_guarded_request_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name resolved for the check is not resolved again to connect (DNS could answer differently the second
    # time): the request goes to the checked address, with the name in Host and in TLS's SNI.
    import httpx2

    from ferroute.tools.mcp._http import GuardedTransport

    sent: list[httpx2.Request] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, text="ok")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
            assert host == "mcp.example.test"
            return [(2, 1, 6, "", ("93.184.216.34", port))]

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
        url = "https://mcp.example.test/mcp"
        transport = GuardedTransport(UrlGuard(["https://"]), url, httpx2.MockTransport(handler))
        async with httpx2.AsyncClient(transport=transport) as client:
            response = await client.get(url)
        assert response.text == "ok"
        assert str(response.request.url) == url  # (what the client asked for, for redirects and messages)
        [request] = sent
        assert str(request.url) == "https://93.184.216.34/mcp"
        assert request.headers["host"] == "mcp.example.test"
        assert request.extensions["sni_hostname"] == "mcp.example.test"

    run(scenario())
