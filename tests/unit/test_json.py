"""`ferroute.JsonStream` / `parse_partial_json`: partial values exactly as jiter's `trailing-strings` mode,
at every prefix of every document, however the document is split."""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jiter
import pytest

import ferroute
from ferroute import JSONError, JsonStream, parse_partial_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_completions"

HANDWRITTEN = [
    "null",
    "true",
    "false",
    "0",
    "-0",
    "42",
    "-17",
    "3.25",
    "-0.0",
    "1e5",
    "1E+2",
    "-2.5e-3",
    "0.30000000000000004",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890123456789",
    '""',
    '"plain"',
    '"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t end"',
    '"\\u0041\\u00e9\\u2713 \\ud83d\\ude00 \\uD83D\\uDE00"',
    '"héllo ✓ 😀 中文"',
    "[]",
    "{}",
    "[[], {}, [[]], [{}]]",
    " \n\t[ 1 , 2 ,\r\n 3 ] ",
    '{"a": 1, "b": [true, false, null], "c": {"d": "e", "f": [1.5, -2, "x"]}}',
    '{"a": 1, "a": "dup", "b": 2, "a": [3]}',
    '{"ké✓": "välue 😀", "": "", "nested": {"deeper": {"deepest": ["a", {"b": "c"}]}}}',
    '[1, -1, 0.5, 1e3, -1.5E-3, 100000000000000000000000, "s", null, true, [false]]',
    '{"path": "src/main.rs", "content": "fn main() {\\n    println!(\\"hi\\");\\n}\\n", "line": 12}',
    '[{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": []}, {"id": 3, "tags": ["c"]}]',
]


def _tool_call_fragments() -> list[list[str]]:
    """The argument fragments of every tool call in the recorded Chat Completions streams."""
    calls: list[list[str]] = []
    for path in sorted(FIXTURES.glob("*tool*.sse")):
        per_index: dict[int, list[str]] = {}
        for line in path.read_text().splitlines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            for choice in chunk.get("choices") or []:
                for call in (choice.get("delta") or {}).get("tool_calls") or []:
                    args = (call.get("function") or {}).get("arguments")
                    if args:
                        per_index.setdefault(call.get("index", 0), []).append(args)
        calls.extend(per_index.values())
    return calls


TOOL_CALLS = _tool_call_fragments()
CORPUS = HANDWRITTEN + ["".join(fragments) for fragments in TOOL_CALLS]


def test_corpus_is_real() -> None:
    assert len(TOOL_CALLS) >= 7
    for doc in CORPUS:
        json.loads(doc)


def reference(prefix: bytes) -> Any:
    """jiter's partial value, or `None` where jiter raises (an empty or unfinished top-level scalar)."""
    try:
        return jiter.from_json(prefix, partial_mode="trailing-strings")
    except ValueError:
        return None


