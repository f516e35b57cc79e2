"""`ferroute.SSEDecoder`, `SSEEvent`, `encode_sse` and `SSEError`, end to end through the native module."""

from __future__ import annotations

import codecs
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

import ferroute
from ferroute import SSEDecoder, SSEError, SSEEvent, encode_sse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("*/*.sse"))

# (event, data, id, retry): what an SSEEvent holds, in a form the expectations can spell out.
Ev = tuple[str | None, str, str | None, int | None]


def ev(data: str, event: str | None = None, id: str | None = None, retry: int | None = None) -> Ev:
    return (event, data, id, retry)


def as_tuples(events: Iterable[SSEEvent]) -> list[Ev]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


# --- an independent reference: the WHATWG algorithm, literally, over the whole stream -------------

_LINE_END = re.compile(r"\r\n|\r|\n")


def reference_decode(stream: bytes) -> list[Ev]:
    """https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation"""
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(stream.removeprefix(codecs.BOM_UTF8), final=True)
    pieces = _LINE_END.split(text)
    lines = pieces[:-1]  # the text after the last line end never ended: discarded at EOF
    events: list[Ev] = []
    data, event_type, last_id, retry = "", "", None, None
    for line in lines:
        if line == "":
            if data:
                events.append((event_type or None, data.removesuffix("\n"), last_id, retry))
            data, event_type, retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value) and int(value) < 2**64:
            retry = int(value)
    return events


# --- feeding helpers -----------------------------------------------------------------------------


def decode(chunks: Iterable[bytes], **limits: int) -> list[Ev]:
    decoder = SSEDecoder(**limits)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return as_tuples(events)


def feed_all(decoder: SSEDecoder, chunks: Iterable[bytes], events: list[SSEEvent]) -> None:
    """Feed every chunk, keeping the events in `events` (so that they survive an exception)."""
    for chunk in chunks:
        events.extend(decoder.feed(chunk))


def one_byte_at_a_time(stream: bytes) -> Iterator[bytes]:
    return (stream[i : i + 1] for i in range(len(stream)))


def in_pieces(stream: bytes, size: int) -> Iterator[bytes]:
    return (stream[i : i + size] for i in range(0, len(stream), size))


