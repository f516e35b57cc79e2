"""OpenAI Responses upstreams (`POST {base_url}/responses`: OpenAI, and servers that speak it: vLLM, LM Studio,
OpenRouter, DeepSeek).

`responses_request` is the client's request as the upstream takes it: the same fields, with the upstream model
name, the whole input (the router resolves `previous_response_id` and `item_reference`s, so nothing depends on
the upstream's own state: `store` is false there, and `reasoning.encrypted_content` is always asked for so that
a later turn can send reasoning back), streamed. Items go without the router's ids, except reasoning items from
this kind of upstream, which go back with the upstream's own id and blob (`ResponsesTranslator` keeps both in
`encrypted_content`: `upstream-item:<id>:<blob>`). Hosted tools go to the upstream, which runs them; their items
are not shown to the client. The answer is read by the Rust `ResponsesTranslator`.
"""

from __future__ import annotations

from typing import Any

from ferroute import _core
from ferroute.config import ProviderConfig
from ferroute.errors import invalid_request
from ferroute.models import ItemReference, ReasoningItem, ResponsesRequest

UPSTREAM_ITEM = _core.UPSTREAM_ITEM
# Request fields the router answers for itself, not the upstream.
_OWN = {"input", "previous_response_id", "store", "background", "stream", "stream_options", "include",
        "client_metadata", "model"}  # fmt: skip


def _input_item(item: Any, param: str) -> dict[str, Any]:
    if isinstance(item, ItemReference):
        raise invalid_request("item_reference was not resolved", param, code="unsupported_parameter")
    data: dict[str, Any] = item.model_dump(mode="json", exclude_none=True, by_alias=True)
    data.pop("id", None)  # (the router's ids mean nothing upstream)
    if isinstance(item, ReasoningItem) and item.encrypted_content:
        if item.encrypted_content.startswith(UPSTREAM_ITEM):
            data["id"], _, data["encrypted_content"] = item.encrypted_content[len(UPSTREAM_ITEM) :].partition(":")
        else:  # (another upstream's, e.g. Anthropic's signature: nothing this one can open)
            del data["encrypted_content"]
    return data


def responses_request(request: ResponsesRequest, upstream_model: str) -> dict[str, Any]:
    """The `/responses` body for an Open Responses request (always streaming, stateless upstream)."""
    body: dict[str, Any] = request.model_dump(mode="json", exclude_none=True, by_alias=True, exclude=_OWN)
    items = [_input_item(item, f"input[{i}]") for i, item in enumerate(request.items())]
    if not items:
        raise invalid_request("the request has no input", "input")
    include = ["reasoning.encrypted_content"]
    if request.include and "message.output_text.logprobs" in request.include:
        include.append("message.output_text.logprobs")  # (`top_logprobs` goes as the client sent it)
    body.update(model=upstream_model, input=items, stream=True, store=False, include=include)
    return body


class ResponsesDialect:
    """`POST {base_url}/responses` with a Bearer key; the body from `responses_request`, the answer read by
    `ResponsesTranslator`."""

    path = "/responses"
    translator = _core.ResponsesTranslator
    keeps_encrypted_reasoning = True

    def __init__(self, config: ProviderConfig) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    def auth_header(self, key: str) -> tuple[bytes, bytes]:
        return (b"authorization", b"Bearer " + key.encode())

    def request_body(self, request: ResponsesRequest, upstream_model: str) -> dict[str, Any]:
        return responses_request(request, upstream_model)
