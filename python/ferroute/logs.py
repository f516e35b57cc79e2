"""Logging for `ferroute serve`: the per-request access line at a cost the hot path can carry.

A `StreamHandler` flushes its stream after every record: one `write` system call per request for the
access log. `BufferedStreamHandler` leaves the lines in the stream's buffer (8 KiB when stdout is a
file or a pipe; a terminal stays line-buffered) and a background thread flushes it within
`FLUSH_INTERVAL` seconds of the first line that waits; `flush()` (also run by `logging.shutdown` and
by the app's shutdown) writes everything at once.

`fast_records()` turns off what a log record gathers and no formatter of ferroute's uses: the
caller's file and line (a stack walk per record), thread and process names (the logging HOWTO's
"Optimization" section). Measured in the router (py-spy, non-streaming requests at 800/s): the access
line was ~7% of the worker's event-loop samples before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import IO, Any

FLUSH_INTERVAL = 0.5  # seconds a buffered line may wait

_handlers: weakref.WeakSet[BufferedStreamHandler] = weakref.WeakSet()


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A `StreamHandler` that flushes in the background instead of after every record."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self._dirty = threading.Event()
        self._flusher: threading.Thread | None = None
        _handlers.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if not self._dirty.is_set():
            self._dirty.set()
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="ferroute-log-flush", daemon=True)
                self._flusher.start()

    def _flush_loop(self) -> None:
        dirty = self._dirty
        while True:
            dirty.wait()
            time.sleep(FLUSH_INTERVAL)
            dirty.clear()
            self.flush()

    def _forget_thread(self) -> None:
        self._flusher = None
        self._dirty = threading.Event()


def _after_fork() -> None:
    # A forked child has none of its parent's threads: each handler starts its flusher again when used.
    for handler in list(_handlers):
        handler._forget_thread()


if hasattr(os, "register_at_fork"):  # (POSIX; where there is no fork there is nothing to forget)
    os.register_at_fork(after_in_child=_after_fork)


def fast_records() -> None:
    """Log records without caller, thread or process information (process-wide)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def flush_all(logger: logging.Logger | Any) -> None:
    """Flush the handlers of `logger` (a worker's last lines before it exits: a forked worker ends with
    `os._exit`, so `logging.shutdown` does not run there)."""
    for handler in getattr(logger, "handlers", []):
        try:
            handler.flush()
        except Exception:  # noqa: PERF203  (a closed stream: nothing more to write)
            continue
