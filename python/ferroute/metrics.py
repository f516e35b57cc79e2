"""Prometheus text metrics for the whole instance, kept in plain dicts (a few dict updates per request, none per event).

Each Granian worker is its own process. Under `ferroute serve` every worker also publishes a snapshot of its
values, at most every `PUBLISH_EVERY` seconds and only when they changed, into a file of its own in the instance's
directory (`$FERROUTE_METRICS_DIR`, made by `ferroute serve` before the workers start and removed at its exit); the
worker a scrape reaches merges every other worker's snapshot with its own current values. So the request path pays
nothing over plain dicts, and a scrape sees the other workers as of at most `PUBLISH_EVERY` seconds ago.

A worker holds an exclusive `flock` on a lock file of its own while it lives (the kernel lets go of it when the
process ends, however it ends), which is how a scrape tells a live worker from a dead one without trusting pids:
counters and histograms of dead workers stay in the sums (folded into `dead.json` by the next scrape, their files
removed), their gauges go. A worker Granian starts again is a new process with a new file, counting from zero: no
double count, and what the dead one published is kept (all of it when it stopped cleanly: its last snapshot is
written at shutdown; after a crash, up to its last `PUBLISH_EVERY`).

Without `$FERROUTE_METRICS_DIR` (an app built in process, as the tests do) a scrape shows this process alone.

Adding a series: `Metrics.counter(name, help, labels)` / `Metrics.gauge(...)` give a family whose `inc`, `set` and
`add` take the label values as a tuple in the order of `labels`; the aggregation takes care of the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import logging
import os
import secrets
import tempfile
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic_core

if TYPE_CHECKING:
    import asyncio

    from ferroute.config import PriceConfig

error_log = logging.getLogger("ferroute.error")

# Seconds; shared by the time-to-first-event and stream-duration histograms.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LE = tuple(str(bound) for bound in (*_BUCKETS, "+Inf"))

METRICS_DIR_ENV = "FERROUTE_METRICS_DIR"
# Seconds between a worker's snapshots (when its values changed): how far behind a scrape may see other workers.
PUBLISH_EVERY = 0.25
_DEAD = "dead.json"  # counters and histograms of workers that are gone
_MERGE_LOCK = "merge.lock"  # one scrape at a time folds dead workers' files into `_DEAD`

Labels = tuple[str, ...]
Kind = Literal["counter", "gauge", "histogram"]
# A family's values by label values: a number (counter, gauge) or `[bucket counts..., sum]` (histogram).
Values = dict[Labels, Any]
_F = TypeVar("_F", bound="Family")
_UNKNOWN: Any = object()  # (not in the price cache yet)


def _label(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Family:
    """A named series with label names; `values()` gives its current values for a snapshot or a scrape."""

    kind: Kind = "counter"
    aggregate = "sum"  # how gauges of several live workers combine: "sum" or "max"

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labels = tuple(labels)

    def values(self) -> Values:
        raise NotImplementedError


class Counter(Family):
    """A counter: `inc(("label value", ...), amount)`; or, with `collect`, whatever that returns at a scrape."""

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        collect: Callable[[], Mapping[tuple[Any, ...], float]] | None = None,
    ) -> None:
        super().__init__(name, help, labels)
        self.counts: defaultdict[tuple[Any, ...], float] = defaultdict(int)
        self.collect = collect

    def inc(self, labels: tuple[Any, ...] = (), amount: float = 1) -> None:
        self.counts[labels] += amount

    def values(self) -> Values:
        counts = self.collect() if self.collect is not None else self.counts
        return {tuple(_label(v) for v in labels): value for labels, value in counts.items()}


class Gauge(Family):
    """A gauge: `set(labels, value)` / `add(labels, amount)`, or `collect` read at a scrape. Workers that are gone
    drop out; the live ones' values are summed (`aggregate="sum"`) or their highest taken (`"max"`)."""

    kind: Kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        collect: Callable[[], Mapping[tuple[Any, ...], float]] | None = None,
        aggregate: Literal["sum", "max"] = "sum",
    ) -> None:
        super().__init__(name, help, labels)
        self.current: dict[tuple[Any, ...], float] = {}
        self.collect = collect
        self.aggregate = aggregate

    def set(self, labels: tuple[Any, ...], value: float) -> None:
        self.current[labels] = value

    def add(self, labels: tuple[Any, ...], amount: float) -> None:
        self.current[labels] = self.current.get(labels, 0) + amount

    def values(self) -> Values:
        current = self.collect() if self.collect is not None else self.current
        return {tuple(_label(v) for v in labels): value for labels, value in current.items()}


