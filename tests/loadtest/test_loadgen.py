"""The Rust load generator (`ferroute._core.LoadGenerator`, `ferroute bench load|sweep`): short runs
against the Rust mock upstream and `ferroute serve`, and broken servers counted as errors."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ferroute
from ferroute._core import LoadGenerator, MockUpstream
from ferroute.loadtest import report
from ferroute.loadtest.load import request_body, run_load
from tests.support.fixtures import FIXTURES
from tests.support.servers import REPO, Server, shared_plain

KEYS = {
    "url", "stream", "grammar_checked", "mode", "concurrency", "rate", "duration_s", "warmup_s", "requests", "ok",
    "errors", "errors_by_kind", "error_examples", "requests_per_s", "events", "events_per_s", "bytes", "bytes_per_s",
    "ttfe_ms", "gap_ms", "latency_ms", "late_starts", "client_cpu_s", "client_cpu_percent", "client_cpu_us_per_event",
}  # fmt: skip
PERCENTILE_KEYS = {"count", "p50", "p90", "p99", "max", "mean"}
BODY = request_body("ferroute-mock:mock", stream=True)


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream(tokens=10, gap_ms=0.5) as server:
        yield server


def test_concurrency_run_against_the_mock_upstream(mock: MockUpstream) -> None:
    result = run_load(f"{mock.url}/v1/responses", BODY, concurrency=4, duration=1.0, warmup=0.2, require_done=False)
    assert set(result) == KEYS
    assert set(result["ttfe_ms"]) == set(result["gap_ms"]) == PERCENTILE_KEYS
    assert result["errors"] == 0, result["errors_by_kind"]
    assert result["ok"] > 50
    assert result["events"] == result["ok"] * mock.events_per_stream("responses")
    assert 0.9 < result["duration_s"] < 1.5
    assert result["ttfe_ms"]["p50"] <= result["ttfe_ms"]["p99"] <= result["ttfe_ms"]["max"]
    # 9 gaps of 0.5 ms per stream (events in one read arrive together: gaps of 0 between them).
    assert 0.3 < result["gap_ms"]["p99"] < 50
    assert result["client_cpu_s"] > 0


def test_rate_run_starts_requests_on_schedule(mock: MockUpstream) -> None:
    result = run_load(f"{mock.url}/v1/responses", BODY, rate=100, duration=1.0, require_done=False)
    assert result["mode"] == "rate" and result["rate"] == 100
    assert result["errors"] == 0, result["errors_by_kind"]
    assert 90 <= result["ok"] <= 101


def test_open_model_does_not_hide_a_slow_server() -> None:
    # Each answer takes ~100 ms; at 50 requests/s the open model keeps ~5 in flight instead of waiting.
    with MockUpstream(tokens=5, ttft_ms=100) as slow:
        result = run_load(f"{slow.url}/v1/responses", BODY, rate=50, duration=0.6, require_done=False)
    assert result["errors"] == 0
    assert result["ok"] >= 28
    assert 95 < result["ttfe_ms"]["p50"] < 200


def test_non_streaming_requests(mock: MockUpstream) -> None:
    body = request_body("m", stream=False)
    result = run_load(f"{mock.url}/v1/responses", body, stream=False, concurrency=2, requests=30)
    assert result["ok"] == 30 and result["errors"] == 0
    assert result["events"] == 0 and result["ttfe_ms"]["count"] == 30
    # Unchecked, a body of another kind (a chat.completion) counts; checked, it is a grammar error.
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    url = f"{mock.url}/v1/chat/completions"
    result = run_load(url, chat, stream=False, concurrency=2, requests=10, check_grammar=False)
    assert result["ok"] == 10 and result["errors"] == 0, result["error_examples"]
    result = run_load(url, chat, stream=False, concurrency=2, requests=10)
    assert result["errors_by_kind"] == {"grammar": 10}


def test_missing_done_counts_unless_not_required(mock: MockUpstream) -> None:
    # OpenAI's Responses API (which the mock imitates) sends no [DONE]; Open Responses servers do.
    result = run_load(f"{mock.url}/v1/responses", BODY, concurrency=2, requests=10)
    assert result["errors_by_kind"] == {"no_done": 10}
    assert result["ok"] == 0


def test_injected_failures_are_counted_by_kind() -> None:
    with MockUpstream(tokens=4, error_rate=0.5, error_kind="status:503", seed=3) as flaky:
        result = run_load(f"{flaky.url}/v1/responses", BODY, concurrency=2, requests=100, require_done=False)
    assert set(result["errors_by_kind"]) == {"status_503"}
    assert 30 <= result["errors"] <= 70
    assert result["ok"] + result["errors"] == 100
    with MockUpstream(tokens=4, error_rate=1.0, error_kind="stall") as stalling:
        result = run_load(f"{stalling.url}/v1/responses", BODY, concurrency=2, requests=2, timeout=0.3)
    assert result["errors_by_kind"] == {"timeout": 2}


def test_against_ferroute_serve() -> None:
    server: Server = shared_plain()
    result = run_load(f"{server.url}/v1/responses", BODY, concurrency=4, duration=1.0)
    assert result["errors"] == 0, (result["errors_by_kind"], result["error_examples"])
    assert result["ok"] > 5
    assert result["events"] > result["ok"] * 5
    body = request_body("ferroute-mock:mock", stream=False)
    result = run_load(f"{server.url}/v1/responses", body, stream=False, concurrency=2, requests=10)
    assert result["ok"] == 10, result["error_examples"]


def _valid_stream() -> bytes:
    translator = ferroute.ChatCompletionsTranslator({"model": "m"})
    upstream = (FIXTURES / "chat_completions" / "openai-gpt-4o-mini-text-usage.sse").read_bytes()
    return translator.feed(upstream) + translator.finish()


def _read_request(rfile: Any) -> bool:
    """One request's head and body off a test server's connection; False when the client closed it instead."""
    length = 0
    while (line := rfile.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    rfile.read(length)
    return bool(line)


@contextlib.contextmanager
def _serving(handler: type[socketserver.StreamRequestHandler]) -> Iterator[str]:
    """`handler` served on a free local port (a thread per connection); yields the `/v1/responses` URL."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/v1/responses"
        finally:
            server.shutdown()
            thread.join(5)


