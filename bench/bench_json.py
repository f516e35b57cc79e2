"""Streamed function-call arguments, `value()` after every fragment: `ferroute.JsonStream` (state kept across
fragments, live objects updated in place) vs re-parsing the whole prefix each time with jiter's partial mode,
the way the openai SDK accumulates tool-call arguments. The re-parse is O(n²) over a stream; JsonStream is
O(n), so the gap grows with size.

    make develop && .venv/bin/pytest bench/bench_json.py --benchmark-enable --benchmark-only

Each case also asserts its final value, so under the default `--benchmark-disable` it runs once as a test."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import jiter
import pytest

import ferroute

# (document size in bytes, fragments): ~10 bytes a fragment, as models stream arguments.
SIZES = [(2_000, 200), (20_000, 2_000), (200_000, 20_000)]


def records(size: int) -> str:
    """Arguments with structure: an array of small objects (keys, short strings, numbers, nested lists)."""
    rng = random.Random(size)
    rows: list[dict[str, Any]] = []
    total = 0
    while total < size:
        n = len(rows)
        rows.append(
            {
                "id": n,
                "name": f"item {n} — “quoted” ✓",
                "score": round(rng.uniform(0, 100), 3),
                "active": n % 3 == 0,
                "tags": [rng.choice(["a", "bb", "ccc", "dddd"]) for _ in range(n % 4)],
                "note": None,
            }
        )
        total += len(json.dumps(rows[-1], ensure_ascii=False)) + 2
    return json.dumps({"table": "items", "rows": rows}, ensure_ascii=False)


def text(size: int) -> str:
    """Arguments that are mostly one long string (a `write_file` call): code with escapes."""
    line = 'def f(x):\n    return "value\\t%d" % x  # ünïcode ✓\n'
    content = (line * (size // len(line) + 1))[:size]
    return json.dumps({"path": "src/module.py", "content": content, "overwrite": True}, ensure_ascii=False)


SHAPES: dict[str, Callable[[int], str]] = {"records": records, "text": text}


def fragments(doc: str, n: int) -> list[str]:
    rng = random.Random(n)
    cuts = sorted(rng.sample(range(1, len(doc)), n - 1))
    return [doc[a:b] for a, b in zip([0, *cuts], [*cuts, len(doc)], strict=True)]


def ferroute_stream(pieces: list[str]) -> Any:
    stream = ferroute.JsonStream()
    value = None
    for piece in pieces:
        stream.feed(piece)
        value = stream.value()
    return value


def jiter_reparse(pieces: list[str]) -> Any:
    arguments = ""
    value = None
    for piece in pieces:
        arguments += piece
        value = jiter.from_json(arguments.encode(), partial_mode="trailing-strings")
    return value


IMPLEMENTATIONS: dict[str, Callable[[list[str]], Any]] = {"ferroute": ferroute_stream, "jiter-reparse": jiter_reparse}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("size", "n"), SIZES, ids=[f"{s // 1000}KB-{n}" for s, n in SIZES])
def test_streamed_arguments(benchmark: Any, impl: str, shape: str, size: int, n: int) -> None:
    if benchmark.disabled and impl == "jiter-reparse" and size > 20_000:
        pytest.skip("quadratic: half a minute untimed; runs with --benchmark-enable")
    doc = SHAPES[shape](size)
    pieces = fragments(doc, n)
    benchmark.group = f"json {shape} {size // 1000}KB/{n}"
    benchmark.extra_info.update(bytes=len(doc.encode()), fragments=n)
    # Fixed rounds: the 200 KB re-parse takes ~30 s a round.
    slow = impl == "jiter-reparse" and size > 2_000
    rounds = (2 if size > 20_000 else 10) if slow else 20
    warmup = 0 if slow else 1
    value = benchmark.pedantic(IMPLEMENTATIONS[impl], args=(pieces,), rounds=rounds, iterations=1, warmup_rounds=warmup)
    assert value == json.loads(doc)
