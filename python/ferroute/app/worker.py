"""The worker process around the app: its collector settings, giving memory back after clients that stopped
reading, and the graceful drain when Granian tells it to stop (new requests get 503; streams still running after
`shutdown_grace` end with `response.failed`)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import signal
import threading
from collections.abc import Callable
from typing import Any

# See `tune_collector`.
_GC_YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Once per worker, before the first request."""
    # Everything alive now (modules, the app, pydantic's schemas) lives as long as the worker: keep it out of the
    # collector's full passes. Measured under 600 non-streaming requests/s: a gen-2 collection paused the worker
    # 18-24 ms before, 2-4 ms after.
    gc.collect()
    gc.freeze()
    # A request allocates thousands of container objects that live until its upstream answers: with CPython's
    # default young-generation threshold (700) they are traversed again and again while they wait, and under
    # overload (more requests waiting) the collector took 26% of the event loop's samples (py-spy, 700
    # non-streaming requests/s offered, sqlite store); with 50,000, none. Request-scoped garbage is freed by
    # reference counting either way; only cycles wait longer.
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 20, 20)


class HeapTrim:
    """Gives the heap's free pages back to the system after a client that stopped reading was dropped.

    Such a client fills the buffers between the upstream and its socket (the upstream connection's queue, the
    translated pieces waiting in Granian) and then leaves them all freed at once. glibc keeps freed memory for
    later: measured, 100 slow readers dropped ten at a time left the worker's heap ~10 MB above its baseline for
    good. `malloc_trim(0)` hands the free pages back. It runs on a thread (ctypes lets go of the GIL) a second
    after a drop, at most once per `interval` seconds, and costs ~0.1 ms on a tidy heap, ~8 ms on a fragmented
    150 MB one (taking each arena's lock in turn). Not on libcs without `malloc_trim` (musl): nothing to do.
    """

    def __init__(self, delay: float = 1.0, interval: float = 5.0) -> None:
        self.delay = delay
        self.interval = interval
        self.trims = 0
        self._trim = _malloc_trim()
        self._pending = False
        self._last = float("-inf")

    def soon(self) -> None:
        """Trim once the dropped exchange's buffers are freed (within a second); a no-op if one is due."""
        if self._trim is None or self._pending:
            return
        self._pending = True
        loop = asyncio.get_running_loop()
        loop.call_later(max(self.delay, self._last + self.interval - loop.time()), self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._last = loop.time()
        try:
            loop.run_in_executor(None, self._trim_now).add_done_callback(self._done)
        except RuntimeError:  # (the worker is shutting down: its executor is gone)
            self._pending = False

    def _trim_now(self) -> None:
        assert self._trim is not None
        self._trim(0)
        self.trims += 1

    def _done(self, _: asyncio.Future[None]) -> None:
        self._pending = False


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def on_stop_signal(loop: asyncio.AbstractEventLoop, begin_drain: Callable[[], None]) -> None:
    """Call `begin_drain` on `loop` when the worker is told to stop.

    Granian stops a worker by signal and then waits for its in-flight requests (up to its kill timeout) before
    the shutdown hook runs, which is too late to end streams cleanly. The Python-level handler is chained:
    Granian's own, registered with `loop.add_signal_handler`, still runs (the loop learns of the signal through
    its wakeup fd, on asyncio and uvloop alike). Only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):  # nobody handles it (the default ends the process; nothing to drain)
            continue

        def chained(number: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(begin_drain)
            previous(number, frame)

        signal.signal(signum, chained)
