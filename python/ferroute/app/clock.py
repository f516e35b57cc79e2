"""Time in a worker: one clock for every exchange (first-event, idle and client-write timeouts, shutdown, `: ping`
keep-alives) and the disconnect watcher, neither of them a task per request.

One clock per worker (a `call_later` chain) checks every timed exchange each `tick`; an exchange's work is
stopped by cancelling the task that runs it. (Three tasks per request before: 30 µs of event-loop CPU each,
micro-benchmark, and a task start on the way to the first event.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ferroute._types import Message, Receive

if TYPE_CHECKING:
    from ferroute.app.exchange import Exchange
    from ferroute.app.http import BodyRead

error_log = logging.getLogger("ferroute.error")

PING = b": ping\n\n"
# Seconds into an exchange before the client's disconnect is watched (see `Watcher`).
WATCH_AFTER = 0.05


class Clock:
    """Every `tick` seconds while any exchange is timed: each one's checks (`check`)."""

    def __init__(self, tick: float, keepalive_interval: float) -> None:
        self.tick = tick
        self.keepalive_interval = keepalive_interval
        self.aborting = False  # past the shutdown grace: every exchange is ended at its next check
        self.timed: set[Exchange] = set()  # exchanges the clock watches
        self.reading: set[BodyRead] = set()  # request bodies being read, each with its deadline
        self.handle: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def tick_for(shortest: float) -> float:
        """The tick for the shortest timeout or interval the clock enforces: a quarter of it, 0.05 to 1 s."""
        return max(0.05, min(1.0, shortest / 4))

    def time(self, ex: Exchange) -> None:
        """Put an exchange under the clock (until its work ends)."""
        ex.quiet_since = ex.pinged = ex.attempt_began = ex.began
        ex.sent_seen = ex.writes
        self.timed.add(ex)
        self._start()

    def resume(self, ex: Exchange) -> None:
        """Put an exchange that a timeout stopped back under the clock (its request goes on: another attempt)."""
        ex.quiet_since = time.monotonic()
        self.timed.add(ex)
        self._start()

    def watch(self, reading: BodyRead) -> None:
        """Put a body being read under the clock: past its deadline, `reading.expire()` (until `unwatch`)."""
        self.reading.add(reading)
        self._start()

    def unwatch(self, reading: BodyRead) -> None:
        self.reading.discard(reading)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.handle is None or self.loop is not loop:
            self.loop = loop
            self.handle = loop.call_later(self.tick, self._run)

    def untime(self, ex: Exchange) -> None:
        """The exchange's work has ended: the clock and the watcher no longer stop it."""
        ex.done = True
        self.timed.discard(ex)

    def stop(self, ex: Exchange, reason: str) -> None:
        """Cancel an exchange's work (once, and never after it ended)."""
        if ex.done or ex.stop is not None or ex.cancel is None:
            return
        ex.stop = reason
        self.timed.discard(ex)
        ex.cancel()

    def _run(self) -> None:
        now = time.monotonic()
        for ex in list(self.timed):
            try:
                self.check(ex, now)
            except Exception:  # noqa: PERF203  (one exchange must not stop the clock of the others)
                self.timed.discard(ex)
                error_log.exception("the clock failed on %s", ex.translator.response_id)
        for reading in list(self.reading):
            if now >= reading.deadline:
                self.reading.discard(reading)
                reading.expire()
        loop = self.loop
        busy = self.timed or self.reading
        self.handle = loop.call_later(self.tick, self._run) if busy and loop is not None else None

    def check(self, ex: Exchange, now: float) -> None:
        """One tick of an exchange: the first-event, idle and client-write timeouts, shutdown, keep-alives."""
        timeouts = ex.provider.timeouts
        if self.aborting:
            ex.timeout = "shutdown"
            self.stop(ex, "timeout")
            return
        if ex.sending:
            # Waiting on the client, not the upstream: the upstream's clock stops meanwhile.
            ex.quiet_since = ex.pinged = now
            if ex.writes != ex.written:
                ex.written, ex.stuck_since = ex.writes, now
            elif now - ex.stuck_since >= timeouts.client_write:
                ex.timeout = "client_write"
                self.stop(ex, "timeout")
            return
        ex.written = -1
        if ex.writes != ex.sent_seen:  # the client got bytes: the keep-alive interval starts again
            ex.sent_seen = ex.writes
            ex.pinged = now
        if ex.tooling:  # a hosted tool runs: the upstream is not being waited for
            ex.seen = ex.reads
            ex.quiet_since = now
        if ex.reads != ex.seen:
            # (Only the idle timeout restarts: reads that give the client nothing, such as an upstream's own
            # pings or comments, are silence to it.)
            ex.seen = ex.reads
            ex.quiet_since = now
        if ex.translator.upstream_events == 0:  # (comments and pings are not the first event; they keep idle off)
            if now - ex.attempt_began >= timeouts.first_event and not ex.tooling:
                ex.timeout = "first_event"
                self.stop(ex, "timeout")
                return
        elif now - ex.quiet_since >= timeouts.idle:
            ex.timeout = "idle"
            self.stop(ex, "timeout")
            return
        if (
            ex.stream
            and ex.framing == "sse"  # (a WebSocket has no keep-alive an ASGI app can send: see app.websocket)
            and ex.ping is None
            and now - ex.pinged >= self.keepalive_interval
            and ex.translator.status == "in_progress"
        ):  # fmt: skip
            ex.pinged = now
            ex.pinging = asyncio.get_running_loop().create_future()
            ex.ping = asyncio.ensure_future(self._ping(ex))

    async def _ping(self, ex: Exchange) -> None:
        """Send one `: ping` keep-alive (the work waits for it before its next send)."""
        pinging = ex.pinging
        try:
            await ex.start()
            await ex.send({"type": "http.response.body", "body": PING, "more_body": True})
        except Exception:
            self.stop(ex, "client_gone")
        finally:
            ex.ping = None
            ex.pinging = None
            if pinging is not None and not pinging.done():
                pinging.set_result(None)


