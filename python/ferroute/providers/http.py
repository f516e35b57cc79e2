"""An upstream over HTTP: `POST {base_url}{dialect.path}`, streamed, whatever the dialect.

What every dialect over HTTP shares lives here: the URL and the request head (built once), the key (read from
its variable per request, sent as the dialect says), the connect timeout, the router's transport (its fast
path and httpx's), and what an error before the first byte becomes (`ferroute.errors`: only a status goes to
the client, never the upstream's URL, key or body).
"""

from __future__ import annotations

import httpx
import pydantic_core

from ferroute._core import __version__
from ferroute._transport import Answer, StreamTransport
from ferroute.config import ProviderConfig, TimeoutsConfig
from ferroute.errors import RouterError, upstream_error_from, upstream_status
from ferroute.models import ResponsesRequest
from ferroute.providers import Dialect, Upstream

# Upstream error bodies are read (and dropped) up to this size, so the connection can be reused.
_MAX_ERROR_BODY = 64 * 1024
# A non-SSE answer to a streaming request (some servers ignore `stream`) is read up to this size.
_MAX_JSON_BODY = 32 * 1024 * 1024

# identity: the raw bytes go to the translator, so they must not be compressed.
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"accept", b"text/event-stream"),
    (b"accept-encoding", b"identity"),
    (b"user-agent", b"ferroute/" + __version__.encode()),
]


class HttpUpstream:
    """The provider's `base_url` speaking `dialect`: a `Source` whose `open` sends the dialect's request body
    and hands back the answer's bytes (or a whole JSON body), with the upstream's failures as `RouterError`s."""

    def __init__(self, config: ProviderConfig, dialect: Dialect, timeouts: TimeoutsConfig) -> None:
        assert config.base_url is not None  # config.py requires it for the kinds over HTTP
        self.name = config.name
        # Bound once: the request path looks up one attribute for each, as when they were the provider's methods.
        self.api_key = config.api_key  # (read at the moment it is needed)
        self.auth_header = dialect.auth_header
        self.request_body = dialect.request_body
        # Parsed once (a string URL is parsed again by every `build_request`: ~26 µs per request, micro-benchmark).
        self.url = httpx.URL(config.base_url.rstrip("/") + dialect.path)
        # Reads have no httpx timeout: the app's ticker enforces the first-event and idle timeouts.
        connect = timeouts.connect
        self.timeout = httpx.Timeout(connect=connect, read=None, write=connect, pool=connect)
        self.extensions = {"timeout": self.timeout.as_dict()}
        # The headers every request carries; only Content-Length (and the key, read per request) vary.
        self.headers = [(b"host", self.url.netloc), *_HEADERS, *dialect.headers]
        # Plain HTTP goes to `StreamTransport.open` with this head (then Content-Length, the key, a blank line).
        self.origin: tuple[str, int] | None = None
        if self.url.scheme == "http":
            self.origin = (self.url.host, self.url.port or 80)
        self.head = b"POST " + self.url.raw_path + b" HTTP/1.1\r\n"
        self.head += b"".join(name + b": " + value + b"\r\n" for name, value in self.headers)

    async def open(
        self,
        request: ResponsesRequest,
        upstream_model: str,
        transport: httpx.AsyncBaseTransport,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Upstream:
        """The upstream request (with `headers` besides the usual ones: a trace's `traceparent`), its answer's
        status checked."""
        body = self.request_body(request, upstream_model)
        # pydantic-core's serializer: 1.2 µs for a small body where `json.dumps(...).encode()` took 7.4.
        content = pydantic_core.to_json(body)
        key = self.api_key()
        # (No timeout of its own: the app's clock cancels an exchange whose first event is late, `Clock.check`.)
        answer: Answer | _Answer
        try:
            if self.origin is not None and isinstance(transport, StreamTransport):
                # The router's path: the request head as bytes, straight to the transport (no httpx objects).
                head = self.head + b"content-length: " + str(len(content)).encode()
                if key:
                    name, value = self.auth_header(key)
                    head += b"\r\n" + name + b": " + value
                if headers:
                    head += b"".join(b"\r\n" + name + b": " + value for name, value in headers)
                answer = await transport.open(self.origin, head + b"\r\n\r\n", content, self.timeout.connect)
            else:
                answer = await self._open_httpx(transport, content, key, headers)
        except httpx.HTTPError as e:
            raise upstream_error_from(self.name, e) from None
        stream = answer.body
        try:
            if answer.status >= 400:
                error_body = await _drain(stream, _MAX_ERROR_BODY)
                raise upstream_status(self.name, answer.status, _text(answer.header(b"retry-after")), error_body)
            content_type = answer.header(b"content-type") or b""
            if content_type.startswith(b"application/json"):
                body_bytes = await _drain(stream, _MAX_JSON_BODY)
                await stream.aclose()
                return Upstream(body=body_bytes)
        except BaseException:
            await stream.aclose()
            raise
        return Upstream(chunks=stream.__aiter__(), response=stream)

    async def _open_httpx(
        self,
        transport: httpx.AsyncBaseTransport,
        content: bytes,
        key: str | None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> _Answer:
        """Any other transport (https goes through httpx's own inside `StreamTransport`): a plain `httpx.Request`
        straight to it. (An AsyncClient's `build_request` + `send` cost ~45 µs more per request for what the
        router does not use: auth flows, redirects, cookies, hooks, default headers.)"""
        headers = [*self.headers, (b"content-length", str(len(content)).encode())]
        if key:
            headers.append(self.auth_header(key))
        if extra:
            headers += extra
        upstream_request = httpx.Request(
            "POST", self.url, headers=headers, stream=httpx.ByteStream(content), extensions=self.extensions
        )
        response = await transport.handle_async_request(upstream_request)
        return _Answer(response)


class _Answer:
    """An httpx response seen as the transport's `Answer` (status, `header`, `body`)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)  # (an async transport's)
        self.body: httpx.AsyncByteStream = stream

    def header(self, name: bytes) -> bytes | None:
        value = self.response.headers.get(name.decode())
        return value.encode("latin-1") if value is not None else None


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


async def _drain(stream: httpx.AsyncByteStream, limit: int) -> bytes:
    data = bytearray()
    try:
        async for chunk in stream:
            data += chunk
            if len(data) > limit:
                raise RouterError(502, "the upstream answer is too large", type="model_error", code="upstream_error")
    except httpx.HTTPError:
        pass
    return bytes(data)
