"""ferroute (development placeholder: the explicit import list replaces this once every class lands)."""

from ferroute import _core

__all__ = [
    "ChatCompletionsTranslator",
    "JSONError",
    "JsonStream",
    "ResponseEventParser",
    "SSEDecoder",
    "SSEError",
    "SSEEvent",
    "StreamError",
    "UpstreamError",
    "encode_sse",
    "parse_partial_json",
]
globals().update({name: getattr(_core, name) for name in __all__ if hasattr(_core, name)})
__version__ = _core.__version__
