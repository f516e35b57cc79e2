"""Translate a Chat Completions stream into Open Responses SSE: ferroute's Rust translator vs the same work in
Python (split on blank lines + orjson.loads + build each event dict + orjson.dumps + frame).

    make develop && .venv/bin/pytest bench/bench_translate.py --benchmark-enable --benchmark-only

Each case also asserts its output, so under the default `--benchmark-disable` it runs once as a test."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import ferroute
from bench.chat_stream import STREAMS, reads

N = 10_000


class PythonTranslator:
    """The hot path of a Chat Completions → Open Responses bridge written in Python, kept to what the
    benchmark streams need (reasoning and content deltas, finish, usage): less than the Rust translator does."""

    def __init__(self) -> None:
        self.buffer = b""
        self.seq = 0
        self.item: dict[str, Any] | None = None
        self.items: list[dict[str, Any]] = []
        self.text: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.response = {"id": "resp_" + os.urandom(24).hex(), "object": "response", "status": "in_progress"}

    def _event(self, out: list[bytes], event: dict[str, Any]) -> None:
        event["sequence_number"] = self.seq
        self.seq += 1
        out.append(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")

    def _close(self, out: list[bytes]) -> None:
        if self.item is None:
            return
        text = "".join(self.text)
        kind = self.item["type"]
        part = (
            {"type": "output_text", "text": text, "annotations": []}
            if kind == "message"
            else {"type": "reasoning_text", "text": text}
        )
        loc = {"item_id": self.item["id"], "output_index": len(self.items), "content_index": 0}
        done = "response.output_text.done" if kind == "message" else "response.reasoning.done"
        self._event(out, {"type": done, **loc, "text": text})
        self._event(out, {"type": "response.content_part.done", **loc, "part": part})
        item = {**self.item, "status": "completed", "content": [part]}
        self._event(out, {"type": "response.output_item.done", "output_index": len(self.items), "item": item})
        self.items.append(item)
        self.item, self.text = None, []

    def _delta(self, out: list[bytes], kind: str, delta: str) -> None:
        if self.item is None or self.item["type"] != kind:
            self._close(out)
            prefix = "msg_" if kind == "message" else "rs_"
            self.item = {"id": prefix + os.urandom(24).hex(), "type": kind, "status": "in_progress", "content": []}
            if kind == "message":
                self.item["role"] = "assistant"
            index = len(self.items)
            self._event(out, {"type": "response.output_item.added", "output_index": index, "item": self.item})
            part = (
                {"type": "output_text", "text": "", "annotations": []}
                if kind == "message"
                else {"type": "reasoning_text", "text": ""}
            )
            self._event(
                out,
                {
                    "type": "response.content_part.added",
                    "item_id": self.item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": part,
                },
            )
        ty = "response.output_text.delta" if kind == "message" else "response.reasoning.delta"
        self._event(
            out,
            {
                "type": ty,
                "item_id": self.item["id"],
                "output_index": len(self.items),
                "content_index": 0,
                "delta": delta,
            },
        )
        self.text.append(delta)

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if self.seq == 0:
            self._event(out, {"type": "response.created", "response": self.response})
            self._event(out, {"type": "response.in_progress", "response": self.response})
        *frames, self.buffer = (self.buffer + data).split(b"\n\n")
        for frame in frames:
            if not frame.startswith(b"data: "):
                continue
            payload = frame[6:]
            if payload == b"[DONE]":
                self._close(out)
                response = {**self.response, "status": "completed", "output": self.items, "usage": self.usage}
                self._event(out, {"type": "response.completed", "response": response})
                out.append(b"data: [DONE]\n\n")
                continue
            chunk = orjson.loads(payload)
            if chunk.get("usage"):
                self.usage = chunk["usage"]
            for choice in chunk["choices"]:
                delta = choice["delta"]
                if reasoning := delta.get("reasoning_content"):
                    self._delta(out, "reasoning", reasoning)
                if content := delta.get("content"):
                    self._delta(out, "message", content)
        return b"".join(out)


def run_ferroute(chunks: list[bytes]) -> bytes:
    t = ferroute.ChatCompletionsTranslator()
    return b"".join([t.feed(c) for c in chunks]) + t.finish()


def run_python(chunks: list[bytes]) -> bytes:
    t = PythonTranslator()
    return b"".join([t.feed(c) for c in chunks])


IMPLEMENTATIONS: dict[str, Callable[[list[bytes]], bytes]] = {"ferroute": run_ferroute, "python-orjson": run_python}


@pytest.mark.parametrize("read_size", [None, 4096], ids=["whole", "4KiB"])
@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
def test_translate(benchmark: Any, implementation: str, stream: str, read_size: int | None) -> None:
    chunks = reads(STREAMS[stream](N), read_size)
    run = IMPLEMENTATIONS[implementation]
    benchmark.group = f"translate {stream} {'whole' if read_size is None else '4KiB reads'}"
    benchmark.extra_info["upstream_events"] = N
    out = benchmark(run, chunks)
    assert out.endswith(b"data: [DONE]\n\n")
    deltas = out.count(b"event: response.output_text.delta\n") + out.count(b"event: response.reasoning.delta\n")
    assert deltas == N
    last = orjson.loads(out.rsplit(b"event: response.completed\ndata: ", 1)[1].split(b"\n", 1)[0])
    assert last["response"]["status"] == "completed"
    assert sum(len(item["content"][0]["text"]) for item in last["response"]["output"]) > N
