"""TOML config → pydantic settings.

A bad file fails at start with a message that names the key and its line: tomllib reports the line
of a syntax error itself; for a schema error the key is looked up in the file's text.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ProviderKind = Literal["chat_completions", "anthropic", "responses", "mock"]
# Kinds the config accepts because DESIGN.md names them, but that no provider implements yet.
# With no config file, a provider is added for each of these variables that is set.
STANDARD_PROVIDERS: list[tuple[str, ProviderKind, str, str]] = [
    ("openai", "chat_completions", "OPENAI_API_KEY", "https://api.openai.com/v1"),
    ("anthropic", "anthropic", "ANTHROPIC_API_KEY", "https://api.anthropic.com/v1"),
]


DEFAULTS_SOURCE = "(built-in defaults)"  # `Settings.source` of the embedded defaults
# Where `ferroute mcp-demo` listens by default (the embedded defaults name it as MCP server `demo`).
DEMO_MCP_URL = "http://127.0.0.1:9000/mcp"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    api_keys: list[str] = []
    # The provider a model string without a `:<provider>` suffix goes to.
    default_provider: str | None = None
    # Seconds of upstream silence after which the client gets an SSE comment keep-alive.
    keepalive_interval: float = Field(default=15.0, gt=0)
    # Seconds a WebSocket connection (`GET /v1/responses` upgraded) may last; then it is closed (a response in flight
    # ends first) after an error message with code `websocket_connection_limit_reached`.
    websocket_max_lifetime: float = Field(default=3600.0, gt=0)
    # Seconds in-flight streams get to finish on shutdown.
    shutdown_grace: float = Field(default=10.0, ge=0)
    # Seconds a client has to send a request's head (Granian's `--http1-header-read-timeout`). Granian (hyper) starts
    # this timer when a connection begins waiting for its next request, so it is also how long an idle keep-alive
    # connection is kept: set it above the idle timeout of a load balancer in front (at most 60).
    header_read_timeout: float = Field(default=10.0, ge=0.001, le=60.0)
    # HTTP/1 keep-alive (connections reused for several requests).
    keep_alive: bool = True
    # Bytes Granian's HTTP/1 connection (hyper) buffers, each way: the most a request's head may take, and the
    # most of a response queued on a connection beyond the 4 sends Granian holds. Bounds what a client that stops
    # reading costs the worker: 100 such clients dropped ten at a time left it ~3.5 MB more with Granian's default
    # (417,792) than with 64 KB.
    http1_buffer_size: int = Field(default=65536, ge=8192)
    # Seconds a request's whole body may take to arrive (the app's own timer: Granian has none). 60 s lets a 16 MB
    # body (the default `max_body_bytes`) through a 2.5 Mbit/s link.
    body_read_timeout: float = Field(default=60.0, gt=0)
    # Granian's knobs (README "Granian tuning" has the measurements behind the defaults).
    # How Granian calls the app: "asgi", or "rsgi" (its native interface). Granian 2.8.7's RSGI stream
    # transport queues every send without bound, so a client that reads slowly makes the worker hold the
    # rest of its response in memory; its ASGI `send` waits while the client is behind.
    interface: Literal["asgi", "rsgi"] = "asgi"
    # The workers' event loop. (Granian's rloop is not offered: with it a client's disconnect goes unseen.)
    loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Granian's Rust runtime threads per worker (socket I/O and HTTP framing).
    runtime_threads: int = Field(default=1, ge=1, le=64)
    # "st": one single-threaded runtime per thread; "mt": one multi-threaded runtime.
    runtime_mode: Literal["auto", "st", "mt"] = "auto"
    # "rust": Granian's own asyncio task implementation (CPython < 3.12 only), else asyncio's.
    task_impl: Literal["asyncio", "rust"] = "asyncio"
    # Most requests a worker handles at once; the rest wait in the accept queue (default: Granian's).
    backpressure: int | None = Field(default=None, ge=1)

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, keys: list[str]) -> list[str]:
        if any(not k.strip() for k in keys):
            raise ValueError("an API key is empty")
        return keys


class TimeoutsConfig(_Section):
    connect: float = Field(default=10.0, gt=0)
    first_event: float = Field(default=120.0, gt=0)
    idle: float = Field(default=120.0, gt=0)
    # Longest one send to the client may wait while the client reads nothing; then the stream is dropped
    # (its upstream request cancelled) as if the client had gone.
    client_write: float = Field(default=60.0, gt=0)


class LimitsConfig(_Section):
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=64, ge=4, le=10_000)
    max_input_items: int = Field(default=4096, ge=1)


class StoreConfig(_Section):
    backend: Literal["memory", "sqlite", "redis"] = "sqlite"
    # With the store unreachable: "serve" answers anyway, the response saying `"store": false` where it was not
    # stored; "fail" answers 503 `store_unavailable` (with Retry-After) before any upstream call when the response's
    # record cannot be written.
    on_error: Literal["serve", "fail"] = "serve"
    # sqlite: the database file (relative to the working directory).
    path: str = "ferroute.sqlite3"
    # redis: `redis://[:password@]host:port/db` (or `rediss://`, `unix://`).
    url: str | None = None
    # `store` for requests that do not say (OpenAI's default is true).
    default_store: bool = True
    # Seconds a stored response is kept: redis sets it as the keys' TTL (renewed when a chain is
    # continued); sqlite prunes older rows now and then; memory drops them. 0 keeps them forever.
    ttl_seconds: int = Field(default=30 * 24 * 3600, ge=0)
    # redis: the prefix of every key (several routers may share one Redis under different prefixes).
    key_prefix: str = "ferroute:"
    # The variable holding the key that encrypts `reasoning.encrypted_content` (any string; hashed
    # to an AES-256 key). Unset: one key per `ferroute serve`, shared by its workers, lost on restart.
    encryption_key_env: str = "FERROUTE_ENCRYPTION_KEY"
    # Seconds between progress writes (and cancel checks) of a background response.
    background_interval: float = Field(default=0.25, gt=0)
    # A stored stream (and a background response) is recorded `in_progress` when it is created and finished at its
    # end; while it runs, its worker renews the record's heartbeat every `heartbeat_interval` seconds (one batched
    # store write per worker per interval, whatever the number of responses). A reader (any worker or instance)
    # that finds an unfinished record whose heartbeat is older than `interrupted_after` seconds reports it `failed`
    # with error code `interrupted`: its worker died (kill -9, a crash, a lost host). Keep it several intervals
    # long (a store that is slow for a moment must not fail live responses) and above the clock skew between hosts.
    heartbeat_interval: float = Field(default=5.0, gt=0)
    interrupted_after: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check_backend(self) -> StoreConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("the redis store needs url (e.g. redis://127.0.0.1:6379/0)")
        if self.interrupted_after <= 2 * self.heartbeat_interval:
            raise ValueError("interrupted_after must be more than twice heartbeat_interval")
        return self


class ProviderConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    # Upstream model names listed by GET /v1/models (any model name is routed regardless).
    models: list[str] = []
    # Chat Completions: the upstream's name for the output token limit.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Chat Completions: whether reasoning items are passed back as `reasoning_content`.
    send_reasoning_content: bool = True
    # Anthropic: `max_tokens` (required by the Messages API) when the request sets no `max_output_tokens`.
    default_max_tokens: int = Field(default=4096, gt=0)
    # Anthropic: the `anthropic-version` header.
    anthropic_version: str = "2023-06-01"
    timeouts: TimeoutsConfig | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> ProviderConfig:
        if self.kind in ("chat_completions", "anthropic", "responses"):
            if not self.base_url:
                raise ValueError(f"{'an' if self.kind == 'anthropic' else 'a'} {self.kind} provider needs base_url")
            if not re.match(r"^https?://", self.base_url):
                raise ValueError("base_url must start with http:// or https://")
        return self

    def api_key(self) -> str | None:
        """The upstream key, read from `api_key_env` at the moment it is needed."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