class Histogram(Family):
    """Seconds in `_BUCKETS`, by label values."""

    kind: Kind = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        super().__init__(name, help, labels)
        # Per label values: a count per bucket (not cumulative; the last is +Inf), then the sum.
        self.data: dict[tuple[Any, ...], list[float]] = {}

    def observe(self, labels: tuple[Any, ...], value: float) -> None:
        data = self.data.get(labels)
        if data is None:
            data = self.data[labels] = [0] * (len(_BUCKETS) + 2)
        data[bisect_left(_BUCKETS, value)] += 1  # (the first bound >= value; past the last: +Inf)
        data[-1] += value

    def values(self) -> Values:
        return {tuple(_label(v) for v in labels): list(data) for labels, data in self.data.items()}


class _Price:
    __slots__ = ("cached", "input", "output", "reasoning")

    def __init__(self, config: PriceConfig) -> None:
        # Per token.
        self.input = config.input_per_mtok / 1e6
        self.output = config.output_per_mtok / 1e6
        self.cached = (config.cached_input_per_mtok if config.cached_input_per_mtok is not None else
                       config.input_per_mtok) / 1e6  # fmt: skip
        self.reasoning = (config.reasoning_per_mtok if config.reasoning_per_mtok is not None else
                          config.output_per_mtok) / 1e6  # fmt: skip

    def cost(self, input_tokens: int, output_tokens: int, cached: int, reasoning: int) -> float:
        # Responses API usage: cached tokens are part of input_tokens, reasoning tokens part of output_tokens.
        if cached > input_tokens:
            cached = input_tokens
        if reasoning > output_tokens:
            reasoning = output_tokens
        return (
            (input_tokens - cached) * self.input
            + cached * self.cached
            + (output_tokens - reasoning) * self.output
            + reasoning * self.reasoning
        )


