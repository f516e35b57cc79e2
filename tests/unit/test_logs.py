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


class WriteCountingStream(io.StringIO):
    """An unbuffered stream, as `sys.stdout` is under `PYTHONUNBUFFERED=1`: each `write` is a system call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_an_unbuffered_stream_gets_one_write_per_batch_not_per_line() -> None:
    stream = WriteCountingStream()
    logger, _ = _logger("ferroute.test.unbuffered", stream)
    for i in range(100):
        logger.info("line %d", i)
    assert stream.writes == 0  # (a StreamHandler, or one relying on the stream's buffer, wrote 100 times)
    deadline = time.monotonic() + 5 * logs.FLUSH_INTERVAL
    while stream.getvalue().count("\n") < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(100)]
    assert 1 <= stream.writes <= 3


def test_a_full_queue_is_written_by_the_logging_thread_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_PENDING", 10)
    stream = WriteCountingStream()
    logger, _ = _logger("ferroute.test.full", stream)
    for i in range(25):
        logger.info("line %d", i)
    # No waiting for the flusher: the 10th and the 20th line each wrote what was queued.
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(20)]
    assert stream.writes == 2
    logs.flush_all(logger)
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(25)]


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
        handler.stream = child  # (the same stdout, in effect; `setStream` would first flush what waits)
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
    assert got == "in the child\n"  # (not the parent's line, still waiting in the parent when it forked)


def test_log_line_skips_the_record_only_where_that_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`log_line` hands the line straight to the access log's handler (no LogRecord); anything that could see or
    change a record (another formatter, a filter, propagation, a level above INFO) gets `logger.info` instead."""
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record.getMessage())
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", counting)
    stream = CountingStream()
    logger, handler = _logger("ferroute.test.line", stream)
    logs.log_line(logger, '{"status":200}')
    assert made == []
    handler.flush()
    assert stream.getvalue() == '{"status":200}\n'

    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logs.log_line(logger, "formatted")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.propagate = True
    logs.log_line(logger, "propagated")
    logger.propagate = False
    seen: list[str] = []
    logger.addFilter(lambda record: seen.append(record.getMessage()) or True)
    logs.log_line(logger, "filtered")
    logger.filters.clear()
    logger.setLevel(logging.WARNING)
    logs.log_line(logger, "below the level")
    handler.flush()
    assert made == ["formatted", "propagated", "filtered"]
    assert seen == ["filtered"]
    assert stream.getvalue().splitlines() == ['{"status":200}', "[INFO] formatted", "propagated", "filtered"]