ApprovalFilter = dict[Literal["always", "never"], dict[Literal["tool_names"], list[str]]]


class McpConfig(_Section):
    """`[mcp]`: the router's MCP client (README "Tools and the loop")."""

    # A request's own `server_url` must start with one of these (none: requests may use only `[[mcp_servers]]`).
    # A prefix that names a host (`http://127.0.0.1:`, `https://mcp.internal/`) trusts that host; under a prefix
    # that names none (`https://`) the resolved address must be public (no loopback, private, link-local or
    # metadata address), checked again on every redirect.
    allow_url_prefixes: list[str] = []
    # "openai": OpenAI's item and event names (`mcp_call`, `response.mcp_call.completed`), which the official SDKs
    # type; "prefixed": `ferroute:mcp_call`, as the Open Responses spec asks of implementor-specific types.
    item_names: Literal["openai", "prefixed"] = "openai"
    # Seconds one tool call may take; then the model gets the timeout as the call's result.
    call_timeout: float = Field(default=30.0, gt=0)
    # A longer tool output is cut (for the item and for the model), and says so.
    max_output_bytes: int = Field(default=65536, ge=256)
    # Most hosted tool calls one response makes when the request sets no `max_tool_calls`.
    max_tool_calls: int = Field(default=64, ge=1)