class Watcher:
    """Calls `on_disconnect` when `receive()` says `http.disconnect`, without a task of its own where the
    server's `receive()` is a future (Granian's is); a coroutine (other servers, the RSGI adapter) runs as
    a task. `cancel` stops watching.

    Watching starts `WATCH_AFTER` seconds into the exchange, so an exchange that ends sooner never asks: each
    `receive()` of Granian's goes through its Rust thread (a task there, and a cancel at the end), and the
    watcher's `receive`, `cancel` and callbacks were ~10% of the event loop's samples at 1,500 non-streaming
    requests/s (py-spy; two `receive` calls each, the first for the empty message Granian sends after the
    body). A client that leaves sooner is seen then (its upstream request runs at most that much longer);
    one that leaves while the answer streams is also seen by the failing `send`."""

    __slots__ = ("on_disconnect", "pending", "receive", "start")

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self.receive = receive
        self.on_disconnect = on_disconnect
        self.pending: asyncio.Future[Message] | None = None
        self.start: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(WATCH_AFTER, self._first)

    def _first(self) -> None:
        self.start = None
        self._watch()

    def _watch(self) -> None:
        self.pending = pending = asyncio.ensure_future(self.receive())
        pending.add_done_callback(self._done)

    def _done(self, pending: asyncio.Future[Message]) -> None:
        if pending is not self.pending or pending.cancelled():
            return
        self.pending = None
        error = pending.exception()
        if error is not None or pending.result()["type"] == "http.disconnect":
            self.on_disconnect()
        else:  # (a message other than the disconnect: wait for the next one)
            self._watch()

    def cancel(self) -> None:
        if self.start is not None:
            self.start.cancel()
            self.start = None
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
