"""Floor apps: what Granian costs with no ferroute code, for the benches to measure beside the router.

Served by `python -m granian ... bench.floor_app:<name>` from the repository root:

- `asgi`, `rsgi` (`bench/granian_send_cost.py`): each response streams `$FLOOR_SENDS` SSE frames of ~60 bytes,
  one send each, then `data: [DONE]`.
- `nonstream` (`bench/nonstream.py`): reads the body, waits `$FLOOR_LATENCY_MS` (what the mock upstream
  waits) and answers ~1 KB of JSON.
- `websocket` (`bench/websocket.py`): a WebSocket that answers each text message with `$FLOOR_MESSAGES` text
  messages of an event's size, each send awaited (as WebSocket mode sends a response's events), the last one a
  `response.completed`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

SENDS = int(os.environ.get("FLOOR_SENDS", "1000"))
LATENCY = float(os.environ.get("FLOOR_LATENCY_MS", "20")) / 1000
FRAME = b'data: {"type":"response.output_text.delta","delta":"hello"}\n\n'
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = [(b"content-type", b"text/event-stream")]
JSON_HEADERS = [(b"content-type", b"application/json")]
BODY = b'{"object":"response","status":"completed","output":[{"type":"message","text":"' + b"x" * 900 + b'"}]}'


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        done = message["type"].replace("startup", "startup.complete").replace("shutdown", "shutdown.complete")
        await send({"type": done})
        if message["type"] == "lifespan.shutdown":
            return


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for _ in range(SENDS):
        await send({"type": "http.response.body", "body": FRAME, "more_body": True})
    await send({"type": "http.response.body", "body": DONE, "more_body": False})


async def nonstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(LATENCY)
    await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


MESSAGES = int(os.environ.get("FLOOR_MESSAGES", "58"))
EVENT = (
    '{"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_0123456789abcdef0123456789abcdef",'
    '"output_index":0,"content_index":0,"delta":" word","logprobs":[]}'
)
LAST = '{"type":"response.completed","sequence_number":57,"response":{"id":"resp_0","object":"response"}}'


async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    if scope["type"] != "websocket":
        return
    await receive()  # (websocket.connect)
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        for _ in range(MESSAGES - 1):
            await send({"type": "websocket.send", "text": EVENT})
        await send({"type": "websocket.send", "text": LAST})


class RSGI:
    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        await protocol()
        transport = protocol.response_stream(200, [("content-type", "text/event-stream")])
        for _ in range(SENDS):
            await transport.send_bytes(FRAME)
        await transport.send_bytes(DONE)


rsgi = RSGI()
