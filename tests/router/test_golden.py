"""Golden: what a client receives for each recorded upstream stream, byte for byte, through a real `ferroute serve`.

For every fixture of every dialect the router is asked four ways: streamed, streamed with
`include: ["reasoning.encrypted_content"]`, whole (`stream: false`), and `GET` of the streamed response
afterwards (plus its `input_items`). The bytes are compared with `tests/router/golden/<dialect>/<fixture>.txt` after
only what must differ between two runs is replaced: the random part of ids, the clock, and the AES-GCM
nonce of a sealed blob (which is opened with the router's key and shown as its plaintext, so what was
sealed is compared too). Keep-alive comments are dropped (they depend on the machine's speed).

This guards restructurings of the pipeline: any change in what a client sees fails here. Where a change is
meant, regenerate with `FERROUTE_UPDATE_GOLDEN=1 pytest tests/router/test_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferroute.store import ANONYMOUS
from ferroute.store.crypto import ReasoningCipher
from tests.support.fixtures import fixture_files
from tests.support.servers import ROUTER_ENV, Server, router, shared_upstream, upstream_config

GOLDEN = Path(__file__).parent / "golden"
KEY = "golden-test-encryption-key"
UPDATE = os.environ.get("FERROUTE_UPDATE_GOLDEN") == "1"
PROVIDERS = {"chat_completions": "up", "anthropic": "anth", "responses": "oai"}
CASES = [(dialect, path.stem) for dialect in PROVIDERS for path in fixture_files(dialect)]

_ID = re.compile(rb"\b([a-z]+)_([0-9a-f]{12})([0-9a-f]{36})([0-9a-f]{4})?\b")
_CLOCK = re.compile(rb'"(created_at|completed_at)":\d+')
_SEALED = re.compile(rb'"ferroute1\.([A-Za-z0-9_-]+)"')
_PING = b": ping\n\n"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = {**ROUTER_ENV, "FERROUTE_ENCRYPTION_KEY": KEY}
    with router(upstream_config(shared_upstream().url), env=env) as running:
        yield running


def normalize(raw: bytes) -> bytes:
    """`raw` with ids numbered in order of appearance (an item id derived from a response id keeps its index),
    times zeroed, sealed blobs opened, and keep-alives dropped."""
    names: dict[bytes, bytes] = {}

    def name_id(match: re.Match[bytes]) -> bytes:
        kind, _, random, index = match.groups()
        label = names.setdefault(random, b"ID%d" % (len(names) + 1))
        return kind + b"_<" + label + (b":" + index if index else b"") + b">"

    cipher = ReasoningCipher(KEY)

    def opened(match: re.Match[bytes]) -> bytes:
        plain = cipher.open(ANONYMOUS, "ferroute1." + match.group(1).decode())
        return b'"<sealed ' + json.dumps(plain, separators=(",", ":")).encode().replace(b'"', b"'") + b'>"'

    raw = raw.replace(_PING, b"")
    raw = _SEALED.sub(opened, raw)
    raw = _CLOCK.sub(rb'"\1":0', raw)
    return _ID.sub(name_id, raw)


def observe(server: Server, dialect: str, name: str) -> bytes:
    """Everything a client sees for one fixture, as one text of labelled sections."""
    model = f"fixture:{name}:{PROVIDERS[dialect]}"
    body = {"model": model, "input": "What is the weather in Paris?"}
    sections: list[tuple[str, bytes]] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
            streamed = r.read()
            sections.append((f"stream (HTTP {r.status_code}, {r.headers['content-type']})", streamed))
        include = {**body, "stream": True, "include": ["reasoning.encrypted_content"]}
        with client.stream("POST", "/v1/responses", json=include) as r:
            sections.append((f"stream include (HTTP {r.status_code})", r.read()))
        whole = client.post("/v1/responses", json=body)
        sections.append((f"whole (HTTP {whole.status_code}, {whole.headers['content-type']})", whole.content))
        last = [line for line in streamed.split(b"\n") if line.startswith(b"data: {")][-1]
        response_id = json.loads(last[6:])["response"]["id"]
        got = client.get(f"/v1/responses/{response_id}")
        sections.append((f"get (HTTP {got.status_code})", got.content))
        items = client.get(f"/v1/responses/{response_id}/input_items")
        sections.append((f"input_items (HTTP {items.status_code})", items.content))
    text = b"".join(b"### " + label.encode() + b"\n" + normalize(data) + b"\n" for label, data in sections)
    return text


@pytest.mark.parametrize(("dialect", "name"), CASES, ids=[f"{d}/{n}" for d, n in CASES])
def test_client_sees_the_golden_bytes(server: Server, dialect: str, name: str) -> None:
    seen = observe(server, dialect, name)
    path = GOLDEN / dialect / f"{name}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(seen)
    expected = path.read_bytes()
    if seen != expected:  # (the first differing line, rather than pytest's diff of two long byte strings)
        for k, (a, b) in enumerate(zip(seen.split(b"\n"), expected.split(b"\n"), strict=False)):
            if a != b:
                pytest.fail(f"{path.name}, line {k + 1}:\n  got      {a[:2000]!r}\n  expected {b[:2000]!r}")
        pytest.fail(f"{path.name}: {len(seen)} bytes, expected {len(expected)}")


def test_normalize_keeps_what_matters() -> None:
    """Two ids with the same random part stay equal after normalizing, different ones stay different, and the
    item index derived from a response id is kept."""
    a = b"resp_019ad8aaaaaa" + b"1" * 36
    b = b"resp_019ad8aaaaaa" + b"2" * 36
    raw = b'{"id":"' + a + b'","item":"msg_' + a[5:] + b'0003","other":"' + b + b'","created_at":17}'
    assert normalize(raw) == b'{"id":"resp_<ID1>","item":"msg_<ID1:0003>","other":"resp_<ID2>","created_at":0}'
