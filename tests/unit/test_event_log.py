"""The event log of streamed background responses (`ferroute.app.background`): counting events in SSE frames and
cutting a piece at a sequence number."""

from __future__ import annotations

import asyncio

from ferroute.app.background import EventLog, events_in, frames_after
from ferroute.app.clock import PING


def _frame(kind: str, number: int) -> bytes:
    return f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{number},"delta":"a\\n\\nevent: x"}}\n\n'.encode()


def test_events_are_counted_by_their_frames_not_their_text() -> None:
    piece = _frame("response.output_text.delta", 4) + _frame("response.output_text.delta", 5)
    assert events_in(piece) == 2
    assert events_in(piece + b"data: [DONE]\n\n") == 2
    assert events_in(b"data: [DONE]\n\n") == 0


def test_a_piece_is_cut_after_a_sequence_number() -> None:
    piece = b"".join(_frame("e", n) for n in range(3, 7)) + b"data: [DONE]\n\n"
    assert frames_after(3, piece, 2) == piece  # (all of it is after 2)
    assert frames_after(3, piece, 4) == _frame("e", 5) + _frame("e", 6) + b"data: [DONE]\n\n"
    assert frames_after(3, piece, 9) == b"data: [DONE]\n\n"


def test_the_log_numbers_its_pieces_and_wakes_its_followers() -> None:
    async def run() -> None:
        log = EventLog()
        waiting = asyncio.ensure_future(log.wait(5))
        await asyncio.sleep(0)
        log.add(_frame("a", 0) + _frame("b", 1))
        await asyncio.wait_for(waiting, 1)  # (woken at once, not after 5 s)
        log.add(PING)  # (keep-alives are not kept)
        log.add(_frame("c", 2) + b"data: [DONE]\n\n")
        assert [first for first, _ in log.pieces] == [0, 2]
        assert log.next == 3 and log.ended
        log.add(_frame("d", 3))  # (nothing after [DONE])
        assert len(log.pieces) == 2

    asyncio.run(run())
