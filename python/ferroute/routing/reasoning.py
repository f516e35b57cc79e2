"""Reasoning across providers: an upstream's own reasoning blob (an Anthropic thinking signature, an OpenAI
`encrypted_content`) opens only at the provider, and with the key, that made it. A conversation that moves to
another provider (a failover, a route that balanced the next turn elsewhere, a client that names another
`<model>:<provider>`) sends what that provider can take, the reasoning's summary and text, and not the blob.

Where a blob came from is known for the items the router kept (a stored response's reasoning, tagged with the
provider that answered it) and for the blobs it sealed (the provider is in the sealed payload): `ReasoningItem`'s
`_origin`. A blob the client sent raw has no known origin and goes as it came. An upstream that rejects a blob anyway
(its key rotated) gets the request once more without any (`app.exchange.Pump.open`).
"""

from __future__ import annotations

from typing import Any

from ferroute.models import ReasoningItem, ResponsesRequest


def origins_of(items: list[object]) -> frozenset[str]:
    """The providers whose blobs these items carry."""
    return frozenset(
        item._origin
        for item in items
        if isinstance(item, ReasoningItem) and item.encrypted_content and item._origin is not None
    )


def made_by(items: list[Any], provider: str) -> list[Any]:
    """`items` (an upstream's own, as a tool loop keeps them) with their reasoning blobs marked as `provider`'s."""
    for item in items:
        if isinstance(item, ReasoningItem) and item.encrypted_content:
            item._origin = provider
    return items


def for_items(items: list[Any], provider: str, *, everything: bool = False) -> list[Any]:
    """`items` as `provider` may take them: reasoning blobs another provider made left out (`everything`: every
    blob, known origin or not; copies of those items, the others as they are)."""
    return [
        item.model_copy(update={"encrypted_content": None})
        if isinstance(item, ReasoningItem)
        and item.encrypted_content
        and (everything or (item._origin is not None and item._origin != provider))
        else item
        for item in items
    ]


def for_provider(request: ResponsesRequest, provider: str, *, everything: bool = False) -> ResponsesRequest:
    """`request` as `provider` may take it: reasoning blobs another provider made left out (`everything`: every
    blob, known origin or not). The request itself where nothing changes."""
    origins = request._origins
    if not everything and (not origins or origins == {provider}):
        return request
    items = request.input
    if not isinstance(items, list):
        return request
    kept: list[object] = []
    changed = False
    for item in items:
        if (
            isinstance(item, ReasoningItem)
            and item.encrypted_content
            and (everything or (item._origin is not None and item._origin != provider))
        ):
            kept.append(item.model_copy(update={"encrypted_content": None}))
            changed = True
        else:
            kept.append(item)
    if not changed:
        return request
    stripped = request.model_copy(update={"input": kept})
    stripped._origins = frozenset() if everything else origins & {provider}
    return stripped
