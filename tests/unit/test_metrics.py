"""`ferroute.metrics`: one scrape covers every worker of the instance (other processes publishing into a shared
directory, one merging), a dead worker's counters stay and its gauges go, and usage is priced from `[[prices]]`."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferroute.config import ConfigError, PriceConfig, parse_settings
from ferroute.metrics import Metrics
from tests.support.servers import REPO

# A worker: counts what its arguments say, publishes (as its loop's first tick does), says "ready", then either
# waits for its stdin to close (alive) or ends at once without `stop()` (a crash after its last snapshot).
_WORKER = textwrap.dedent("""
    import asyncio, sys
    from ferroute.metrics import Metrics
    directory, requests, in_flight, exit_now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    metrics = Metrics(directory=directory)
    for _ in range(requests):
        metrics.request("up", 200, True)
    metrics.in_flight = in_flight
    metrics.usage("team-a", "gpt-x", (10, 4, 2, 1))
    metrics.counter("ferroute_test_retries_total", "Test.", ("target",)).inc(("m:up",), 3)
    metrics.gauge("ferroute_test_open", "Test.", ("target",), aggregate="max").set(("m:up",), in_flight)
    loop = asyncio.new_event_loop()
    metrics.start(loop)
    print("ready", flush=True)
    if not exit_now:
        sys.stdin.read()