class AgentsConfig(_Section):
    """`[agents]`: sub-agents (`ferroute:agent` tools), nested responses the router runs for a tool call."""

    # How deep sub-agents may nest: a client's response is depth 0, a sub-agent's nested response 1, its own
    # sub-agent's 2, …; at this depth no sub-agent is offered (a call to one is refused).
    max_depth: int = Field(default=3, ge=0, le=16)


class McpServerConfig(_Section):
    """`[[mcp_servers]]`: a server a request names by `server_label` alone."""

    label: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str
    # Header name -> the environment variable holding its value (read when a session opens).
    headers_env: dict[str, str] = {}
    require_approval: Literal["always", "never"] | ApprovalFilter = "always"
    allowed_tools: list[str] | None = None
    description: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://", url):
            raise ValueError("an MCP server url must start with http:// or https://")
        return url

    def headers(self) -> dict[str, str]:
        """The configured headers with their values read now (unset variables are left out)."""
        return {name: value for name, env in self.headers_env.items() if (value := os.environ.get(env))}


class RoutingConfig(_Section):
    """`[routing]`: how a request survives a failing upstream (README "Routes and failover")."""

    # Further attempts at the same target after a failure before its first content (then the next target).
    retries: int = Field(default=0, ge=0, le=10)
    # Seconds before the first retry of a target, doubled for each next one (with jitter), at most `max_backoff`;
    # a 429's `Retry-After` is waited instead (at most `max_backoff`) when no other target is left.
    backoff: float = Field(default=0.1, ge=0)
    max_backoff: float = Field(default=5.0, ge=0)
    # A route's target whose last this many attempts failed is skipped for `breaker_cooldown` seconds; then one
    # request is let through to probe it (closed again if it succeeds, open again at once if it fails).
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown: float = Field(default=30.0, gt=0)
    # Retries of a target over `retry_budget_window` seconds stay under this share of its requests, or under
    # `retry_budget_min`, whichever is more (light traffic can still retry; an outage is not multiplied).
    retry_budget: float = Field(default=0.2, ge=0)
    retry_budget_min: int = Field(default=3, ge=0)
    retry_budget_window: float = Field(default=10.0, gt=0)


class WeightedTarget(_Section):
    target: str = Field(pattern=r"^.+:[A-Za-z0-9_.-]+$")
    weight: float = Field(default=1.0, gt=0)


class RouteConfig(_Section):
    """`[[routes]]`: a model name clients send, standing for ordered or weighted `<model>:<provider>` targets."""

    name: str = Field(pattern=r"^[^\s]{1,256}$")
    strategy: Literal["fallback", "weighted", "least_busy", "latency"] = "fallback"
    targets: list[WeightedTarget] = Field(min_length=1)
    # Seconds after which an attempt that has sent no content yet gets a second one beside it, at the next target
    # (a hedge): the first to send content answers, the other is cancelled. None: no hedging.
    hedge_after: float | None = Field(default=None, gt=0)

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, targets: Any) -> Any:
        if isinstance(targets, list):  # "<model>:<provider>" is `{ target = "<model>:<provider>" }`
            return [{"target": t} if isinstance(t, str) else t for t in targets]
        return targets

    @model_validator(mode="after")
    def _hedged(self) -> RouteConfig:
        if self.hedge_after is not None and len(self.targets) < 2:
            raise ValueError(f"route {self.name!r}: hedge_after needs a second target to start")
        return self


