"""Clients that send a request and then read nothing, as a client whose reader hung does: shared by the slow-reader
tests (`tests/router/test_backpressure.py`) and `bench.memory`."""

from __future__ import annotations

import socket
import threading
import time

RECEIVE_BUFFER = 4096  # the client's socket receive buffer, set before connecting so that its window stays small


def stalled_socket(port: int, body: bytes) -> socket.socket:
    """A connection to the router on `port` with a small receive window, `body` sent to `POST /v1/responses`; the
    caller reads (or does not) and closes it."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (port, len(body), body)
        )
    except BaseException:
        sock.close()
        raise
    return sock


def stall(port: int, body: bytes, seconds: float) -> None:
    """Send `body`, read nothing for `seconds`, then hang up (with unread data waiting, the close resets the
    connection)."""
    with stalled_socket(port, body):
        time.sleep(seconds)


def stalled_readers(port: int, body: bytes, count: int, at_once: int, seconds: float) -> None:
    """`count` stalled clients (`stall`), `at_once` at a time."""
    for start in range(0, count, at_once):
        threads = [
            threading.Thread(target=stall, args=(port, body, seconds)) for _ in range(min(at_once, count - start))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