def random_splits(stream: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randrange(1, 8)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def all_feedings(stream: bytes, seed: int = 0) -> Iterator[tuple[str, Sequence[bytes]]]:
    yield "whole", [stream]
    yield "one byte at a time", list(one_byte_at_a_time(stream))
    rng = random.Random(seed)
    for n in range(20):
        yield f"random split #{n}", random_splits(stream, rng)


# --- the WHATWG conformance cases ---------------------------------------------------------------

CONFORMANCE: list[tuple[str, bytes, list[Ev]]] = [
    ("lf", b"data: a\n\n", [ev("a")]),
    ("cr", b"data: a\r\r", [ev("a")]),
    ("crlf", b"data: a\r\n\r\n", [ev("a")]),
    ("mixed line ends", b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r", [ev("a\nb\nc"), ev("d")]),
    ("crlf then lf", b"data: a\r\n\n", [ev("a")]),
    ("cr then crlf", b"data: a\r\r\n", [ev("a")]),
    ("bom at start stripped", b"\xef\xbb\xbfdata: a\n\n", [ev("a")]),
    ("second bom is not stripped", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n", [ev("b")]),
    ("bom later is data", b"data: \xef\xbb\xbfa\n\n", [ev("\ufeffa")]),
    ("bom after first event is not stripped", b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [ev("a")]),
    ("partial bom is invalid utf-8", b"\xef\xbbdata: a\n\ndata: b\n\n", [ev("b")]),
    ("comments ignored", b": ping\n\n:\ndata: a\n: mid\ndata: b\n\n", [ev("a\nb")]),
    ("comment-only block dispatches nothing", b": x\n\n", []),
    ("field without colon", b"data\n\n", [ev("")]),
    ("fields without colon joined", b"data\ndata\ndata: x\n\n", [ev("\n\nx")]),
    ("no space after colon", b"data:a\n\n", [ev("a")]),
    ("exactly one space stripped", b"data:  a \n\n", [ev(" a ")]),
    ("tab is not stripped", b"data:\ta\n\n", [ev("\ta")]),
    ("colon in value", b"data: a: b\n\n", [ev("a: b")]),
    ("data lines joined with lf", b"data: a\ndata: b\ndata:\n\n", [ev("a\nb\n")]),
    ("two empty data lines", b"data:\ndata:\n\n", [ev("\n")]),
    ("empty data dispatches", b"data:\n\n", [ev("")]),
    ("data with only a space dispatches", b"data: \n\n", [ev("")]),
    ("event without data is not dispatched", b"event: x\n\n", []),
    ("blank lines only", b"\n\n\n\r\n\r", []),
    (
        "event type reset after dispatch",
        b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n",
        [ev("1", "a"), ev("2"), ev("3")],
    ),
    ("last event line wins", b"event: a\nevent: b\ndata: 1\n\n", [ev("1", "b")]),
    ("empty event is the default type", b"event: a\nevent:\ndata: 1\n\n", [ev("1")]),
    (
        "last event id persists and resets to empty",
        b"data: 0\n\nid: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid\ndata: d\n\nid:\ndata: e\n\n",
        [ev("0"), ev("a", id="1"), ev("b", id="1"), ev("c", id="2"), ev("d", id=""), ev("e", id="")],
    ),
    ("id after data in the block", b"data: a\nid: x\n\n", [ev("a", id="x")]),
    ("id with nul ignored", b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", [ev("a", id="1"), ev("b", id="1")]),
    (
        "retry digits only, on its block",
        b"retry: 1000\ndata: a\n\ndata: b\n\nretry: 1x\ndata: c\n\nretry:\ndata: d\n\nretry: -1\ndata: e\n\n",
        [ev("a", retry=1000), ev("b"), ev("c"), ev("d"), ev("e")],
    ),
    ("retry with non-ascii digit ignored", "retry: \u0663\ndata: e\n\n".encode(), [ev("e")]),
    ("retry too large ignored", b"retry: 99999999999999999999999\ndata: f\n\n", [ev("f")]),
    ("last valid retry wins", b"retry: 1\nretry: 2\nretry: x\ndata: g\n\n", [ev("g", retry=2)]),
    ("unknown fields ignored", b"foo: bar\nDATA: x\ndata : y\ndata: a\n\n", [ev("a")]),
    ("unfinished event discarded", b"data: a\n\ndata: b\n", [ev("a")]),
    ("unfinished line discarded", b"data: a\n\ndata: b", [ev("a")]),
    ("unfinished event with cr discarded", b"data: a\r\rdata: b\r", [ev("a")]),
    ("multibyte utf-8", "data: a😀é€b\nevent: ✓\n\n".encode(), [ev("a😀é€b", "✓")]),
    ("invalid utf-8 replaced", b"data: a\xffb\n\n", [ev("a\ufffdb")]),
    ("truncated sequence is one replacement", b"data: \xf0\x9f\x98\n\n", [ev("\ufffd")]),
    ("truncated sequence then valid", b"data: \xe2\x82\xc3\xa9\n\n", [ev("\ufffdé")]),
    ("surrogate and overlong", b"data: \xed\xa0\x80\xc0\xaf\n\n", [ev("\ufffd" * 5)]),
    ("invalid utf-8 in field name", b"ev\xffent: x\ndata: y\n\n", [ev("y")]),
    (
        "unicode separators are not line ends",
        "data: a\u2028b\u2029c\u0085d\x0be\x0cf\n\n".encode(),
        [ev("a\u2028b\u2029c\u0085d\x0be\x0cf")],
    ),
    (
        "chat completions shape",
        b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
        [ev('{"a":1}'), ev('{"b":2}'), ev("[DONE]")],
    ),
    (
        "open responses shape",
        b'event: response.created\ndata: {"type":"response.created"}\n\n: keep-alive\n\n',
        [ev('{"type":"response.created"}', "response.created")],
    ),
]


@pytest.mark.parametrize(("stream", "expected"), [pytest.param(s, e, id=n) for n, s, e in CONFORMANCE])
def test_conformance(stream: bytes, expected: list[Ev]) -> None:
    assert reference_decode(stream) == expected, "the reference decoder disagrees with the expectation"
    for how, chunks in all_feedings(stream):
        assert decode(chunks) == expected, how


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"], id="crlf split after cr"),
        pytest.param([b"data: a\r", b"", b"\n", b"\n"], id="cr, empty chunk, lf"),
        pytest.param([b"data: a\r", b"\r\n"], id="cr at end then crlf"),
    ],
)
def test_crlf_split_across_chunks_is_one_line_end(chunks: list[bytes]) -> None:
    # Were the LF after a chunk-final CR taken as a second line end, "a" would be dispatched alone.
    decoded = decode(chunks)
    assert decoded == reference_decode(b"".join(chunks))
    assert decoded[0][1] in ("a\nb", "a")


@pytest.mark.parametrize("cut", range(1, 3))
def test_bom_split_across_chunks(cut: int) -> None:
    stream = b"\xef\xbb\xbfdata: a\n\n"
    assert decode([stream[:cut], stream[cut:]]) == [ev("a")]
    assert decode([stream[:1], stream[1:2], stream[2:3], stream[3:]]) == [ev("a")]


@pytest.mark.parametrize("char", ["😀", "€", "é", "\u2028"])
def test_multibyte_character_split_at_every_byte(char: str) -> None:
    stream = f"event: {char}\ndata: x{char}y\n\n".encode()
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]]) == [ev(f"x{char}y", char)], cut


