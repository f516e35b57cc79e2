"""Which MCP server URLs a request may name: `UrlGuard`, the router's defence against server-side request forgery.

A URL passes when it starts with one of the operator's allowed prefixes (`check`) and, unless a prefix that matched
names its host, when every address its host resolves to is public (`check_address`): no loopback, private,
link-local, CGNAT, multicast, reserved or cloud-metadata address. A prefix with a whole host part
(`"http://127.0.0.1:"`, `"https://mcp.internal.example/"`) is the operator trusting that host; a bare scheme
(`"https://"`) or a host cut short (`"https://mcp"`, which `"https://mcp.evil.example"` would match) names none.

URLs are parsed strictly (ASCII only, no whitespace, backslashes or user-info) so that this module and the HTTP
client read the same host from them. Servers from the config are trusted and never pass through a guard. The HTTP
client checks every request it sends, redirects included, and connects to the addresses checked here
(`ferroute.tools.mcp._http`), so a name that resolves differently a moment later cannot move the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ferroute.tools.mcp.results import McpError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed server URL: `normalized` is the URL with its scheme and host part lower-cased (what prefixes are
    matched against)."""

    scheme: str
    host: str  # lower-case; an IPv6 address without its brackets
    port: int
    normalized: str


def parse(url: str) -> Target:
    """`url` parsed strictly; raises `McpError` saying what is wrong with it."""
    if not url.isascii() or any(c <= " " or c == "\x7f" or c == "\\" for c in url):
        raise McpError("the MCP server URL is malformed: it must be ASCII with no spaces, control characters or '\\'")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise McpError("the MCP server URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise McpError("the MCP server URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise McpError("the MCP server URL must not carry credentials (user@host): send them as headers")
    host = parts.hostname
    head = f"{scheme}://{parts.netloc}"  # (urlsplit lower-cases the scheme)
    if not host or url[: len(head)].lower() != head.lower():
        raise McpError("the MCP server URL has no host")
    return Target(scheme, host, port or _DEFAULT_PORTS[scheme], _normalized(scheme, parts.netloc, url[len(head) :]))


def _normalized(scheme: str, authority: str, rest: str) -> str:
    """scheme://authority + rest with the scheme and authority lower-cased and a default port left out (as httpx2
    writes a URL it sends)."""
    authority = authority.lower().removesuffix(f":{_DEFAULT_PORTS.get(scheme.lower())}")
    return f"{scheme.lower()}://{authority}{rest}"


def _normalized_prefix(prefix: str) -> str:
    """A prefix with its scheme and host part lower-cased, as `parse` does to URLs."""
    scheme, sep, rest = prefix.partition("://")
    if not sep:
        return prefix.lower()
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=-1)
    if end == -1:  # (a host part cut short: "http://127.0.0.1:80" may go on to port 8080)
        return f"{scheme.lower()}://{rest.lower()}"
    return _normalized(scheme, rest[:end], rest[end:])


def _named_host(prefix: str) -> str | None:
    """The host a (normalized) prefix names in full, or None: the host part must end inside the prefix (a port
    separator, a path, a query or a fragment follows it)."""
    _, sep, rest = prefix.partition("://")
    ends = [i for i in (rest.find(c) for c in "/?#") if i != -1]
    authority = rest[: min(ends)] if ends else rest
    if not sep or "@" in authority:
        return None
    if authority.startswith("["):
        close = authority.find("]")
        host, after = (authority[1:close], authority[close + 1 :]) if close != -1 else ("", "")
    else:
        host, colon, _ = authority.partition(":")
        after = colon
    return host if host and (ends or after.startswith(":")) else None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where a connection to it goes."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden(address: IPAddress) -> str | None:
    """Why a request-named server may not be at `address` ("a loopback address", ...), or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).partition("%")[0])
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return forbidden(embedded)
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a non-public address"
    return None


class UrlGuard:
    """Which server URLs a request may name (config servers are trusted and not checked)."""

    __slots__ = ("_named", "_prefixes", "prefixes")

    def __init__(self, allow_url_prefixes: Sequence[str]) -> None:
        self.prefixes = tuple(allow_url_prefixes)
        self._prefixes = tuple(_normalized_prefix(p) for p in self.prefixes)
        self._named = tuple(_named_host(p) for p in self._prefixes)

    def __repr__(self) -> str:
        return f"UrlGuard({list(self.prefixes)!r})"

    def _matches(self, target: Target) -> list[int]:
        return [i for i, prefix in enumerate(self._prefixes) if target.normalized.startswith(prefix)]

    def check(self, url: str) -> None:
        """Raises `McpError` (saying why) when `url` is malformed or starts with none of the allowed prefixes."""
        if not self._matches(parse(url)):
            raise McpError("the MCP server URL is not allowed: it starts with none of the router's allowed prefixes")

    async def check_address(self, url: str) -> None:
        """Raises `McpError` when the host of `url` resolves to an address a request may not reach, unless a prefix
        that `url` matches names that host (the operator trusts it)."""
        await self.addresses(url)

    async def addresses(self, url: str) -> list[str] | None:
        """The checked addresses of the host of `url` (raising `McpError` if any is forbidden), or None when a
        matching prefix names the host (no check, no pinning). The HTTP client connects to the first of them."""
        target = parse(url)
        matched = self._matches(target)
        if any(self._named[i] == target.host for i in matched):
            return None
        literal = True
        try:
            resolved: list[str] = [str(ipaddress.ip_address(target.host))]
        except ValueError:
            literal = False
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                raise McpError("the MCP server's host name does not resolve") from None
            resolved = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not resolved:
            raise McpError("the MCP server's host name does not resolve")
        for address in resolved:
            why = forbidden(ipaddress.ip_address(address))
            if why is not None:
                where = "its host is" if literal else "its host name resolves to"
                raise McpError(f"the MCP server URL is not allowed: {where} {why}")
        return resolved