def same(a: Any, b: Any) -> bool:
    """Equal, with the types too (`1 != 1.0`, `0.0 != -0.0` here, dict order included)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and str(a) == str(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def splits(doc: bytes, rng: random.Random) -> Iterator[list[bytes]]:
    yield [doc]
    yield [doc[i : i + 1] for i in range(len(doc))]
    for _ in range(3):
        cuts = sorted(rng.sample(range(len(doc) + 1), min(len(doc) + 1, rng.randint(1, 8))))
        yield [doc[a:b] for a, b in zip([0, *cuts], [*cuts, len(doc)], strict=True)]


@pytest.mark.parametrize("doc", CORPUS, ids=lambda d: d[:30])
def test_every_prefix_matches_jiter(doc: str) -> None:
    raw = doc.encode()
    for end in range(len(raw) + 1):
        prefix = raw[:end]
        got = parse_partial_json(prefix)
        want = reference(prefix)
        assert same(got, want), (prefix, got, want)
    # str input: the same, character by character.
    for end in range(len(doc) + 1):
        assert same(parse_partial_json(doc[:end]), reference(doc[:end].encode())), doc[:end]


@pytest.mark.parametrize("doc", CORPUS, ids=lambda d: d[:30])
def test_stream_matches_jiter_after_every_fragment(doc: str) -> None:
    raw = doc.encode()
    rng = random.Random(doc)
    for pieces in splits(raw, rng):
        stream = JsonStream()
        fed = b""
        for piece in pieces:
            stream.feed(piece)
            fed += piece
            got = stream.value()
            assert same(got, reference(fed)), (fed, got)
        assert same(stream.value(), json.loads(doc))
        # A top-level number is complete only once something ends it: more digits could come.
        assert stream.complete is (not re.fullmatch(r"-?[0-9.eE+-]+", doc))


@pytest.mark.parametrize("fragments", TOOL_CALLS, ids=lambda f: "".join(f)[:30])
def test_recorded_tool_call_fragments(fragments: list[str]) -> None:
    stream = JsonStream()
    fed = ""
    for fragment in fragments:
        stream.feed(fragment)
        fed += fragment
        assert same(stream.value(), reference(fed.encode()))
    assert stream.complete
    assert same(stream.value(), json.loads(fed))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 7, rng.randrange(-(10**30), 10**30), rng.randrange(-(2**63), 2**63)])
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e-7, 1.5e300, rng.uniform(-1e6, 1e6), rng.random()])
    if kind in (3, 4, 5, 6):
        alphabet = 'ab "\\/\n\t\x00\x1féü✓中😀𝄞\u2028'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind in (7, 8):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {
        random_value(rng, 4) if rng.random() < 0.5 else rng.choice("kxy"): random_value(rng, depth + 1)
        for _ in range(rng.randrange(5))
    }


def random_documents(n: int) -> list[str]:
    rng = random.Random(1234)
    docs = []
    for _ in range(n):
        value = random_value(rng)
        docs.append(json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]), default=str))
    return docs


@pytest.mark.parametrize("doc", random_documents(150))
def test_random_documents(doc: str) -> None:
    raw = doc.encode()
    for end in range(len(raw) + 1):
        assert same(parse_partial_json(raw[:end]), reference(raw[:end])), raw[:end]
    stream = JsonStream()
    rng = random.Random(doc)
    at = 0
    while at < len(raw):
        step = rng.randint(1, 9)
        stream.feed(raw[at : at + step])
        at += step
        assert same(stream.value(), reference(raw[: min(at, len(raw))]))
    assert same(stream.value(), json.loads(doc))


def test_complete_documents_equal_json_loads() -> None:
    for doc in CORPUS:
        assert same(parse_partial_json(doc), json.loads(doc)), doc
        assert same(parse_partial_json(doc.encode()), json.loads(doc)), doc


def test_value_is_the_live_object() -> None:
    stream = JsonStream()
    assert stream.value() is None
    stream.feed('{"a": [1, ')
    value = stream.value()
    assert value == {"a": [1]}
    stream.feed('"tw')
    assert stream.value() is value
    assert value == {"a": [1, "tw"]}
    stream.feed('o"], "b": {"c": tr')
    # Between `value()` calls the object holds every completed member ...
    assert value == {"a": [1, "two"], "b": {}}
    stream.feed('ue}, "d": "x')
    assert value == {"a": [1, "two"], "b": {"c": True}}
    # ... and `value()` brings the trailing partial member up to date.
    assert stream.value() == {"a": [1, "two"], "b": {"c": True}, "d": "x"}
    snapshot = copy.deepcopy(stream.value())
    stream.feed('yz"}')
    assert stream.complete
    assert stream.value() is value == {"a": [1, "two"], "b": {"c": True}, "d": "xyz"}
    assert snapshot == {"a": [1, "two"], "b": {"c": True}, "d": "x"}


def test_partial_member_that_stops_being_valid_is_taken_out() -> None:
    stream = JsonStream()
    stream.feed("[1")
    assert stream.value() == [1]
    stream.feed(".")
    assert stream.value() == []  # `1.` is not a number yet (jiter leaves it out too)
    stream.feed("5")
    assert stream.value() == [1.5]
    stream.feed("e")
    assert stream.value() == []
    stream.feed("2]")
    assert stream.value() == [150.0]
    # A duplicate key: the partial hides the earlier value, which comes back if the partial goes away.
    stream = JsonStream()
    stream.feed('{"a": 1, "b": 2, "a": 3')
    assert stream.value() == {"a": 3, "b": 2} == reference(b'{"a": 1, "b": 2, "a": 3')
    stream.feed(".")
    assert stream.value() == {"a": 1, "b": 2} == reference(b'{"a": 1, "b": 2, "a": 3.')
    stream.feed("5}")
    assert stream.value() == {"a": 3.5, "b": 2}
    # A top-level partial.
    stream = JsonStream()
    stream.feed("-")
    assert stream.value() is None
    stream.feed("12")
    assert stream.value() == -12
    stream.feed("e")
    assert stream.value() is None


def test_utf8_split_across_feeds() -> None:
    doc = '{"emoji": "a😀b", "é": "中"}'.encode()
    for cut in range(len(doc) + 1):
        stream = JsonStream()
        stream.feed(doc[:cut])
        stream.feed(doc[cut:])
        assert stream.value() == {"emoji": "a😀b", "é": "中"}
    stream = JsonStream()
    stream.feed(b'"x\xf0\x9f')
    assert stream.value() == "x"
    stream.feed(b"\x98\x80")
    assert stream.value() == "x😀"


def test_numbers_are_exact() -> None:
    big = "-" + "9" * 400
    assert parse_partial_json(big) == int(big)
    assert parse_partial_json(f"[{big}]") == [int(big)]
    assert type(parse_partial_json("-0")) is int
    assert str(parse_partial_json("-0.0")) == "-0.0"
    assert parse_partial_json("1e400") == float("inf")  # as json.loads and jiter
    assert parse_partial_json("[1.7976931348623157e308, 5e-324]") == [1.7976931348623157e308, 5e-324]


def feed_all(stream: JsonStream, pieces: list[str]) -> None:
    for piece in pieces:
        stream.feed(piece)


@pytest.mark.parametrize(
    ("doc", "offset", "what"),
    [
        ("[1,]", 3, "trailing comma"),
        ('{"a" 1}', 5, "expected `:`"),
        ("[1 2]", 3, "expected `,` or `]`"),
        ('{"a": 1 "b": 2}', 8, "expected `,` or `}`"),
        ("{1: 2}", 1, "expected a string object key"),
        ("01", 1, "invalid number"),
        ("[-]", 2, "invalid number"),
        ("[nul]", 4, "invalid literal"),
        ("[1] x", 4, "trailing characters"),
        ("NaN", 0, "expected a JSON value"),
        ('"a\tb"', 2, "control character"),
        ('"\\x"', 2, "invalid escape"),
        ('"\\ude00"', 6, "lone surrogate"),
        ('"\\ud83d"', 7, "lone surrogate"),
    ],
)
def test_errors_name_the_offset(doc: str, offset: int, what: str) -> None:
    with pytest.raises(JSONError, match=f"{re.escape(what)}.* at byte {offset}$"):
        parse_partial_json(doc)
    stream = JsonStream()
    with pytest.raises(JSONError, match=f"at byte {offset}$"):
        feed_all(stream, list(doc))
    # The stream stays failed.
    with pytest.raises(JSONError, match=f"at byte {offset}$"):
        stream.feed("1")


def test_invalid_utf8_offset() -> None:
    with pytest.raises(JSONError, match=r"invalid UTF-8 in string at byte 3$"):
        parse_partial_json(b'["a\xff"]')


def test_jsonerror_is_a_valueerror() -> None:
    assert issubclass(JSONError, ValueError)
    assert JSONError.__module__ == "ferroute._core"
    assert ferroute.JSONError is JSONError


def test_depth_bound() -> None:
    with pytest.raises(JSONError, match=r"nesting deeper than max_depth=256 at byte 256$"):
        parse_partial_json("[" * 100_000)
    with pytest.raises(JSONError, match="max_depth=256"):
        feed_all(JsonStream(), ["[" * 100] * 1000)
    assert parse_partial_json("[" * 256 + "]" * 256) is not None
    assert parse_partial_json('{"a": [1]}', max_depth=2) == {"a": [1]}
    with pytest.raises(JSONError, match=r"max_depth=1 at byte 6$"):
        parse_partial_json('{"a": [1]}', max_depth=1)
    with pytest.raises(JSONError, match="max_depth=3"):
        JsonStream(max_depth=3).feed("[[[[")


def test_input_types() -> None:
    with pytest.raises(TypeError, match="expected str or bytes"):
        parse_partial_json(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JsonStream().feed(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JsonStream(256)  # type: ignore[misc]


def test_growing_string_never_changes_a_str_the_user_holds() -> None:
    stream = JsonStream()
    stream.feed('{"content": "abc')
    held = stream.value()["content"]
    stream.feed("def")
    assert held == "abc"
    assert stream.value() == {"content": "abcdef"}
    stream.feed("ghi✓")
    value = stream.value()
    assert value == {"content": "abcdefghi✓"}
    stream.feed('😀", "n": [1, "x')
    assert stream.value() == {"content": "abcdefghi✓😀", "n": [1, "x"]}
    stream.feed("yz")
    assert stream.value() == {"content": "abcdefghi✓😀", "n": [1, "xyz"]}
    # A top-level string.
    stream = JsonStream()
    stream.feed('"ab')
    first = stream.value()
    stream.feed("cd")
    second = stream.value()
    stream.feed('e"')
    assert (first, second, stream.value()) == ("ab", "abcd", "abcde")


def test_integer_past_the_int_digit_limit_is_a_jsonerror() -> None:
    # As jiter ("number out of range"): int() refuses more than sys.get_int_max_str_digits() digits.
    with pytest.raises(JSONError, match=r"at byte 5002$"):
        parse_partial_json("[" + "1" * 5000 + "]")
    with pytest.raises(JSONError, match=r"at byte 5001$"):
        parse_partial_json("[" + "1" * 5000)