class Metrics:
    """The router's series. The request path calls `request`, `upstream_error`, `stream_done`, `usage` and moves
    `in_flight`; other parts add their own families with `counter` / `gauge`."""

    def __init__(self, prices: Sequence[PriceConfig] = (), directory: str | None = None) -> None:
        self.families: list[Family] = []
        self.in_flight = 0
        requests = self.counter(
            "ferroute_requests_total",
            "POST /v1/responses requests by provider, HTTP status and streaming.",
            ("provider", "status", "stream"),
        )
        self.requests = requests.counts
        upstream_errors = self.counter(
            "ferroute_upstream_errors_total", "Upstream failures by provider and code.", ("provider", "code")
        )
        self.upstream_errors = upstream_errors.counts
        retries = self.counter(
            "ferroute_upstream_retries_total",
            "Attempts that failed before their first content and were retried (next_target the same) or failed over "
            "(another), by code.",
            ("target", "next_target", "code"),
        )
        self.retries = retries.counts
        hedges = self.counter(
            "ferroute_upstream_hedges_total",
            "Hedges: a second target started beside an attempt that sent no content for the route's hedge_after, by "
            "route, the hedge's target and outcome (won: it sent content first; lost: the first attempt did, and the "
            "hedge was cancelled; failed: it failed before its content; abandoned: the request ended first).",
            ("route", "target", "outcome"),
        )
        self.hedges = hedges.counts
        self.gauge(
            "ferroute_streams_in_flight", "Streaming responses being sent now.", collect=lambda: {(): self.in_flight}
        )
        first_event = Histogram(
            "ferroute_time_to_first_event_seconds", "From the request to the first byte of the stream.", ("provider",)
        )
        self.first_event = self._add(first_event)
        self.duration = self._add(
            Histogram("ferroute_stream_duration_seconds", "From the request to the end of the stream.", ("provider",))
        )
        # Per (key name, model): [input, output, cached, reasoning] tokens (the translator's order).
        self.tokens: defaultdict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self._add(_TokensFamily(self.tokens))
        self.prices = [(price.model, _Price(price)) for price in prices]
        self._price_of: dict[tuple[str, str, str], _Price | None] = {}
        cost = self.counter(
            "ferroute_usage_cost_usd_total",
            "What responses' tokens cost by key name and model, in US dollars, at the [[prices]] table's rates.",
            ("key", "model"),
        )
        self.cost = cost.counts
        self.shared = _Shared(Path(directory)) if directory else None

    # --- adding families -------------------------------------------------------------------------

    def counter(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        *,
        collect: Callable[[], Mapping[tuple[Any, ...], float]] | None = None,
    ) -> Counter:
        """A new counter family, shown in `/metrics` summed over the instance's workers (dead ones' included):
        `metrics.counter("ferroute_retries_total", "Retries by target.", ("target",)).inc(("m:prov",))`. With
        `collect`, its values are whatever that returns (label values -> count) when a snapshot is taken."""
        return self._add(Counter(name, help, labels, collect))

    def gauge(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        *,
        collect: Callable[[], Mapping[tuple[Any, ...], float]] | None = None,
        aggregate: Literal["sum", "max"] = "sum",
    ) -> Gauge:
        """A new gauge family over the instance's live workers: summed, or their highest with `aggregate="max"`
        (e.g. a circuit open in any worker: `metrics.gauge("ferroute_upstream_circuit_open", "…", ("target",),
        aggregate="max").set(("m:prov",), 1)`). With `collect`, its values are read from that at a snapshot."""
        return self._add(Gauge(name, help, labels, collect, aggregate))

    def _add(self, family: _F) -> _F:
        if any(f.name == family.name for f in self.families):
            raise ValueError(f"metric {family.name} is defined twice")
        self.families.append(family)
        return family

    # --- the request path ------------------------------------------------------------------------

    def request(self, provider: str, status: int, stream: bool) -> None:
        self.requests[(provider, status, stream)] += 1

    def upstream_error(self, provider: str, code: str) -> None:
        self.upstream_errors[(provider, code)] += 1

    def retry(self, target: str, following: str, code: str) -> None:
        """An attempt at `target` failed with `code` before its first content; the request went on to `following`
        (the same target: a retry; another: a failover)."""
        self.retries[(target, following, code)] += 1

    def hedge(self, route: str, target: str, outcome: str) -> None:
        self.hedges[(route, target, outcome)] += 1

    def stream_done(self, provider: str, began: float, first_event_at: float | None) -> None:
        now = time.monotonic()
        self.duration.observe((provider,), now - began)
        if first_event_at is not None:
            self.first_event.observe((provider,), first_event_at - began)

    def usage(
        self,
        key: str,
        model: str,
        usage: tuple[int, int, int, int] | None,
        upstream_model: str = "",
        provider: str = "",
    ) -> None:
        """A response's tokens (`translator.usage` once it has ended: input, output, cached, reasoning), counted for
        the key name and the model the client sent, and priced when `[[prices]]` has the model (matched against
        `model`, then `<upstream_model>:<provider>`)."""
        if usage is None:
            return
        input_tokens, output_tokens, cached, reasoning = usage
        totals = self.tokens[(key, model)]
        totals[0] += input_tokens
        totals[1] += output_tokens
        totals[2] += cached
        totals[3] += reasoning
        if self.prices:
            which = (model, upstream_model, provider)
            price = self._price_of.get(which, _UNKNOWN)
            if price is _UNKNOWN:
                price = self._price_for(*which)
            if price is not None:
                self.cost[(key, model)] += price.cost(input_tokens, output_tokens, cached, reasoning)

    def _price_for(self, model: str, upstream_model: str, provider: str) -> _Price | None:
        target = f"{upstream_model}:{provider}"
        found = next(
            (price for glob, price in self.prices if fnmatch.fnmatchcase(model, glob) or
             fnmatch.fnmatchcase(target, glob)), None
        )  # fmt: skip
        if len(self._price_of) >= 4096:  # (models are clients' strings: keep the cache bounded)
            self._price_of.clear()
        self._price_of[(model, upstream_model, provider)] = found
        return found

    # --- the instance ----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the worker, on its loop, before the first request: take the worker's place in the instance's
        directory and publish a snapshot every `PUBLISH_EVERY` seconds (when something changed)."""
        shared = self.shared
        if shared is None or shared.handle is not None:
            return
        shared.open()

        def tick() -> None:
            shared.timer = loop.call_later(PUBLISH_EVERY, tick)  # (first: an error below does not end the chain)
            self.publish()

        tick()

    def stop(self) -> None:
        """At the worker's shutdown: its last snapshot (its counters stay in the instance's sums)."""
        shared = self.shared
        if shared is None or shared.handle is None:
            return
        if shared.timer is not None:
            shared.timer.cancel()
            shared.timer = None
        self.publish()

    def publish(self) -> None:
        shared = self.shared
        if shared is None:
            return
        try:
            shared.write(self.snapshot())
        except OSError as e:  # (a full or removed directory: the scrape shows what the others published)
            error_log.warning("metrics snapshot not written: %s", e)

    def snapshot(self) -> dict[str, Any]:
        """This process's values: {name: {"type", "help", "labels", "aggregate", "values": [[labels, value], …]}}."""
        return {
            f.name: {
                "type": f.kind,
                "help": f.help,
                "labels": list(f.labels),
                "aggregate": f.aggregate,
                "values": [[list(labels), value] for labels, value in f.values().items()],
            }
            for f in self.families
        }

    def render(self) -> str:
        """The Prometheus text of the instance (this process alone without a shared directory)."""
        merged = _Merged()
        merged.add(self.snapshot(), live=True)
        if self.shared is not None:
            try:
                for snapshot, live in self.shared.others():
                    merged.add(snapshot, live=live)
            except OSError as e:
                error_log.warning("metrics of other workers not read: %s", e)
        return merged.render()


