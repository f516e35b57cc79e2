"""The router's errors: each one is an HTTP status plus the spec's error body.

Everything that can go wrong before the first byte reaches the client becomes a `RouterError`;
httpx's exceptions are mapped into them in one place (`upstream_error_from`), so no upstream URL,
header, key or raw body ever reaches a client.
"""

from __future__ import annotations

import email.utils
import json
import math
import time

import httpx


class RouterError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []
        # An upstream's failure that another attempt may not meet (a connect error, a 5xx, a 429, a late first event):
        # the router retries or fails over (`ferroute.routing`); `retry_after`: the seconds a 429 asked to wait.
        self.retryable = retryable
        self.retry_after = retry_after

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}, ensure_ascii=False).encode()

    def __repr__(self) -> str:
        return f"RouterError({self.status}, {self.type!r}, {self.code!r}, {self.message!r})"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> RouterError:
    return RouterError(400, message, type="invalid_request_error", param=param, code=code)


def not_implemented(feature: str, param: str | None = None) -> RouterError:
    """A request for something the router does not do yet: a clear 400, never a fake."""
    return RouterError(400, f"{feature} is not supported by this router yet", param=param, code="unsupported_parameter")


def not_found(what: str, id: str, param: str | None = None) -> RouterError:
    """The one 404 for an id that never existed, was deleted, or belongs to another key (`what`: "response",
    "stored item")."""
    return RouterError(404, f"no {what} with id {id!r}", type="not_found", code="not_found", param=param)


def no_route(method: str, path: str) -> RouterError:
    return RouterError(404, f"no route {method} {path}", type="not_found", code="not_found")


def method_not_allowed(allowed: str) -> RouterError:
    return RouterError(405, f"use {allowed}", code="method_not_allowed")


def invalid_api_key() -> RouterError:
    return RouterError(
        401,
        "missing or invalid API key: send Authorization: Bearer <key>",
        type="authentication_error",
        code="invalid_api_key",
    )


def model_not_allowed(key: str, model: str) -> RouterError:
    """A key whose `models` globs do not match the model asked for (nothing went upstream)."""
    message = f"key {key!r} may not use model {model!r}"
    return RouterError(403, message, type="permission_error", code="model_not_allowed", param="model")


def rate_limited(key: str, what: str, retry_after: float, headers: list[tuple[bytes, bytes]]) -> RouterError:
    """A key over one of its limits (`what`): a 429 with `Retry-After` (whole seconds, rounded up) and the key's
    `x-ratelimit-*` headers. The type is the spec's for a 429."""
    seconds = max(1, math.ceil(retry_after - 1e-6))
    return RouterError(
        429,
        f"rate limit reached for key {key!r} ({what}); try again in {seconds} s",
        type="too_many_requests",
        code="rate_limit_exceeded",
        headers=[(b"retry-after", b"%d" % seconds), *headers],
    )


def request_too_large(limit: int) -> RouterError:
    return RouterError(413, f"the request body is larger than {limit} bytes", code="request_too_large")


def request_timeout(seconds: float) -> RouterError:
    """The request's body did not arrive in time; the connection is closed after the answer."""
    return RouterError(
        408,
        f"the request body did not arrive within {seconds:g} s",
        code="request_timeout",
        headers=[(b"connection", b"close")],
    )


def internal_error() -> RouterError:
    """A bug in the router (logged where it happened); the client learns nothing more."""
    return RouterError(500, "internal error in the router", type="server_error", code="internal_error")


def shutting_down() -> RouterError:
    return RouterError(503, "the router is shutting down", type="server_error", code="shutting_down")


def shut_down_midway() -> RouterError:
    """What a background response that was still running says when its process stopped."""
    return RouterError(
        503, "the router shut down before the response finished", type="server_error", code="shutting_down"
    )


def store_unavailable(store: str) -> RouterError:
    return RouterError(
        503,
        f"the response store ({store}) is unavailable; try again later",
        type="server_error",
        code="store_unavailable",
        headers=[(b"retry-after", b"5")],
    )


# What each of the router's timeouts waits for, as its messages say it.
TIMEOUT_PHASES = {
    "connect": "connect",
    "first_event": "waiting for the first event",
    "idle": "no data between events",
}


