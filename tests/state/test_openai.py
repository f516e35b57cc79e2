"""The official `openai` SDK against the stored-response endpoints (sqlite store, API keys)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.support.servers import Server, router, store_section

KEY = "sk-sdk-client-5a2b"


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    config = (
        f'[server]\napi_keys = ["{KEY}"]\n' + store_section("sqlite") + '[[providers]]\nname = "mock"\nkind = "mock"\n'
    )
    server: Server
    with router(config) as server:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        yield sdk
        sdk.close()


def test_retrieve_input_items_delete(client: openai.OpenAI) -> None:
    created = client.responses.create(model="m", input=[{"role": "user", "content": "first"},
                                                        {"role": "user", "content": "second"}])  # fmt: skip
    retrieved = client.responses.retrieve(created.id)
    assert retrieved.id == created.id
    assert retrieved.output_text == created.output_text
    assert retrieved.store is True
    items = client.responses.input_items.list(created.id, order="asc")
    assert [item.content[0].text for item in items.data] == ["first", "second"]  # type: ignore[union-attr]
    assert items.has_more is False
    page = client.responses.input_items.list(created.id, limit=1)
    assert page.has_more is True
    assert page.data[0].content[0].text == "second"  # type: ignore[union-attr]
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_multi_turn_with_previous_response_id(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="My name is Ada.", instructions="Be brief.")
    second = client.responses.create(model="m", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # The mock answers from the last user message: the continuation reached it with the context.
    assert "What is my name?" in second.output_text
    # The mock counts the whole context it was sent as input tokens: the first turn came along.
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + len(first.output_text) // 4 - 2
    third = client.responses.create(model="m", input="And again?", previous_response_id=second.id, stream=True)
    events = list(third)
    assert events[-1].type == "response.completed"
    final = client.responses.retrieve(events[-1].response.id)  # type: ignore[union-attr]
    assert final.status == "completed"
    assert final.previous_response_id == second.id
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="x", previous_response_id="resp_" + "f" * 48)