class _TokensFamily(Family):
    kind: Kind = "counter"

    def __init__(self, tokens: Mapping[tuple[str, str], list[int]]) -> None:
        super().__init__(
            "ferroute_usage_tokens_total",
            "Tokens of responses by key name, the model the client sent, and kind (input, output, reasoning, cached;"
            " reasoning is part of output and cached part of input, as in the Responses API's usage).",
            ("key", "model", "kind"),
        )
        self.tokens = tokens

    def values(self) -> Values:
        out: Values = {}
        for (key, model), (input_tokens, output_tokens, cached, reasoning) in self.tokens.items():
            out[(key, model, "input")] = input_tokens
            out[(key, model, "output")] = output_tokens
            out[(key, model, "reasoning")] = reasoning
            out[(key, model, "cached")] = cached
        return out


class _Shared:
    """This worker's files in the instance's directory, and the other workers' snapshots."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"w-{os.getpid()}-{secrets.token_hex(4)}"
        self.handle: int | None = None  # the lock file, held while the worker lives
        self.timer: asyncio.TimerHandle | None = None
        self.last: bytes = b""

    def open(self) -> None:
        # Locked before it gets its name, so that no scrape ever sees it unlocked (and takes the worker for dead).
        temporary = self.directory / f".{self.name}.lock"
        handle = os.open(temporary, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(temporary, self.directory / f"{self.name}.lock")
        self.handle = handle

    def write(self, snapshot: dict[str, Any]) -> None:
        data = pydantic_core.to_json(snapshot)  # (json.dumps: 1.7x the time)
        if data == self.last:
            return
        _write_atomically(self.directory / f"{self.name}.json", data)
        self.last = data

    def others(self) -> Iterable[tuple[dict[str, Any], bool]]:
        """Every other worker's last snapshot, live or not, and the dead ones' sum (their files folded into it)."""
        directory = self.directory
        handle = os.open(directory / _MERGE_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # (held for a few file reads: scrapes are seconds apart)
            dead: list[tuple[Path, dict[str, Any]]] = []
            out: list[tuple[dict[str, Any], bool]] = []
            for path in directory.glob("w-*.json"):
                if path.stem == self.name:
                    continue
                snapshot = _read(path)
                if snapshot is None:
                    continue
                if _alive(directory / f"{path.stem}.lock"):
                    out.append((snapshot, True))
                else:
                    dead.append((path, snapshot))
            folded = _read(directory / _DEAD) or {}
            if dead:
                merged = _Merged()
                merged.add(folded, live=False)
                for _, snapshot in dead:
                    merged.add(snapshot, live=False)
                folded = merged.snapshot()
                _write_atomically(directory / _DEAD, pydantic_core.to_json(folded))
                for path, _ in dead:
                    with contextlib.suppress(OSError):
                        path.unlink()
                    with contextlib.suppress(OSError):
                        (directory / f"{path.stem}.lock").unlink()
            out.append((folded, False))
            return out
        finally:
            os.close(handle)  # (the lock goes with it)


def instance_directory() -> str:
    """A new directory for an instance's workers to meet in: in memory (`/dev/shm`) where there is one."""
    shm = Path("/dev/shm")
    return tempfile.mkdtemp(prefix="ferroute-metrics-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = pydantic_core.from_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    return data


def worker_alive(directory: Path, name: str) -> bool:
    """Whether the worker `name` (its files' stem in the instance's directory) lives."""
    return _alive(directory / f"{name}.lock")


def _alive(lock: Path) -> bool:
    """Whether the worker that holds `lock` lives (its flock would be gone with it)."""
    try:
        handle = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False


class _Merged:
    """Snapshots summed: counters and histograms over every worker, gauges over the live ones."""

    def __init__(self) -> None:
        self.families: dict[str, dict[str, Any]] = {}

    def add(self, snapshot: Mapping[str, Any], *, live: bool) -> None:
        for name, family in snapshot.items():
            kind = family["type"]
            if kind == "gauge" and not live:
                continue
            into = self.families.get(name)
            if into is None:
                into = self.families[name] = {
                    "type": kind,
                    "help": family["help"],
                    "labels": family["labels"],
                    "aggregate": family.get("aggregate", "sum"),
                    "values": {},
                }
            values: dict[Labels, Any] = into["values"]
            high = kind == "gauge" and into["aggregate"] == "max"
            for labels, value in family["values"]:
                labels = tuple(labels)
                before = values.get(labels)
                if before is None:
                    values[labels] = list(value) if kind == "histogram" else value
                elif kind == "histogram":
                    values[labels] = [a + b for a, b in zip(before, value, strict=True)]
                elif high:
                    values[labels] = max(before, value)
                else:
                    values[labels] = before + value

    def snapshot(self) -> dict[str, Any]:
        return {
            name: {**family, "values": [[list(labels), value] for labels, value in family["values"].items()]}
            for name, family in self.families.items()
        }

    def render(self) -> str:
        lines: list[str] = []
        for name, family in self.families.items():
            kind = family["type"]
            lines.append(f"# HELP {name} {family['help']}")
            lines.append(f"# TYPE {name} {kind}")
            names = family["labels"]
            for labels, value in sorted(family["values"].items()):
                pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, labels, strict=True))
                if kind == "histogram":
                    total = 0
                    for le, count in zip(_LE, value, strict=False):
                        total += count
                        lines.append(f'{name}_bucket{{{pairs}{"," if pairs else ""}le="{le}"}} {total}')
                    lines.append(f"{name}_sum{{{pairs}}} {value[-1]:.6f}")
                    lines.append(f"{name}_count{{{pairs}}} {total}")
                else:
                    lines.append(f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int) or (value == int(value) and abs(value) < 1e15):
        return str(int(value))
    return repr(value)
