"""Chat across the four providers through the whole stack: the remote ones are fakes on loopback that
speak each provider's wire format (tests/fakes), reached through the official SDKs in the workers."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.api.routes.test_chat import wait_for_job
from tests.api.routes.test_chat_stream import sse_events
from tests.conftest import RunningStack
from tests.fakes.control import ANSWER_PIECES
from tests.fakes.process import FakeServer

FAKE_ANSWER = "".join(ANSWER_PIECES)
REMOTE = ("openai", "gemini", "ollama")


async def steps(api: httpx.AsyncClient, job_id: str, headers: dict) -> list[dict]:
    return (await api.get(f"/jobs/{job_id}/steps", headers=headers)).json()["steps"]


async def test_fallback_moves_across_providers_until_one_answers(
    api: httpx.AsyncClient, user_headers: dict, fakes: dict[str, FakeServer]
) -> None:
    body = {
        "prompt": "Say hi.",
        "provider": "openai/fault-bad_key",  # 401 from OpenAI: not retried
        "fallback": ["gemini/fault-unknown_model", "ollama"],  # a 404 from Gemini, then Ollama answers
    }
    response = await api.post("/chat/", json=body, headers=user_headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["provider"], result["model"], result["text"]) == (
        "ollama",
        "mistral:7b-instruct-q4_K_M",
        FAKE_ANSWER,
    )
    openai_attempt, gemini_attempt, ollama_attempt = result["attempts"]
    assert "Incorrect API key" in openai_attempt["error"]
    assert "fault-unknown_model is not found" in gemini_attempt["error"]
    assert ollama_attempt == {"provider": "ollama", "model": "mistral:7b-instruct-q4_K_M", "error": None}
    # Each provider was asked exactly once: refusals are not retried.
    for name in REMOTE:
        assert len(await fakes[name].requests()) == 1, name


async def test_compare_asks_all_four_providers_in_parallel(
    api: httpx.AsyncClient, user_headers: dict, fakes: dict[str, FakeServer]
) -> None:
    body = {"prompt": "Say hi.", "compare": [*REMOTE, "local"], "max_tokens": 8, "temperature": 0}
    response = await api.post("/chat/", json=body, headers=user_headers)
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    assert [a["provider"] for a in answers] == [*REMOTE, "local"]
    assert [a["text"] for a in answers[:3]] == [FAKE_ANSWER] * 3
    assert answers[3]["text"] and answers[3]["error"] is None
    assert all(a["usage"]["completion_tokens"] > 0 for a in answers)
    # The job paid for every answer: its usage, which the daily budget counts, is their sum.
    assert response.json()["usage"]["total_tokens"] == sum(a["usage"]["total_tokens"] for a in answers)


async def test_a_server_error_then_success_is_one_job_with_two_attempts(
    api: httpx.AsyncClient, user_headers: dict, fakes: dict[str, FakeServer]
) -> None:
    await fakes["gemini"].fail_next("server_error")
    response = await api.post(
        "/chat/", json={"prompt": "Say hi.", "provider": "gemini"}, headers=user_headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["text"] == FAKE_ANSWER
    [_check, generate, _save] = await steps(api, response.json()["job_id"], user_headers)
    assert generate["name"] == "generate" and generate["attempts"] == 2 and generate["status"] == "completed"
    assert len(await fakes["gemini"].requests()) == 2


@pytest.mark.parametrize("provider", REMOTE)
async def test_each_remote_provider_streams_through_the_job(
    api: httpx.AsyncClient, user_headers: dict, fakes: dict[str, FakeServer], provider: str
) -> None:
    body = {"prompt": "Say hi.", "provider": provider}
    async with api.stream("POST", "/chat/stream", json=body, headers=user_headers) as response:
        assert response.status_code == 200
        events = [e async for e in sse_events(response)]
    deltas = [data["text"] for kind, data, _ in events if kind == "delta"]
    assert deltas == ANSWER_PIECES
    assert events[-1][0] == "result" and events[-1][1]["text"] == FAKE_ANSWER
    # The provider was asked for a stream in its own wire format.
    [request] = await fakes[provider].requests()
    assert request["json"].get("stream") is True or "streamGenerateContent" in request["path"]


async def test_the_openai_sdk_reaches_every_provider_by_model_name(
    stack: RunningStack, user_headers: dict, fakes: dict[str, FakeServer]
) -> None:
    token = user_headers["Authorization"].removeprefix("Bearer ")
    async with openai.AsyncOpenAI(base_url=f"{stack.api_url}/v1", api_key=token, max_retries=0) as sdk:
        for provider in REMOTE:
            completion = await sdk.chat.completions.create(
                model=provider, messages=[{"role": "user", "content": "Say hi."}]
            )
            assert completion.choices[0].message.content == FAKE_ANSWER
            assert completion.model.startswith(f"{provider}/")


async def test_cancelling_a_job_stuck_on_a_slow_provider_ends_it_cancelled(
    api: httpx.AsyncClient, user_headers: dict, fakes: dict[str, FakeServer]
) -> None:
    body = {"prompt": "Say hi.", "provider": "openai/fault-slow"}
    job_id = (await api.post("/chat/async", json=body, headers=user_headers)).json()["job_id"]
    for _ in range(100):  # until the provider holds the request
        if await fakes["openai"].requests():
            break
        await asyncio.sleep(0.1)
    response = await api.post(f"/jobs/{job_id}/cancel", headers=user_headers)
    assert response.status_code == 202, response.text
    job = await wait_for_job(api, job_id, user_headers, timeout_s=30)
    assert job["status"] == "cancelled"
    [_check, generate] = await steps(api, job_id, user_headers)
    assert generate["status"] == "cancelled"