class PriceConfig(_Section):
    """`[[prices]]`: what a model's tokens cost, in US dollars per million tokens (`ferroute_usage_cost_usd_total`).

    `model` is a glob (`fnmatch`, case-sensitive) matched against the model string the client sent (`"gpt-4o*"`,
    a route's name) and against the `<model>:<provider>` that served the response (`"*:openai"`); the first entry
    that matches either prices the response. Cached input tokens are part of the input tokens and reasoning tokens
    part of the output tokens (as in the Responses API's usage): they are charged at their own rate instead, never
    on top."""

    model: str = Field(min_length=1)
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)  # default: input_per_mtok
    reasoning_per_mtok: float | None = Field(default=None, ge=0)  # default: output_per_mtok


class KeyConfig(_Section):
    """`[[keys]]`: a client key with a name and, optionally, limits (README "Keys and limits"). Exactly one of `key`,
    `key_env` (read at startup) and `key_sha256` (the hex SHA-256 of the key) gives it; the router holds only its
    digest."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")
    key: str | None = None
    key_env: str | None = None
    key_sha256: str | None = None
    requests_per_minute: int | None = Field(default=None, ge=1)
    # Input tokens are estimated before the call (body bytes / 4) and settled with the usage reported after it.
    tokens_per_minute: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1, le=4096)
    # fnmatch globs of the model string a client sends (absent: any model).
    models: list[str] | None = None

    @model_validator(mode="after")
    def _check_source(self) -> KeyConfig:
        given = [name for name in ("key", "key_env", "key_sha256") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a key needs exactly one of key, key_env, key_sha256 (got {', '.join(given) or 'none'})")
        if self.key is not None and not self.key.strip():
            raise ValueError("the key is empty")
        if self.key_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.key_sha256):
            raise ValueError("key_sha256 must be 64 hex characters (the SHA-256 of the key)")
        if self.key_env is not None and not os.environ.get(self.key_env, "").strip():
            raise ValueError(f"the variable {self.key_env} (key_env) is not set")
        return self

    def secret(self) -> str | None:
        """The plain key, where the config gives it (None for `key_sha256`)."""
        if self.key_env is not None:
            return os.environ.get(self.key_env, "").strip() or None
        return self.key

    def digest(self) -> bytes:
        """The SHA-256 of the key: all the router keeps of it."""
        if self.key_sha256 is not None:
            return bytes.fromhex(self.key_sha256)
        secret = self.secret()
        if secret is None:
            raise ValueError(f"key {self.name!r}: the variable {self.key_env} is not set")
        return hashlib.sha256(secret.encode()).digest()

    @property
    def limited(self) -> bool:
        return not (self.requests_per_minute is None and self.tokens_per_minute is None and self.max_concurrent is None)


class TelemetryConfig(_Section):
    """`[telemetry]`: OpenTelemetry traces (README "Tracing"). Off unless `otlp_endpoint` or the standard
    `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set."""

    # The collector's OTLP/HTTP base URL (`http://host:4318`): spans go to `{otlp_endpoint}/v1/traces`.
    otlp_endpoint: str | None = None
    # `service.name` of the spans; unset: `$OTEL_SERVICE_NAME`, else "ferroute".
    service_name: str | None = None
    # Prompt and completion text (and hosted tools' arguments and results) in the spans, masked and cut to
    # `max_content_chars` each; off by default.
    capture_content: bool = False
    max_content_chars: int = Field(default=16384, ge=256)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://", url):
            raise ValueError("otlp_endpoint must start with http:// or https://")
        return url


