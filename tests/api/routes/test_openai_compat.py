"""The API's OpenAI-compatible front, driven by the official openai SDK with a bearer token."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import RunningStack


@pytest.fixture
def sdk(stack: RunningStack, user_headers: dict) -> openai.AsyncOpenAI:
    token = user_headers["Authorization"].removeprefix("Bearer ")
    return openai.AsyncOpenAI(base_url=f"{stack.api_url}/v1", api_key=token, max_retries=0, timeout=120)


async def test_the_openai_sdk_chats_through_a_durable_job(
    sdk: openai.AsyncOpenAI, api: httpx.AsyncClient, user_headers: dict
) -> None:
    completion = await sdk.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0
    )
    assert completion.object == "chat.completion"
    assert completion.model == "local/SmolLM2-135M-Instruct"
    text = completion.choices[0].message.content
    assert text
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    # The completion's id is the job id: the same answer is readable by id.
    job = (await api.get(f"/inference/{completion.id}", headers=user_headers)).json()
    assert job["status"] == "completed" and job["result"]["text"] == text


async def test_models_and_errors_speak_openais_language(sdk: openai.AsyncOpenAI) -> None:
    models = await sdk.models.list()
    assert "local/SmolLM2-135M-Instruct" in [m.id for m in models.data]
    # The provider refused: a bad gateway, with the provider's own words.
    with pytest.raises(openai.InternalServerError) as refused:
        await sdk.chat.completions.create(
            model="local/no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.status_code == 502
    assert "does not exist" in refused.value.message
    with pytest.raises(openai.UnprocessableEntityError):
        await sdk.chat.completions.create(model="local", messages=[], temperature=3)


async def test_a_bad_token_is_an_authentication_error(stack: RunningStack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.api_url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="local", messages=[{"role": "user", "content": "x"}])


async def test_the_openai_sdk_streams_from_a_durable_job(sdk: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Write a short story about a cat."}]
    stream = await sdk.chat.completions.create(
        model="local", messages=messages, max_tokens=30, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 30
    whole = await sdk.chat.completions.create(model="local", messages=messages, max_tokens=30, temperature=0)
    assert text == whole.choices[0].message.content
