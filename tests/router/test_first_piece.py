"""A big first upstream read is fed in two (its first events go out before the rest is translated):
the client's stream is the same as when the upstream's bytes arrive one event at a time."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ferroute.app.exchange import FIRST_PIECE
from tests.support.grammar import check_stream
from tests.support.inprocess import TEXT, app_streaming, call


def _normalized(value: Any) -> Any:
    """Ids and timestamps (different in every response) masked."""
    if isinstance(value, dict):
        return {k: "*" if k in ("created_at", "completed_at") else _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, str) and re.fullmatch(r"[a-z]+_[0-9a-f]{16,}", value):
        return "*"
    return value


def test_big_first_read_same_stream() -> None:
    assert len(TEXT) > FIRST_PIECE
    status, whole = asyncio.run(call(app_streaming([TEXT]), {"model": "m", "input": "hi", "stream": True}))
    assert status == 200
    events = TEXT.split(b"\n\n")
    pieces = [event + b"\n\n" for event in events[:-1] if event]
    status, split = asyncio.run(call(app_streaming(list(pieces)), {"model": "m", "input": "hi", "stream": True}))
    assert status == 200
    assert _normalized(check_stream(whole)[0]) == _normalized(check_stream(split)[0])
