"""Logging for `ferroute serve`: the per-request access line at a cost the hot path can carry.

A `StreamHandler` flushes its stream after every record: one `write` system call per request for the
access log. `BufferedStreamHandler` keeps the lines itself and a background thread writes them, joined,
within `FLUSH_INTERVAL` seconds of the first line that waits; past `MAX_PENDING` waiting lines the
logging thread writes them at once (so a stream that cannot keep up slows the logger instead of growing
the queue). It does not rely on the stream's own buffer: with `PYTHONUNBUFFERED=1`, the usual setting in
container images (and on this project's CI machines), `sys.stdout` writes each line as it comes, which
put a `write` per request back on the event loop (strace of a worker). `flush()` (also run by
`logging.shutdown` and by the app's shutdown) writes everything at once.

`fast_records()` turns off what a log record gathers and no formatter of ferroute's uses: the
caller's file and line (a stack walk per record), thread and process names (the logging HOWTO's
"Optimization" section). Measured in the router (py-spy, non-streaming requests at 800/s): the access
line was ~7% of the worker's event-loop samples before.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from typing import IO, Any

FLUSH_INTERVAL = 0.5  # seconds a line may wait
MAX_PENDING = 1024  # lines waiting before the logging thread writes them itself

_handlers: weakref.WeakSet[BufferedStreamHandler] = weakref.WeakSet()


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A `StreamHandler` whose lines are written in batches by a background thread."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        # Appended by `emit` (under the handler's lock), taken by `flush` (under `_writing`, never the handler's
        # lock, so a logging thread that writes a full queue itself cannot deadlock with the flusher).
        self._pending: collections.deque[str] = collections.deque()
        self._writing = threading.Lock()
        self._dirty = threading.Event()
        self._flusher: threading.Thread | None = None
        _handlers.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self._add(line)

    def plain(self) -> bool:
        """Whether a line would be written as given: no filters, and the formatter is the bare message."""
        formatter = self.formatter
        return not self.filters and formatter is not None and formatter._fmt == "%(message)s"

    def _add(self, line: str) -> None:
        self._pending.append(line + self.terminator)
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        elif not self._dirty.is_set():
            self._dirty.set()
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="ferroute-log-flush", daemon=True)
                self._flusher.start()

    def flush(self) -> None:
        """Write every waiting line in one `write`, then flush the stream."""
        with self._writing:
            pending = self._pending
            lines = [pending.popleft() for _ in range(len(pending))]  # (in order; later lines wait their turn)
            stream = self.stream
            if stream is None:
                return
            try:
                if lines:
                    stream.write("".join(lines))
                if hasattr(stream, "flush"):
                    stream.flush()
            except Exception:  # (a closed or broken stream: as `StreamHandler` does, report and go on)
                self.handleError(logging.makeLogRecord({"msg": "access log write failed"}))

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
        self._writing = threading.Lock()  # (a lock held at the fork stays held in the child)
        self._pending.clear()  # the parent's lines: the parent writes them


def _after_fork() -> None:
    # A forked child has none of its parent's threads: each handler starts its flusher again when used.
    for handler in list(_handlers):
        handler._forget_thread()


if hasattr(os, "register_at_fork"):  # (POSIX; where there is no fork there is nothing to forget)
    os.register_at_fork(after_in_child=_after_fork)


def log_line(logger: logging.Logger, line: str) -> None:
    """`logger.info(line)`; where the logger ends in one `BufferedStreamHandler` that writes lines as given (the
    access log of `ferroute serve`), the line goes straight to it: no `LogRecord` made, formatted and passed
    through the logger's and handler's filters and locks, to the same effect (~20 Python calls per request on
    the event loop, most of the access line's cost)."""
    handlers = logger.handlers
    if len(handlers) == 1 and not logger.propagate and not logger.filters and logger.isEnabledFor(logging.INFO):
        handler = handlers[0]
        if type(handler) is BufferedStreamHandler and handler.level <= logging.INFO and handler.plain():
            with handler.lock:  # type: ignore[union-attr]  # (a Handler made by __init__ has its lock)
                handler._add(line)
            return
    logger.info(line)


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