def test_random_streams_match_the_reference() -> None:
    pieces = [
        b"data", b"event", b"id", b"retry", b"foo", b":", b": ", b" ", b"\n", b"\r", b"\r\n", b"\n\n",
        b"\xef\xbb\xbf", b"\xef\xbb", "😀".encode(), b"\xf0\x9f", b"\xff", b"\0", "\u2028\u0085".encode(),
        b"12", b"x", b'data: {"a":1}\n\n',
    ]  # fmt: skip
    rng = random.Random(1234)
    for _ in range(400):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randrange(40)))
        expected = reference_decode(stream)
        assert decode([stream]) == expected, stream
        assert decode(random_splits(stream, rng)) == expected, stream
        assert decode(one_byte_at_a_time(stream)) == expected, stream


# --- recorded provider streams ------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_fixture(path: Path) -> None:
    stream = path.read_bytes()
    whole = decode([stream])
    assert whole, "every fixture holds events"
    assert whole == reference_decode(stream)
    assert decode(one_byte_at_a_time(stream)) == whole
    assert decode(in_pieces(stream, 4096)) == whole
    assert decode(random_splits(stream, random.Random(path.name))) == whole


def test_fixtures_exist() -> None:
    assert len(FIXTURE_FILES) >= 20


# --- limits -------------------------------------------------------------------------------------


def test_line_too_long_is_reported_while_incomplete() -> None:
    decoder = SSEDecoder(max_line_length=8)
    assert as_tuples(decoder.feed(b"data: 12\n\ndata: ")) == [ev("12")]
    assert decoder.feed(b"12") == []
    with pytest.raises(SSEError, match=r"limit of 8 bytes \(max_line_length\) at byte offset 18$"):
        decoder.feed(b"3")  # no line end yet: the bound is checked before the line completes
    # Sticky: the decoder refuses to go on.
    with pytest.raises(SSEError, match="at byte offset 18"):
        decoder.feed(b"\n\n")
    assert decoder.close() == []


