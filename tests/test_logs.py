"""The access log's handler: lines leave the process within the flush interval, without a write per line."""

from __future__ import annotations

import io
import logging
import os
import time

import pytest

from ferroute import logs


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushed = ""
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.getvalue()


def _logger(name: str, stream: CountingStream) -> tuple[logging.Logger, logs.BufferedStreamHandler]:
    handler = logs.BufferedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, handler


def test_lines_are_flushed_in_the_background_not_per_line() -> None:
    stream = CountingStream()
    logger, _ = _logger("ferroute.test.buffered", stream)
    for i in range(100):
        logger.info("line %d", i)
    assert stream.flushes == 0  # (a StreamHandler flushes after each of the 100)
    deadline = time.monotonic() + 5 * logs.FLUSH_INTERVAL
    while stream.flushed.count("\n") < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream.flushed.splitlines() == [f"line {i}" for i in range(100)]
    assert 1 <= stream.flushes <= 3


def test_flush_all_writes_at_once() -> None:
    stream = CountingStream()
    logger, _ = _logger("ferroute.test.flush_all", stream)
    logger.info("last words")
    logs.flush_all(logger)
    assert stream.flushed == "last words\n"


@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")  # (Python 3.12+)
def test_a_forked_child_flushes_its_own_lines() -> None:
    read, write = os.pipe()
    stream = CountingStream()
    logger, _ = _logger("ferroute.test.fork", stream)
    logger.info("in the parent")  # the parent's flusher thread starts
    pid = os.fork()
    if pid == 0:
        child = CountingStream()
        handler = logger.handlers[0]
        assert isinstance(handler, logs.BufferedStreamHandler)
        handler.setStream(child)
        logger.info("in the child")
        deadline = time.monotonic() + 5 * logs.FLUSH_INTERVAL
        while not child.flushed and time.monotonic() < deadline:
            time.sleep(0.02)
        os.write(write, child.flushed.encode() or b"-")
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    got = os.read(read, 100).decode()
    os.close(read)
    assert got == "in the child\n"