class Settings(_Section):
    server: ServerConfig = ServerConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    limits: LimitsConfig = LimitsConfig()
    store: StoreConfig | None = None
    providers: list[ProviderConfig] = []
    mcp: McpConfig = McpConfig()
    mcp_servers: list[McpServerConfig] = []
    agents: AgentsConfig = AgentsConfig()
    routing: RoutingConfig = RoutingConfig()
    routes: list[RouteConfig] = []
    prices: list[PriceConfig] = []
    keys: list[KeyConfig] = []
    telemetry: TelemetryConfig = TelemetryConfig()
    # Where the settings came from (not a TOML key).
    source: str = Field(default=DEFAULTS_SOURCE, exclude=True)

    @model_validator(mode="after")
    def _check_providers(self) -> Settings:
        names = [p.name for p in self.providers]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two providers are named {name!r}")
        if self.server.default_provider is not None and self.server.default_provider not in names:
            raise ValueError(f"server.default_provider {self.server.default_provider!r} is not a provider name")
        routes = [r.name for r in self.routes]
        for route in self.routes:
            if routes.count(route.name) > 1:
                raise ValueError(f"two routes are named {route.name!r}")
            for target in route.targets:
                provider = target.target.rpartition(":")[2]
                if provider not in names:
                    raise ValueError(f"route {route.name!r}: target {target.target!r} names no provider {provider!r}")
        labels = [s.label for s in self.mcp_servers]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"two mcp_servers are labelled {label!r}")
        key_names = [k.name for k in self.keys]
        for name in key_names:
            if key_names.count(name) > 1:
                raise ValueError(f"two keys are named {name!r}")
        return self


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, the key and the line."""


def default_settings() -> Settings:
    """No config file: the built-in mock provider, plus a provider for each standard key variable that is set."""
    providers = [ProviderConfig(name="mock", kind="mock", models=["ferroute-mock"])]
    for name, kind, env, base_url in STANDARD_PROVIDERS:
        if os.environ.get(env):
            providers.append(ProviderConfig(name=name, kind=kind, base_url=base_url, api_key_env=env))
    # `ferroute mcp-demo` (the demo MCP server, on its default port) as server `demo`: a request with
    # `{"type": "mcp", "server_label": "demo"}` runs a tool loop with the built-in mock.
    demo = McpServerConfig(label="demo", url=DEMO_MCP_URL, require_approval="never")
    return Settings(providers=providers, server=ServerConfig(default_provider="mock"), mcp_servers=[demo])


def load_settings(path: str | Path | None) -> Settings:
    if path is None:
        return default_settings()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8") from None
    return parse_settings(text, str(path))


def parse_settings(text: str, source: str = "<config>") -> Settings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = tuple(first["loc"])
        key = _dotted(loc)
        line = _find_line(text, loc)
        where = f"{source}:{line}" if line else source
        problem = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        elif first["type"] == "missing":
            problem = "required key missing"
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        raise ConfigError(f"{where}: {key or '(top level)'}: {problem}{more}") from None
    settings.source = source
    if not settings.providers:  # a config that names no provider still gets the built-in mock
        settings.providers = [ProviderConfig(name="mock", kind="mock", models=["ferroute-mock"])]
    return settings


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def _find_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the key at `loc` (or of its table when the key is absent)."""
    path = [str(p) for p in loc if not isinstance(p, int)]
    indexes = [p for p in loc if isinstance(p, int)]
    table: list[str] = []
    counts: dict[str, int] = {}
    table_index: int | None = None
    best: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = [p.strip().strip("\"'") for p in header.group(2).split(".")]
            joined = ".".join(table)
            if header.group(1) == "[[":
                counts[joined] = counts.get(joined, -1) + 1
                table_index = counts[joined]
            else:
                table_index = None
            if table == path[: len(table)] and (table_index is None or indexes[:1] == [table_index]):
                best = best or number
                if len(table) == len(path):
                    return number
            continue
        key = _KEY.match(line)
        if key is None:
            continue
        full = [*table, key.group(1).strip('"')]
        in_table = table_index is None or indexes[:1] == [table_index]
        if in_table and full == path[: len(full)]:
            return number
    return best
