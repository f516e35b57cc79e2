"""The router's own secrets never leave it: an upstream whose error echoes the key it was sent (split across two
reads) is relayed with the key masked, in the stream, the whole response, the stored response, the log and
`/metrics`, for every upstream dialect."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.grammar import check_stream
from tests.support.servers import Server, router, shared_upstream

CANARY = "sk-canary-9f1d2c3b4a5e6f708192a3b4"  # the upstream key, in the environment only
CLIENT_KEY = "sk-router-canary-client-77aa55"  # a client key of the router's (no upstream sees it)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    upstream = shared_upstream().url
    providers = "".join(
        f'\n[[providers]]\nname = "{name}"\nkind = "{kind}"\nbase_url = "{upstream}/v1"\n'
        'api_key_env = "FERROUTE_CANARY_KEY"\n'
        for name, kind in [("chat", "chat_completions"), ("anth", "anthropic"), ("oai", "responses")]
    )
    config = f'[server]\napi_keys = ["{CLIENT_KEY}"]\n[store]\nbackend = "memory"\n{providers}'
    with router(config, env={"FERROUTE_CANARY_KEY": CANARY}) as running:
        yield running


@pytest.mark.parametrize("provider", ["chat", "anth", "oai"])
def test_an_upstream_error_that_echoes_the_key_reaches_nobody_with_it(server: Server, provider: str) -> None:
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": f"echo_key:{provider}", "input": "hi"}
    seen: list[bytes] = []
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
        with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
            raw = r.read()
        seen.append(raw)
        _, streamed = check_stream(raw)
        assert streamed["status"] == "failed"
        assert "[redacted]" in streamed["error"]["message"]  # (the message stays useful: the rest of it is there)
        assert "invalid credentials" in streamed["error"]["message"]
        whole = client.post("/v1/responses", json=body)
        seen.append(whole.content)
        assert whole.status_code == 502
        assert "[redacted]" in whole.json()["error"]["message"]
        stored = client.get(f"/v1/responses/{streamed['id']}")
        seen.append(stored.content)
        assert stored.json()["status"] == "failed"
        seen.append(httpx.get(f"{server.url}/metrics", timeout=5).content)
    time.sleep(1.2)  # (the access log is written by a thread of its own, at most a second later)
    seen.append(server.log().encode())
    for what in seen:
        assert CANARY.encode() not in what, what[:300]
        assert CANARY[: len(CANARY) // 2].encode() not in what  # (nor the half a split read carried)
        assert CLIENT_KEY.encode() not in what