@contextlib.contextmanager
def tiny_server(body: Callable[[], bytes]) -> Iterator[str]:
    """An HTTP/1.1 server answering every request with `body()` as a close-delimited event stream."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            _read_request(self.rfile)
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            self.wfile.write(body())

    with _serving(Handler) as url:
        yield url


def test_a_fast_but_broken_server_does_not_score() -> None:
    good = _valid_stream()
    with tiny_server(lambda: good) as url:
        assert run_load(url, BODY, concurrency=2, requests=10)["ok"] == 10
    # A gap in the sequence numbers.
    broken = good.replace(b'"sequence_number":3', b'"sequence_number":4', 1)
    assert broken != good
    with tiny_server(lambda: broken) as url:
        result = run_load(url, BODY, concurrency=2, requests=10)
    assert result["ok"] == 0
    assert result["errors_by_kind"] == {"grammar": 10}
    assert "sequence_number" in result["error_examples"]["grammar"]
    # Unchecked, the same stream only has its events counted.
    with tiny_server(lambda: broken) as url:
        result = run_load(url, BODY, concurrency=1, requests=3, check_grammar=False)
    assert result["ok"] == 3 and not result["grammar_checked"]
    assert result["events"] == 3 * (good.count(b"\n\n") - 1)
    # No terminal event.
    cut = good[: good.index(b"event: response.completed")]
    with tiny_server(lambda: cut) as url:
        result = run_load(url, BODY, concurrency=1, requests=3)
    assert result["errors_by_kind"] == {"grammar": 3}


@contextlib.contextmanager
def chunked_server(framing: Callable[[bytes], list[bytes]]) -> Iterator[str]:
    """A keep-alive HTTP/1.1 server answering every request with a valid event stream in chunked framing: the
    writes `framing(stream)` returns, each its own `write`."""
    stream = _valid_stream()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while _read_request(self.rfile):
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                for piece in framing(stream):
                    self.wfile.write(piece)
                    self.wfile.flush()

    with _serving(Handler) as url:
        yield url


def _chunks(data: bytes, size: int, *, extension: bytes = b"") -> bytes:
    out = b"".join(
        b"%x%s\r\n%s\r\n" % (len(data[i : i + size]), extension, data[i : i + size]) for i in range(0, len(data), size)
    )
    return out + b"0\r\n\r\n"


def test_chunked_bodies_in_any_split_on_a_reused_connection() -> None:
    """The load generator's reader is the router's chunked decoder: tiny chunks, extensions, writes that cut
    size lines and payloads anywhere; several answers on one keep-alive connection."""

    def tiny_writes(stream: bytes) -> list[bytes]:
        framed = _chunks(stream, 7, extension=b";x=1")
        return [framed[i : i + 5] for i in range(0, len(framed), 5)]

    for framing in (lambda stream: [_chunks(stream, 1000)], tiny_writes):
        with chunked_server(framing) as url:
            result = run_load(url, BODY, concurrency=1, requests=4)
        assert result["ok"] == 4, result["error_examples"]
        assert result["events"] == 4 * (_valid_stream().count(b"\n\n") - 1)
    # Malformed framing is an HTTP error, not a hang or a crash.
    with chunked_server(lambda stream: [b"zz\r\n" + stream]) as url:
        result = run_load(url, BODY, concurrency=1, requests=2, timeout=5)
    assert result["errors_by_kind"] == {"http": 2}
    assert "chunked body" in result["error_examples"]["http"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LoadGenerator("http://127.0.0.1:1", b"{}", concurrency=1, rate=2, duration=1)
    with pytest.raises(ValueError, match="http://"):
        LoadGenerator("https://127.0.0.1:1", b"{}", concurrency=1, duration=1)
    with pytest.raises(ValueError, match="duration or a request count"):
        LoadGenerator("http://127.0.0.1:1", b"{}", concurrency=1)


def test_connection_refused_is_an_error() -> None:
    with MockUpstream() as server:
        url = f"{server.url}/v1/responses"
    result = run_load(url, BODY, concurrency=1, requests=3)
    assert result["errors_by_kind"] == {"connect": 3}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferroute.loadtest.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_cli_load_writes_json_html_and_a_table(mock: MockUpstream, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    result = _cli(
        "bench", "load", "--url", mock.url, "--no-require-done", "--concurrency", "2", "--duration", "0.5",
        "--json", str(out), "--html", str(tmp_path / "load.html"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "events/s" in result.stdout and "first event" in result.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    assert set(data) == KEYS and data["ok"] > 0
    assert (tmp_path / "load.html").read_text().startswith("<!doctype html>")


def test_cli_load_exits_1_on_errors(mock: MockUpstream) -> None:
    result = _cli("bench", "load", "--url", mock.url, "--requests", "3", "--quiet")
    assert result.returncode == 1
    assert "no_done 3" in result.stdout


def test_cli_sweep_with_plots(mock: MockUpstream, tmp_path: Path) -> None:
    args = ["bench", "sweep", "--url", mock.url, "--no-require-done", "--concurrency", "1,4", "--duration", "0.4"]
    args += ["--json", str(tmp_path / "s.json"), "--html", str(tmp_path / "s.html"), "--quiet"]
    if report.matplotlib_missing() is None:
        args += ["--png", str(tmp_path / "s.png")]
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["x"] == "concurrency" and [r["concurrency"] for r in data["runs"]] == [1, 4]
    assert result.stdout.count("\n") >= 3
    assert "<svg" in (tmp_path / "s.html").read_text()
    if report.matplotlib_missing() is None:
        assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


def test_cli_png_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "needs matplotlib" in (report.matplotlib_missing() or "")
