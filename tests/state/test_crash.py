"""A crash loses no response: a stored stream is recorded `in_progress` when it is created (readable, with its
input items, from any instance sharing the store, while it runs) and finished at its end; a record whose worker
died (`kill -9`) is reported `failed` (`interrupted`) once its heartbeat is stale, and a chain goes on from it and
from the turns before it. Through real `ferroute serve` processes, per store backend."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.grammar import validate_response
from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    redis_server,
    requests_seen,
    router,
    shared_upstream,
    store_section,
    upstream_config,
)

BEATS = "heartbeat_interval = 0.1\ninterrupted_after = 1.0\n"  # (a response is interrupted 1 s after its last beat)


@contextlib.contextmanager
def _store(backend: str, tmp_path: Path, extra: str) -> Iterator[str]:
    """The `[store]` section of instances sharing one store (memory: one instance's own)."""
    if backend == "redis":
        with redis_server() as redis:
            yield store_section("redis", redis.url, extra)
    elif backend == "sqlite":
        yield store_section("sqlite", None, f'path = "{tmp_path / "shared.sqlite3"}"\n{extra}')
    else:
        yield store_section("memory", None, extra)


def _get(server: Server, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/responses/{path}", timeout=10)


def _open_stream(server: Server, body: dict[str, Any], stack: contextlib.ExitStack) -> tuple[str, Iterator[bytes]]:
    """Start a stream and read up to its first event; returns the response id and the rest of the body."""
    response = stack.enter_context(
        httpx.stream("POST", f"{server.url}/v1/responses", json={**body, "stream": True}, timeout=30)
    )
    assert response.status_code == 200
    chunks = response.iter_raw()
    seen = b""
    while (found := re.search(rb"resp_[0-9a-f]{48}", seen)) is None:
        seen += next(chunks)
    return found.group().decode(), chunks


def _final(raw: bytes) -> dict[str, Any]:
    """The response of a stream's terminal event."""
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    response: dict[str, Any] = events[-1]["response"]
    return response


def _sent(tag: str) -> list[dict[str, Any]]:
    [found] = [r for r in requests_seen(shared_upstream()) if f"tag={tag}" in r["body"]["model"]]
    messages: list[dict[str, Any]] = found["body"]["messages"]
    return messages


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
def test_a_stream_is_stored_when_created_and_readable_while_it_runs(backend: str, tmp_path: Path) -> None:
    """GET and input_items answer while the stream runs (on another instance sharing the store), `in_progress`
    for longer than `interrupted_after` (its worker's heartbeat keeps it alive), and the finished record replaces
    it before `[DONE]`."""
    with contextlib.ExitStack() as stack:
        section = stack.enter_context(_store(backend, tmp_path, BEATS))
        config = upstream_config(shared_upstream().url, section)
        one = stack.enter_context(router(config, env=ROUTER_ENV))
        # (memory: one process's own store, read by that process)
        other = one if backend == "memory" else stack.enter_context(router(config, env=ROUTER_ENV))
        began = time.monotonic()
        rid, rest = _open_stream(one, {"model": "a?drip=0.4:up", "input": "tell me"}, stack)
        got = _get(other, rid)
        assert got.status_code == 200, got.text
        running = got.json()
        validate_response(running)
        assert running["status"] == "in_progress"
        assert running["output"] == [] and running["completed_at"] is None and running["error"] is None
        items = _get(other, f"{rid}/input_items").json()["data"]
        assert [(i["type"], i["role"], i["content"]) for i in items] == [
            ("message", "user", [{"type": "input_text", "text": "tell me"}])
        ]
        # Past `interrupted_after` since it was created: its worker still beats, so it is still running.
        time.sleep(max(0.0, began + 1.5 - time.monotonic()))
        assert _get(other, rid).json()["status"] == "in_progress"
        # It cannot be continued before it has ended (its output is not known yet).
        early = create(other, {"model": "m:mock", "input": "next", "previous_response_id": rid})
        assert early.status_code == 400, early.text
        assert early.json()["error"]["param"] == "previous_response_id"
        assert early.json()["error"]["code"] == "previous_response_in_progress"
        final = _final(b"".join(rest))
        assert final["status"] == "completed"
        # Written before `[DONE]`: read at once, from either instance, it is the stream's final response.
        assert _get(other, rid).json() == final
        assert _get(one, rid).json() == final
        time.sleep(1.5)  # (no heartbeat after the end: a finished record is never reported interrupted)
        assert _get(other, rid).json() == final
        follow = create_ok(other, {"model": "m:mock", "input": "next", "previous_response_id": rid})
        assert follow["status"] == "completed"


def _workers(pid: int) -> list[int]:
    """The child processes of `pid` (Granian's workers)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry))
    return children


def _crash(server: Server) -> None:
    """`kill -9` the instance's worker (mid-stream), then the rest of it."""
    workers = _workers(server.process.pid)
    assert workers, "no worker process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_worker_killed_mid_stream_leaves_a_failed_record_and_the_chain_goes_on(backend: str, tmp_path: Path) -> None:
    extra = "heartbeat_interval = 0.2\ninterrupted_after = 2.5\n"
    tag = f"k{time.monotonic_ns()}"
    with contextlib.ExitStack() as stack:
        section = stack.enter_context(_store(backend, tmp_path, extra))
        config = upstream_config(shared_upstream().url, section)
        doomed = stack.enter_context(router(config, env=ROUTER_ENV))
        other = stack.enter_context(router(config, env=ROUTER_ENV))
        first = create_ok(doomed, {"model": f"a?tag={tag}-1:up", "input": "turn one"})
        first_bytes = _get(other, first["id"]).content
        body = {"model": f"a?drip=0.5&tag={tag}-2:up", "input": "turn two", "previous_response_id": first["id"]}
        with contextlib.ExitStack() as streaming:
            rid, _ = _open_stream(doomed, body, streaming)
            assert _get(other, rid).json()["status"] == "in_progress"
            _crash(doomed)
        killed = time.monotonic()
        # Still `in_progress` until its heartbeat is `interrupted_after` old; then `failed`, never a 500.
        seen = []
        while time.monotonic() - killed < 10:
            got = _get(other, rid)
            assert got.status_code == 200, got.text
            seen.append((round(time.monotonic() - killed, 2), got.json()["status"]))
            if seen[-1][1] != "in_progress":
                break
            time.sleep(0.1)
        assert seen[0][1] == "in_progress"
        assert seen[-1][1] == "failed", seen
        assert 1.5 < seen[-1][0] < 5, seen
        failed = got.json()
        validate_response(failed)
        assert failed["error"]["code"] == "interrupted"
        assert failed["completed_at"] is None
        assert failed["previous_response_id"] == first["id"]
        # A restart (a new process on the same store) reads the same record.
        restarted = stack.enter_context(router(config, env=ROUTER_ENV))
        assert _get(restarted, rid).content == got.content
        items = _get(restarted, f"{rid}/input_items").json()["data"]
        assert [i["content"][0]["text"] for i in items] == ["turn two"]
        # The chain goes on: from the interrupted response (its stored items), and from the turn before it, which
        # is byte for byte what it was.
        follow = create_ok(
            restarted, {"model": f"b?tag={tag}-3:up", "input": "turn three", "previous_response_id": rid}
        )
        assert follow["status"] == "completed"
        assert _sent(f"{tag}-3") == [
            {"role": "user", "content": "turn one"},
            {"role": "assistant", "content": first["output"][0]["content"][0]["text"]},
            {"role": "user", "content": "turn two"},
            {"role": "user", "content": "turn three"},
        ]
        assert _get(restarted, first["id"]).content == first_bytes
        again = create_ok(
            restarted, {"model": f"c?tag={tag}-4:up", "input": "retry", "previous_response_id": first["id"]}
        )
        assert again["status"] == "completed"
        assert _sent(f"{tag}-4")[-1] == {"role": "user", "content": "retry"}


def test_a_background_response_whose_worker_died_is_failed_and_its_cancel_says_so(tmp_path: Path) -> None:
    extra = "heartbeat_interval = 0.2\ninterrupted_after = 1.5\nbackground_interval = 0.1\n"
    with contextlib.ExitStack() as stack:
        section = stack.enter_context(_store("redis", tmp_path, extra))
        config = upstream_config(shared_upstream().url, section)
        doomed = stack.enter_context(router(config, env=ROUTER_ENV))
        other = stack.enter_context(router(config, env=ROUTER_ENV))
        queued = create_ok(doomed, {"model": "slower?drip=0.5:up", "input": "hi", "background": True})
        rid = queued["id"]
        deadline = time.monotonic() + 5
        while _get(other, rid).json()["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # (a progress write with some output in it)
        _crash(doomed)
        assert _get(other, rid).json()["status"] == "in_progress"
        deadline = time.monotonic() + 6
        while (status := _get(other, rid).json()["status"]) == "in_progress" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == "failed"
        began = time.monotonic()
        cancel = httpx.post(f"{other.url}/v1/responses/{rid}/cancel", timeout=10)
        assert time.monotonic() - began < 2  # (no waiting for a worker that is gone)
        assert cancel.status_code == 200, cancel.text
        answer = cancel.json()
        validate_response(answer)
        assert answer["status"] == "failed" and answer["error"]["code"] == "interrupted"
        assert all(item["status"] != "in_progress" for item in answer["output"])
