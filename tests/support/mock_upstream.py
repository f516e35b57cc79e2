"""A mock Chat Completions, Anthropic Messages and OpenAI Responses server, run as its own process by the end-to-end
tests (stdlib asyncio only).

`POST …/chat/completions`, `POST …/messages` and `POST …/responses` answer according to the upstream model name
the router sends:

- `fixture:<name>` replays `tests/fixtures/chat_completions/<name>.sse` (`…/messages`:
  `tests/fixtures/anthropic/<name>.sse`; `…/responses`: `tests/fixtures/responses/<name>.sse`) byte for byte
  (chunked);
- `json:<name>` answers `application/json` with a `chat.completion` built from that fixture's text
  (`…/messages`, `…/responses`: a whole message / response object with reasoning, text and a tool call,
  as servers that ignore `stream` answer);
- `status:<code>` answers that HTTP status with a JSON error body holding a secret (429 adds
  `Retry-After: 7`), so tests can check nothing of it reaches the client;
- `echo_key` starts a stream and then fails it with an in-stream error (in the dialect of the path) whose
  message and code repeat the key the request carried (`Authorization` / `x-api-key`), sent in two writes that
  split the key;
- `stall` sends the headers and then nothing; `hang` sends nothing at all; `keepalives` sends the headers and
  then only keep-alives, every 0.2 s, forever: `: ping` comments and blank lines (`…/messages`: also Anthropic's
  `ping` events), an upstream that is busy but says nothing;
- anything else: a short generated text stream (in the dialect of the path).

Options follow a `?` in the model name, `&`-separated: `delay=<s>` waits before answering,
`drip=<s>` sleeps between writes, `chunk=<n>` writes n bytes at a time (default: one SSE event per
write), `drop=<n>` closes the connection after n body bytes (a broken chunked body),
`stall_after=<n>` stops sending (but keeps the connection open) after n bytes, `crlf=1` sends CRLF
line ends (as sse-starlette servers do), `pings=<n>` sends n keep-alives first (`: ping` comments;
Anthropic's `ping` events on `…/messages`), `tag=<x>` does nothing but mark the request.

`GET /requests` lists what the server received (`path`, `headers`, `body` as JSON, and `closed_early`
once the client has hung up before the answer ended); `DELETE /requests` clears the list.

Run: `python -m tests.support.mock_upstream [--port N]`; it prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any

_RECORDED = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURES = _RECORDED / "chat_completions"
ANTHROPIC = _RECORDED / "anthropic"
RESPONSES = _RECORDED / "responses"
SECRET = "upstream-secret-detail-7f3a"

received: list[dict[str, Any]] = []


def _options(model: str) -> tuple[str, dict[str, float]]:
    name, _, query = model.partition("?")
    options: dict[str, float] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key != "tag":  # `tag` only makes a request easy to find in /requests
            options[key] = float(value)
    return name, options


def _events(raw: bytes) -> list[bytes]:
    """Split a recorded stream into its events, keeping every byte (CRLF, comments) as recorded."""
    parts = re.split(rb"(\r\n\r\n|\n\n|\r\r)", raw)
    events = [parts[i] + (parts[i + 1] if i + 1 < len(parts) else b"") for i in range(0, len(parts), 2)]
    return [e for e in events if e]


def _generated(model: str) -> bytes:
    out = b""
    for word in ["Hello", " from", " the", " mock", " upstream."]:
        chunk = {"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}  # fmt: skip
        out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
    done = {"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
    usage = {"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}  # fmt: skip
    return (
        out
        + b"data: "
        + json.dumps(done).encode()
        + b"\n\ndata: "
        + json.dumps(usage).encode()
        + b"\n\ndata: [DONE]\n\n"
    )


def _generated_messages(model: str) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_m", "type": "message", "role": "assistant", "model": model,
                                              "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
          for word in ["Hello", " from", " the", " mock", " upstream."]),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


def _generated_responses(model: str) -> bytes:
    item = {"id": "msg_up", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    response = {"id": "resp_up", "object": "response", "status": "in_progress", "model": model, "output": []}
    words = ["Hello", " from", " the", " mock", " upstream."]
    text = "".join(words)
    part = {"type": "output_text", "text": text, "annotations": []}
    done = {**item, "status": "completed", "content": [part]}
    where = {"item_id": "msg_up", "output_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **where, "content_index": 0, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **where, "content_index": 0, "delta": w} for w in words),
        {"type": "response.output_text.done", **where, "content_index": 0, "text": text},
        {"type": "response.content_part.done", **where, "content_index": 0, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": {**response, "status": "completed", "output": [done],
                                                     "usage": {"input_tokens": 5, "output_tokens": 5,
                                                               "total_tokens": 10}}},
    ]  # fmt: skip
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps({**e, "sequence_number": n}).encode())
        for n, e in enumerate(events)
    )


WHOLE_MESSAGE = {
    "id": "msg_whole", "type": "message", "role": "assistant", "model": "claude",
    "content": [{"type": "thinking", "thinking": "Look it up.", "signature": "sig-whole"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_whole", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 8},
}  # fmt: skip
WHOLE_RESPONSE = {
    "id": "resp_whole", "object": "response", "status": "completed", "model": "gpt",
    "output": [{"type": "reasoning", "id": "rs_whole", "summary": [{"type": "summary_text", "text": "Look it up."}],
                "encrypted_content": "blob-whole"},
               {"type": "message", "id": "msg_whole", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
               {"type": "function_call", "id": "fc_whole", "call_id": "call_whole", "name": "get_weather",
                "arguments": "{\"city\": \"Paris\"}", "status": "completed"}],
    "usage": {"input_tokens": 9, "output_tokens": 8, "total_tokens": 17},
}  # fmt: skip


def _completion_body(name: str) -> bytes:
    text = ""
    for line in (FIXTURES / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return json.dumps({
        "id": "chatcmpl-json", "object": "chat.completion", "created": 0, "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }).encode()  # fmt: skip


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


def _head(status: int, headers: dict[str, str]) -> bytes:
    reason = {200: "OK", 429: "Too Many Requests"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_json(
    writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
) -> None:
    headers = {"content-type": "application/json", "content-length": str(len(body)), **(extra or {})}
    writer.write(_head(status, headers) + body)
    await writer.drain()


async def _stream(writer: asyncio.StreamWriter, raw: bytes, options: dict[str, float], record: dict[str, Any]) -> bool:
    """Send `raw` as a chunked SSE body; returns False when the connection must be closed."""
    writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
    size = int(options.get("chunk", 0))
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)] if size else _events(raw)
    drip = options.get("drip", 0.0)
    drop = options.get("drop")
    stall_after = options.get("stall_after")
    sent = 0
    for piece in pieces:
        if drop is not None and sent + len(piece) > drop:
            piece = piece[: int(drop) - sent]
            if piece:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            return False
        if stall_after is not None and sent + len(piece) > stall_after:
            await asyncio.sleep(3600)
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        try:
            await writer.drain()
        except ConnectionError:
            record["closed_early"] = True
            return False
        sent += len(piece)
        if drip:
            await asyncio.sleep(drip)
            if writer.transport.is_closing() or writer.is_closing():
                record["closed_early"] = True
                return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def _watch_close(reader: asyncio.StreamReader, record: dict[str, Any]) -> None:
    """Marks the record when the client closes the connection while the answer is still going.

    It looks without reading: a read here would still be waiting on the reader (cancelled, not yet unwound) when the
    connection's next request is read, which asyncio refuses, and it would eat that request's first byte; either
    broke a kept-alive connection's next request (as a client's tool loop sends it, right after an answer)."""
    while not reader.at_eof() and reader.exception() is None:
        await asyncio.sleep(0.02)
    record["closed_early"] = True


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes,
                  headers: dict[str, str]) -> bool:  # fmt: skip
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    record: dict[str, Any] = {"path": path, "headers": headers, "body": request, "closed_early": False}
    received.append(record)
    model = str((request or {}).get("model", ""))
    name, options = _options(model)
    watcher = asyncio.create_task(_watch_close(reader, record))
    try:
        if options.get("delay"):
            await asyncio.sleep(options["delay"])
        if name.startswith("status:"):
            status = int(name.split(":", 1)[1])
            error = {"error": {"message": f"failure with {SECRET}", "type": "server_error", "code": SECRET}}
            extra = {"retry-after": "7"} if status == 429 else {}
            await _send_json(writer, status, json.dumps(error).encode(), extra)
            return True
        if name == "hang":
            await asyncio.sleep(3600)
        if name == "stall":
            writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
            await writer.drain()
            await asyncio.sleep(3600)
        if name == "echo_key":
            key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
            text = f"invalid credentials: {key} (sent as {headers.get('authorization') or key})"
            if path.endswith("/messages"):
                error = {"type": "error", "error": {"type": "authentication_error", "message": text}}
                start = {"type": "message_start", "message": {"id": "msg_e", "type": "message", "role": "assistant",
                                                              "model": "m", "content": [], "usage": {}}}  # fmt: skip
                raw = b"event: message_start\ndata: %s\n\nevent: error\ndata: %s\n\n" % (
                    json.dumps(start).encode(),
                    json.dumps(error).encode(),
                )
            elif path.endswith("/responses"):
                error = {"type": "error", "code": key, "message": text, "param": None, "sequence_number": 0}
                raw = b"event: error\ndata: %s\n\n" % json.dumps(error).encode()
            else:
                error = {"error": {"message": text, "type": "invalid_request_error", "code": key}}
                raw = b"data: %s\n\n" % json.dumps(error).encode()
            cut = raw.index(key.encode()) + len(key) // 2
            writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
            for piece in (raw[:cut], raw[cut:]):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if name == "keepalives":
            writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
            beats = [b": ping\n\n", b"\n", b": OPENROUTER PROCESSING\n\n"]
            if path.endswith("/messages"):
                beats.append(b'event: ping\ndata: {"type": "ping"}\n\n')
            for k in range(100_000):
                beat = beats[k % len(beats)]
                writer.write(b"%x\r\n%s\r\n" % (len(beat), beat))
                await writer.drain()
                await asyncio.sleep(0.2)
        if name.startswith("json:"):
            if path.endswith(("/messages", "/responses")):
                whole = WHOLE_MESSAGE if path.endswith("/messages") else WHOLE_RESPONSE
                await _send_json(writer, 200, json.dumps(whole).encode())
            else:
                await _send_json(writer, 200, _completion_body(name.split(":", 1)[1]))
            return True
        messages = path.endswith("/messages")
        responses = path.endswith("/responses")
        if name.startswith("fixture:"):
            folder = ANTHROPIC if messages else RESPONSES if responses else FIXTURES
            raw = (folder / f"{name.split(':', 1)[1]}.sse").read_bytes()
        else:
            raw = (_generated_messages if messages else _generated_responses if responses else _generated)(name)
        ping = b'event: ping\ndata: {"type": "ping"}\n\n' if messages else b": ping\n\n"  # (Responses: comments)
        raw = ping * int(options.get("pings", 0)) + raw
        if options.get("crlf"):
            raw = raw.replace(b"\n", b"\r\n")
        return await _stream(writer, raw, options, record)
    finally:
        watcher.cancel()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            parsed = await _read_request(reader)
            if parsed is None:
                break
            method, path, headers, body = parsed
            if path == "/requests":
                if method == "DELETE":
                    received.clear()
                await _send_json(writer, 200, json.dumps(received).encode())
                continue
            if method == "POST" and path.endswith(("/chat/completions", "/messages", "/responses")):
                if not await _answer(reader, writer, path, body, headers):
                    break
                continue
            await _send_json(writer, 404, b'{"error": {"message": "not found"}}')
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