""")


class Worker:
    def __init__(self, directory: Path, requests: int, in_flight: int, *, exit_now: bool = False) -> None:
        args = [sys.executable, "-c", _WORKER, str(directory), str(requests), str(in_flight), "1" if exit_now else "0"]
        self.process = subprocess.Popen(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def end(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.process.kill()
        worker.process.wait(timeout=10)
        for pipe in (worker.process.stdin, worker.process.stdout):
            if pipe is not None:
                pipe.close()


def value(text: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_a_scrape_sums_every_worker_and_keeps_a_dead_ones_counters(tmp_path: Path, workers: list[Worker]) -> None:
    workers.append(Worker(tmp_path, 3, 2))
    workers.append(Worker(tmp_path, 5, 7, exit_now=True))  # published, then gone
    workers[1].process.wait(timeout=10)
    own = Metrics(directory=str(tmp_path))
    own.request("up", 200, True)
    own.in_flight = 1
    own.counter("ferroute_test_retries_total", "Test.", ("target",))
    own.gauge("ferroute_test_open", "Test.", ("target",), aggregate="max").set(("m:up",), 1)

    for _ in range(2):  # the second scrape reads the dead worker from `dead.json`: the same sums
        text = own.render()
        assert value(text, 'ferroute_requests_total{provider="up",status="200",stream="true"}') == 9
        assert value(text, "ferroute_streams_in_flight") == 3  # this one's 1 + the live worker's 2; not the dead's 7
        assert value(text, 'ferroute_usage_tokens_total{key="team-a",model="gpt-x",kind="input"}') == 20
        assert value(text, 'ferroute_usage_tokens_total{key="team-a",model="gpt-x",kind="reasoning"}') == 2
        assert value(text, 'ferroute_test_retries_total{target="m:up"}') == 6
        assert value(text, 'ferroute_test_open{target="m:up"}') == 2  # the highest of the live ones
        assert text.count("# TYPE ferroute_requests_total counter") == 1
    names = sorted(p.name for p in tmp_path.glob("*.json"))  # the dead worker's file is folded into dead.json
    assert len(names) == 2 and names[0] == "dead.json" and names[1].startswith(f"w-{workers[0].process.pid}-")

    workers[0].end()  # a clean stop: its counters stay, its gauges go
    text = own.render()
    assert value(text, 'ferroute_requests_total{provider="up",status="200",stream="true"}') == 9
    assert value(text, "ferroute_streams_in_flight") == 1
    assert value(text, 'ferroute_test_open{target="m:up"}') == 1
    assert [p.name for p in tmp_path.glob("w-*.json")] == []


def test_a_worker_publishes_only_what_changed(tmp_path: Path) -> None:
    metrics = Metrics(directory=str(tmp_path))
    assert metrics.shared is not None
    metrics.shared.open()
    metrics.publish()
    (path,) = tmp_path.glob("w-*.json")
    first = path.stat().st_mtime_ns
    time.sleep(0.01)
    metrics.publish()  # nothing changed: not written again
    assert path.stat().st_mtime_ns == first
    metrics.request("up", 200, False)
    metrics.publish()
    assert '"ferroute_requests_total"' in path.read_text() and '["up","200","false"],1' in path.read_text()


def test_without_a_directory_a_scrape_is_this_process() -> None:
    metrics = Metrics()
    metrics.request("up", 502, False)
    metrics.upstream_error("up", "upstream_error")
    metrics.stream_done("up", time.monotonic() - 0.004, time.monotonic() - 0.002)
    text = metrics.render()
    assert value(text, 'ferroute_requests_total{provider="up",status="502",stream="false"}') == 1
    assert value(text, 'ferroute_upstream_errors_total{provider="up",code="upstream_error"}') == 1
    assert value(text, 'ferroute_stream_duration_seconds_bucket{provider="up",le="0.0025"}') == 0
    assert value(text, 'ferroute_stream_duration_seconds_bucket{provider="up",le="0.005"}') == 1
    assert value(text, 'ferroute_stream_duration_seconds_count{provider="up"}') == 1
    assert value(text, 'ferroute_time_to_first_event_seconds_bucket{provider="up",le="+Inf"}') == 1


def test_a_family_is_defined_once() -> None:
    metrics = Metrics()
    metrics.counter("ferroute_x_total", "X.")
    with pytest.raises(ValueError, match="defined twice"):
        metrics.gauge("ferroute_x_total", "X.")


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.usage('a"b\\c', "m\nx", (1, 0, 0, 0))
    assert 'key="a\\"b\\\\c",model="m\\nx",kind="input"} 1' in metrics.render()


def test_prices_charge_cached_and_reasoning_tokens_at_their_rates_not_on_top() -> None:
    prices = [
        PriceConfig(model="gpt-4o*", input_per_mtok=2.5, output_per_mtok=10, cached_input_per_mtok=1.25),
        PriceConfig(model="*:deep", input_per_mtok=1, output_per_mtok=2, reasoning_per_mtok=4),
    ]
    metrics = Metrics(prices)
    # 1000 input of which 400 cached, 100 output: 600 x 2.5 + 400 x 1.25 + 100 x 10 per million.
    metrics.usage("k", "gpt-4o-mini:openai", (1000, 100, 400, 0), "gpt-4o-mini", "openai")
    # The client's model string matches no entry; the target that served it (`r1:deep`) does. 50 of the 80
    # output tokens are reasoning: 10 x 1 + 30 x 2 + 50 x 4.
    metrics.usage("k", "smart", (10, 80, 0, 50), "r1", "deep")
    metrics.usage("k", "free-model", (10, 80, 0, 0), "other", "local")  # no price: tokens, no cost
    text = metrics.render()
    assert value(text, 'ferroute_usage_cost_usd_total{key="k",model="gpt-4o-mini:openai"}') == pytest.approx(3000e-6)
    assert value(text, 'ferroute_usage_cost_usd_total{key="k",model="smart"}') == pytest.approx(270e-6)
    assert value(text, 'ferroute_usage_cost_usd_total{key="k",model="free-model"}') is None
    assert value(text, 'ferroute_usage_tokens_total{key="k",model="free-model",kind="output"}') == 80


def test_the_price_table_is_validated() -> None:
    settings = parse_settings('[[prices]]\nmodel = "gpt-*"\ninput_per_mtok = 3\noutput_per_mtok = 15\n')
    assert settings.prices[0].input_per_mtok == 3.0
    with pytest.raises(ConfigError, match=r"prices\[0\]\.output_per_mtok: required key missing"):
        parse_settings('[[prices]]\nmodel = "gpt-*"\ninput_per_mtok = 3\n')
    with pytest.raises(ConfigError, match=r"prices\[0\]\.cached_input_per_mtok: Input should be greater"):
        parse_settings('[[prices]]\nmodel = "x"\ninput_per_mtok = 3\noutput_per_mtok = 1\ncached_input_per_mtok = -1\n')