@pytest.mark.parametrize("size", [1, 3, 4096])
def test_limit_error_is_the_same_however_the_stream_is_split(size: int) -> None:
    stream = b"data: a\n\ndata: 1\ndata: 2\n: comments do not count\ndata: 3\ndata: 4\n\n"
    decoder = SSEDecoder(max_event_size=20)
    events: list[SSEEvent] = []
    with pytest.raises(SSEError) as info:
        feed_all(decoder, in_pieces(stream, size), events)
    offset = stream.index(b"data: 3") + 6
    assert str(info.value) == f"SSE event larger than the limit of 20 bytes (max_event_size) at byte offset {offset}"
    assert isinstance(info.value, ValueError)
    assert as_tuples(events) == ([ev("a")] if size < len(stream) else [])


def test_event_size_resets_per_event() -> None:
    stream = b"data: 1234567890123\n\n" * 100
    assert len(decode([stream], max_event_size=20, max_line_length=19)) == 100


def test_endless_line_is_refused_without_buffering_it() -> None:
    decoder = SSEDecoder(max_line_length=1 << 16)
    chunk = b"x" * 4096
    endless = (chunk for _ in range(1 << 20))  # 4 GiB if nothing stopped it
    with pytest.raises(SSEError, match=f"at byte offset {1 << 16}$"):
        feed_all(decoder, endless, [])
    assert decoder.position == (1 << 16) + 4096


def test_huge_single_chunk_over_the_limit() -> None:
    with pytest.raises(SSEError, match="max_line_length"):
        SSEDecoder().feed(b"data: " + b"x" * (1 << 20) + b"\n\n")
    data = "x" * ((1 << 20) - 6)
    assert as_tuples(SSEDecoder().feed(f"data: {data}\n\n".encode())) == [ev(data)]


def test_limits_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        SSEDecoder(10)  # type: ignore[misc]


# --- the decoder object -------------------------------------------------------------------------


def test_position_counts_every_byte() -> None:
    decoder = SSEDecoder()
    assert decoder.position == 0
    decoder.feed(b"\xef\xbb\xbfdata: a\n")
    decoder.feed(b"")
    decoder.feed(b"\n")
    assert decoder.position == 12


def test_close_discards_the_unfinished_event_and_the_id_persists() -> None:
    decoder = SSEDecoder()
    assert as_tuples(decoder.feed(b"id: 7\ndata: a\n\ndata: b")) == [ev("a", id="7")]
    assert decoder.close() == []
    assert as_tuples(decoder.feed(b"data: c\n\n")) == [ev("c", id="7")]


def test_feed_returns_a_fresh_list_of_events() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"event: e\ndata: 1\n\nevent: e\ndata: 2\n\n")
    assert type(events) is list
    assert all(type(e) is SSEEvent for e in events)
    assert events[0].event == events[1].event == "e"
    assert decoder.feed(b"") == []


def test_feed_takes_bytes() -> None:
    with pytest.raises(TypeError):
        SSEDecoder().feed("data: a\n\n")  # type: ignore[arg-type]


def test_events_survive_the_decoder() -> None:
    decoder = SSEDecoder()
    first = decoder.feed(b"event: a\ndata: x\n\n")
    decoder.feed(b"event: b\ndata: y\n\n")
    del decoder
    assert as_tuples(first) == [ev("x", "a")]


def test_many_event_names() -> None:
    # More distinct names than the decoder caches, interleaved.
    names = [f"type{i}" for i in range(20)]
    stream = b"".join(f"event: {n}\ndata: {i}\n\n".encode() for i, n in enumerate(names * 3))
    assert [e.event for e in SSEDecoder().feed(stream)] == names * 3


# --- SSEEvent -----------------------------------------------------------------------------------