def upstream_timeout(provider: str, phase: str, seconds: float | None = None) -> RouterError:
    """An upstream took too long: `phase` is a key of `TIMEOUT_PHASES` (or its text); `seconds` the limit. The one
    place a timeout becomes an error: a 504 before the stream starts, the in-band `error` after."""
    text = TIMEOUT_PHASES.get(phase, phase)
    if seconds is not None:
        text = f"{text}, {seconds:g} s"
    return RouterError(
        504,
        f"provider {provider!r} timed out ({text})",
        type="model_error",
        code="upstream_timeout",
        retryable=phase in ("connect", "first_event"),
    )


def upstream_failed(message: object, code: object) -> RouterError:
    """A whole (non-streamed) response the upstream failed: a 502 with its message and code."""
    return RouterError(
        502, str(message or "the upstream failed"), type="model_error", code=str(code or "upstream_error")
    )


def malformed_answer(provider: str) -> RouterError:
    return RouterError(
        502, f"provider {provider!r} sent a malformed answer", type="model_error", code="upstream_error", retryable=True
    )


def upstream_status(provider: str, status: int, retry_after: str | None, body: bytes = b"") -> RouterError:
    """An upstream answered with an HTTP error before streaming anything. Only its status is passed on (`body`, its
    error body, is only looked at: a 400 about a reasoning blob it cannot verify gets its own code)."""
    if status == 400 and _rejects_reasoning(body):
        return RouterError(
            400,
            f"provider {provider!r} rejected the reasoning carried from an earlier turn (an encrypted_content or "
            "signature it cannot verify)",
            code="invalid_encrypted_content",
            param="input",
        )
    if status == 429:
        headers = [(b"retry-after", retry_after.encode("latin-1"))] if retry_after else []
        return RouterError(
            429,
            f"provider {provider!r} is rate limiting requests; retry later",
            type="too_many_requests",
            code="rate_limit_exceeded",
            headers=headers,
            retryable=True,
            retry_after=_seconds(retry_after),
        )
    if status in (401, 403):
        message = f"provider {provider!r} rejected the router's credentials (HTTP {status})"
    elif status == 404:
        message = f"provider {provider!r} does not know the requested model or endpoint (HTTP 404)"
    elif 400 <= status < 500:
        message = f"provider {provider!r} rejected the request (HTTP {status})"
    else:
        message = f"provider {provider!r} failed (HTTP {status})"
    return RouterError(502, message, type="model_error", code="upstream_error", retryable=status >= 500)


def _rejects_reasoning(body: bytes) -> bool:
    """Whether a 400's body says a reasoning blob was refused: OpenAI's `invalid_encrypted_content` ("The encrypted
    content for item rs_… could not be verified"), Anthropic's "Invalid `signature` in `thinking` block"."""
    text = body.lower()
    return (
        b"encrypted_content" in text or b"encrypted content" in text or (b"signature" in text and b"thinking" in text)
    )


def _seconds(retry_after: str | None) -> float | None:
    """`Retry-After` in seconds (a number of seconds, or an HTTP date); None when absent or unreadable."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def no_healthy_target(route: str, retry_after: float) -> RouterError:
    """Every target of a route has its circuit open: a 503 at once, with when the first one may be probed."""
    seconds = max(1, math.ceil(retry_after))
    return RouterError(
        503,
        f"every target of route {route!r} is failing; retry in {seconds} s",
        type="server_error",
        code="upstream_unavailable",
        headers=[(b"retry-after", str(seconds).encode())],
    )


def upstream_error_from(provider: str, exc: httpx.HTTPError) -> RouterError:
    """httpx's exceptions → the router's, without the URL or anything else from the request."""
    if isinstance(exc, httpx.ConnectTimeout):
        return upstream_timeout(provider, "connect")
    if isinstance(exc, httpx.TimeoutException):
        return upstream_timeout(provider, "first_event")
    if isinstance(exc, httpx.ConnectError):
        return RouterError(
            502,
            f"could not connect to provider {provider!r}",
            type="model_error",
            code="upstream_unreachable",
            retryable=True,
        )
    return RouterError(
        502,
        f"the connection to provider {provider!r} failed ({type(exc).__name__})",
        type="model_error",
        code="upstream_error",
        retryable=True,
    )
