"""`/metrics` of a `ferroute serve --workers 2`: whichever worker a scrape reaches, it counts every worker's requests
(also across a reload that replaces the workers), and the tokens and cost of responses by key name and model,
from recorded upstream streams with known usage."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from ferroute.metrics import PUBLISH_EVERY
from tests.support.servers import (
    ROUTER_ENV,
    ROUTER_KEY,
    Server,
    create_ok,
    router,
    shared_upstream,
    stream,
    upstream_config,
)

# Usage in the recorded streams: input, output, cached, reasoning.
TEXT = "fixture:openai-gpt-4o-mini-text-usage:up"  # 78, 9, 0, 0
REASONING = "fixture:deepseek-reasoner-reasoning-content:up"  # 6, 212, 0, 198
SLOW_TEXT = "fixture:openai-gpt-4o-mini-text-usage?delay=0.05:up"  # (so that requests overlap)
AUTH = {"Authorization": f"Bearer {ROUTER_KEY}"}

CONFIG_EXTRA = f"""api_keys = ["{ROUTER_KEY}"]

[[prices]]
model = "fixture:openai-*"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[prices]]
model = "*:up"
input_per_mtok = 0.5
output_per_mtok = 4.0
reasoning_per_mtok = 10.0
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with router(
        upstream_config(shared_upstream().url, CONFIG_EXTRA), env=ROUTER_ENV, extra_args=["--workers", "2"]
    ) as server:
        yield server


def scrape(server: Server) -> str:
    with httpx.Client() as client:  # (a connection of its own: any worker may answer)
        return client.get(f"{server.url}/metrics", timeout=10).text


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def settle(server: Server, ready: Callable[[str], bool]) -> str:
    """A scrape once `ready` holds: other workers publish their counts within a fraction of a second."""
    deadline = time.monotonic() + 10
    while True:
        text = scrape(server)
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def requests_total(text: str) -> float:
    return sum(float(n) for n in re.findall(r'^ferroute_requests_total\{provider="up",[^}]*\} (\S+)$', text, re.M))


def one(server: Server, model: str, streamed: bool) -> None:
    body: dict[str, Any] = {"model": model, "input": "hi"}
    if streamed:
        stream(server, body, headers=AUTH)
    else:
        create_ok(server, body, headers=AUTH)


def test_a_scrape_counts_every_worker_and_a_reload_loses_nothing(server: Server) -> None:
    before = requests_total(scrape(server))
    n = 24
    # Concurrent connections, so that both workers take some.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: one(server, SLOW_TEXT, i % 2 == 0), range(n)))
    text = settle(server, lambda t: requests_total(t) >= before + n)
    assert requests_total(text) == before + n
    # (The worker that answered counts its own live; the other's counts are as of its last snapshot, at most
    # PUBLISH_EVERY old: once both have published since their last request, every scrape gives the same sum.)
    time.sleep(3 * PUBLISH_EVERY)
    for _ in range(6):  # whichever worker answers, the same sums
        assert requests_total(scrape(server)) == before + n

    # SIGHUP: Granian starts new workers and stops the old ones (their counters stay, counted once).
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while "Stopped old worker-2" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Stopped old worker-2" in server.log()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: one(server, SLOW_TEXT, False), range(4)))
    text = settle(server, lambda t: requests_total(t) >= before + n + 4)
    assert requests_total(text) == before + n + 4


def test_usage_and_cost_by_key_and_model(server: Server) -> None:
    text = scrape(server)
    tokens = 'ferroute_usage_tokens_total{{key="default",model="{}",kind="{}"}}'
    cost = 'ferroute_usage_cost_usd_total{{key="default",model="{}"}}'
    counted = {(model, kind): value(text, tokens.format(model, kind)) for model in (TEXT, REASONING)
               for kind in ("input", "output", "reasoning", "cached")}  # fmt: skip
    spent = {model: value(text, cost.format(model)) for model in (TEXT, REASONING)}
    for i in range(3):
        one(server, TEXT, i == 0)
        one(server, REASONING, i == 0)
    # A background response: counted where it ends.
    queued = create_ok(server, {"model": REASONING, "input": "hi", "background": True}, headers=AUTH)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = httpx.get(f"{server.url}/v1/responses/{queued['id']}", headers=AUTH, timeout=10).json()
        if got["status"] == "completed":
            break
        time.sleep(0.05)
    expected = {
        (TEXT, "input"): 3 * 78,
        (TEXT, "output"): 3 * 9,
        (TEXT, "reasoning"): 0,
        (TEXT, "cached"): 0,
        (REASONING, "input"): 4 * 6,
        (REASONING, "output"): 4 * 212,
        (REASONING, "reasoning"): 4 * 198,
        (REASONING, "cached"): 0,
    }
    text = settle(
        server, lambda t: all(value(t, tokens.format(*k)) >= counted[k] + more for k, more in expected.items())
    )
    for (model, kind), more in expected.items():
        assert value(text, tokens.format(model, kind)) == counted[(model, kind)] + more, (model, kind)
    # TEXT: the first entry (78 x 1 + 9 x 2 per million). REASONING: the second, its reasoning at its own rate,
    # not on top of the output rate: 6 x 0.5 + (212 - 198) x 4 + 198 x 10.
    assert value(text, cost.format(TEXT)) - spent[TEXT] == pytest.approx(3 * 96e-6)
    assert value(text, cost.format(REASONING)) - spent[REASONING] == pytest.approx(4 * 2039e-6)
    assert "sk-" not in text  # the key's name, never the key


def test_anonymous_requests_have_an_empty_key_name() -> None:
    with router(upstream_config(shared_upstream().url), env=ROUTER_ENV) as server:
        create_ok(server, {"model": TEXT, "input": "hi"})
        text = scrape(server)
    assert value(text, f'ferroute_usage_tokens_total{{key="",model="{TEXT}",kind="input"}}') == 78
    assert "ferroute_usage_cost_usd_total{" not in text  # no price table