def test_sse_event_construction_and_fields() -> None:
    event = SSEEvent("d", event="e", id="1", retry=5)
    assert (event.data, event.event, event.id, event.retry) == ("d", "e", "1", 5)
    assert SSEEvent("d").event is None
    assert SSEEvent("d").id is None
    assert SSEEvent("d").retry is None
    assert SSEEvent(data="x", retry=0).retry == 0


def test_sse_event_equality_and_hash() -> None:
    decoded = SSEDecoder().feed(b"event: e\nid: 1\nretry: 5\ndata: d\n\n")[0]
    built = SSEEvent("d", "e", "1", 5)
    assert decoded == built
    assert (decoded != built) is False
    assert hash(decoded) == hash(built)
    assert len({decoded, built, SSEEvent("d")}) == 2
    for other in [SSEEvent("x", "e", "1", 5), SSEEvent("d", None, "1", 5), SSEEvent("d", "e", None, 5)]:
        assert decoded != other
    assert SSEEvent("d", "e", "1", None) != built
    assert SSEEvent("d") != "d"
    assert SSEEvent("d") != ("d",)
    with pytest.raises(TypeError):
        assert SSEEvent("a") < SSEEvent("b")  # type: ignore[operator]


def test_sse_event_repr() -> None:
    assert repr(SSEEvent("a'b\n", event="e")) == "SSEEvent(data=\"a'b\\n\", event='e', id=None, retry=None)"
    assert repr(SSEEvent("", id="1", retry=3)) == "SSEEvent(data='', event=None, id='1', retry=3)"


def test_sse_event_is_frozen() -> None:
    event = SSEEvent("a")
    with pytest.raises(AttributeError):
        event.data = "b"  # type: ignore[misc]


def test_sse_event_type_checks() -> None:
    with pytest.raises(TypeError):
        SSEEvent(b"a")  # type: ignore[arg-type]
    with pytest.raises((TypeError, OverflowError)):
        SSEEvent("a", retry=-1)


# --- encode_sse ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "data", "frame"),
    [
        ("response.created", '{"a":1}', b'event: response.created\ndata: {"a":1}\n\n'),
        (None, "[DONE]", b"data: [DONE]\n\n"),
        (None, "", b"data:\n\n"),
        ("", "x", b"data: x\n\n"),
        (None, "a\nb\r\nc\rd\n\ne\n", b"data: a\ndata: b\ndata: c\ndata: d\ndata:\ndata: e\ndata:\n\n"),
        ("e", " lead", b"event: e\ndata:  lead\n\n"),
    ],
)
def test_encode_sse(event: str | None, data: str, frame: bytes) -> None:
    assert encode_sse(event, data) == frame


@pytest.mark.parametrize(
    "data",
    ["plain", "", "\n", "\r\n", "\r", "a\nb", "a\r\nb", "a\rb", "a\n\nb", "\n\n", "a\r\r\nb\n", " x", "😀\u2028\u0085"],
)
@pytest.mark.parametrize("event", [None, "message", "response.output_text.delta", "✓"])
def test_encode_sse_round_trip(event: str | None, data: str) -> None:
    frame = encode_sse(event, data)
    normalised = data.replace("\r\n", "\n").replace("\r", "\n")
    assert as_tuples(SSEDecoder().feed(frame)) == [ev(normalised, event)]
    assert decode(one_byte_at_a_time(frame * 2)) == [ev(normalised, event)] * 2


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "\r\n", "x\n"])
def test_encode_sse_rejects_a_line_break_in_the_event_name(name: str) -> None:
    with pytest.raises(SSEError, match="line break"):
        encode_sse(name, "x")


def test_public_names() -> None:
    assert ferroute.SSEDecoder is SSEDecoder
    assert issubclass(SSEError, ValueError)
    assert SSEError.__module__ == "ferroute._core"
    assert SSEEvent.__module__ == "ferroute._core"
    assert SSEDecoder.__module__ == "ferroute._core"
    for name in ("SSEDecoder", "SSEEvent", "SSEError", "encode_sse"):
        assert name in ferroute.__all__
