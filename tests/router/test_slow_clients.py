"""Slow clients and idle connections hold a connection only as long as `[server]` says, while others are served:
a head sent a byte at a time (slowloris), an idle keep-alive connection, a body that stops arriving. A real
`ferroute serve`, raw sockets for the slow client, httpx for the others."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import Server, create_ok, router

LIMIT = 1.0  # seconds: header_read_timeout and body_read_timeout of the router under test


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    config = f"""
[server]
header_read_timeout = {LIMIT}
body_read_timeout = {LIMIT}

[store]
backend = "memory"
"""
    with router(config) as running:
        yield running


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes `sock` (reading whatever it sent first), at most `limit`."""
    began = time.monotonic()
    received = b""
    sock.settimeout(limit)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    except TimeoutError:
        pass
    return time.monotonic() - began, received


def _serve_meanwhile(server: Server, seconds: float) -> list[int]:
    """Statuses of requests made one after another for `seconds` (on another thread)."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            response = client.post(f"{server.url}/v1/responses", json={"model": "m", "input": "hi"})
            statuses.append(response.status_code)
    return statuses


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_header_read_timeout(server: Server) -> None:
    statuses: list[int] = []
    others = threading.Thread(target=lambda: statuses.extend(_serve_meanwhile(server, LIMIT + 0.5)))
    others.start()
    sock = _connect(server)
    head = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 200
    began = time.monotonic()
    sent = 0
    closed = False
    with sock:
        sock.settimeout(0.1)
        while sent < len(head) and time.monotonic() - began < LIMIT * 5:
            try:
                sock.sendall(head[sent : sent + 1])
                sent += 1
            except OSError:
                closed = True
                break
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        took = time.monotonic() - began
    others.join()
    assert closed, f"the slow head was still being read after {took:.1f} s ({sent} bytes)"
    assert LIMIT * 0.8 <= took <= LIMIT + 1.5, took
    assert statuses and set(statuses) == {200}, statuses  # the others were served all along


def test_an_idle_keep_alive_connection_is_closed_at_the_same_timeout(server: Server) -> None:
    sock = _connect(server)
    with sock:
        body = json.dumps({"model": "m", "input": "hi"}).encode()
        request = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(request + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = b""
        sock.settimeout(5)
        while b'"status":"completed"' not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        took, _ = _closed_after(sock, LIMIT + 3)  # nothing more is sent: the connection sits idle
    assert LIMIT * 0.8 <= took <= LIMIT + 1.5, took


def test_a_body_that_stops_arriving_gets_a_408_at_the_body_read_timeout(server: Server) -> None:
    statuses: list[int] = []
    others = threading.Thread(target=lambda: statuses.extend(_serve_meanwhile(server, LIMIT + 0.5)))
    others.start()
    sock = _connect(server)
    with sock:
        head = (
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head + b'{"model": "m", "input": "')  # and then nothing more
        took, answer = _closed_after(sock, LIMIT + 3)
    others.join()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer[:200]
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert LIMIT * 0.8 <= took <= LIMIT + 1.5, took
    assert statuses and set(statuses) == {200}, statuses


def test_a_body_that_arrives_in_time_is_read_whole(server: Server) -> None:
    """A large body over a normal link: its pieces keep coming, and it is read before the limit."""
    response = create_ok(server, {"model": "m", "input": "hi", "instructions": "x" * (8 * 1024 * 1024)})
    assert response["status"] == "completed"
