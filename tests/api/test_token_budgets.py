"""The daily token budget's pre-flight through the stack: a request that may spend more than its user has
left of the day is refused with 429 quota_exceeded before any job starts, saying how much is left; one
that fits runs, and its answer's tokens count. The session stack's user budget (tests/conftest.py) is
large enough that no other test reaches it: each user here starts close to it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from api.rate_limits import tokens_used_today
from core.db import create_engine, create_sessionmaker
from core.schemas import Message
from core.tables import Completion
from core.token_budget import request_tokens
from tests.conftest import SESSION_TOKEN_BUDGET, RunningStack, new_user
from tests.fakes.control import ANSWER_PIECES
from tests.fakes.process import FakeServer

BUDGET = SESSION_TOKEN_BUDGET
ANSWER = "".join(ANSWER_PIECES)
RUSSIAN = (
    "Объясни подробно, как устроены дневные лимиты токенов в этом сервисе, почему запрос может быть "
    "отклонён заранее и сколько токенов останется после ответа."
)


async def user_with_usage(
    stack: RunningStack, client: httpx.AsyncClient, admin: dict[str, str], tokens: int
) -> tuple[dict[str, str], int]:
    """A new user who has spent `tokens` today (one completion row, as the chat workflow saves it)."""
    headers, _ = await new_user(client, admin)
    user_id = (await client.get("/auth/me", headers=headers)).json()["id"]
    engine = create_engine(stack.settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            session.add(
                Completion(
                    job_id=f"usage-{user_id}-{time.time_ns()}", owner_id=user_id, provider="openai",
                    model="gpt-4o", text="", latency_ms=1.0, request={},
                    usage={"prompt_tokens": tokens // 2, "completion_tokens": tokens - tokens // 2,
                           "total_tokens": tokens},
                )
            )  # fmt: skip
            await session.commit()
    finally:
        await engine.dispose()
    return headers, user_id


async def used_today(stack: RunningStack, user_id: int) -> tuple[int, list[dict[str, int]]]:
    engine = create_engine(stack.settings.database_url)
    try:
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            usages = list(
                await session.scalars(select(Completion.usage).where(Completion.owner_id == user_id))
            )
        return await tokens_used_today(sessions, user_id), usages
    finally:
        await engine.dispose()


def chat_body(prompt: str, max_tokens: int, **extra: object) -> dict[str, object]:
    return {"provider": "openai", "model": "gpt-4o", "prompt": prompt, "max_tokens": max_tokens, **extra}


def assert_refused_for_the_day(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    resets = datetime.fromisoformat(error["details"]["resets_at"])
    assert resets.time().isoformat() == "00:00:00" and resets.tzinfo is not None
    retry_after = int(response.headers["Retry-After"])
    assert abs((resets - datetime.now(UTC)).total_seconds() - retry_after) <= 5
    return error


async def test_a_request_larger_than_what_is_left_is_refused_and_starts_no_job(
    stack: RunningStack, api: httpx.AsyncClient, admin_headers: dict[str, str], fakes: dict[str, FakeServer]
) -> None:
    headers, user_id = await user_with_usage(stack, api, admin_headers, BUDGET - 300)
    expected = request_tokens(
        [("openai", "gpt-4o")], [Message(role="user", content=RUSSIAN)], 280
    )  # the prompt alone takes the request past the 300 left
    assert expected.max_tokens < 300 < expected.total

    refused = await api.post("/chat/", json=chat_body(RUSSIAN, 280), headers=headers)

    error = assert_refused_for_the_day(refused)
    assert error["details"] == {
        "budget": BUDGET,
        "used": BUDGET - 300,
        "remaining": 300,
        "requested": expected.total,
        "prompt_tokens": expected.prompt_tokens,
        "max_tokens": 280,
        "resets_at": error["details"]["resets_at"],
    }
    assert f"300 of the daily budget of {BUDGET} remain" in error["message"]
    assert f"up to {expected.total} tokens" in error["message"]
    # No job: the provider was never asked, no job is listed, nothing was spent.
    assert await fakes["openai"].requests() == []
    assert (await api.get("/jobs", headers=headers)).json()["items"] == []
    assert (await used_today(stack, user_id))[0] == BUDGET - 300


async def test_every_route_that_starts_a_chat_or_rag_job_counts_the_request(
    stack: RunningStack, api: httpx.AsyncClient, admin_headers: dict[str, str], fakes: dict[str, FakeServer]
) -> None:
    headers, _ = await user_with_usage(stack, api, admin_headers, BUDGET - 100)
    big = 200  # more than the 100 left on its own
    requests = [
        ("/chat/async", chat_body("hi", big)),
        ("/chat/stream", chat_body("hi", big)),
        ("/inference/", chat_body("hi", big)),
        ("/v1/chat/completions", {"model": "openai/gpt-4o", "max_tokens": big,
                                  "messages": [{"role": "user", "content": "hi"}]}),
        ("/chat/rag", {"question": "hi", "max_tokens": big}),
        ("/chat/rag/async", {"question": "hi", "max_tokens": big}),
    ]  # fmt: skip
    for path, body in requests:
        error = assert_refused_for_the_day(await api.post(path, json=body, headers=headers))
        assert error["details"]["remaining"] == 100 and error["details"]["max_tokens"] == big, path
    # The default max_tokens (256) counts too, and asking several providers at once counts each one.
    error = assert_refused_for_the_day(
        await api.post("/chat/", json={"provider": "openai", "prompt": "hi"}, headers=headers)
    )
    assert error["details"]["max_tokens"] == 256
    compared = chat_body("hi", 40, compare=["openai", "gemini", "ollama"])
    error = assert_refused_for_the_day(await api.post("/chat/", json=compared, headers=headers))
    assert error["details"]["max_tokens"] == 120
    assert await fakes["openai"].requests() == []


async def test_a_request_that_fits_runs_and_its_tokens_count(
    stack: RunningStack, api: httpx.AsyncClient, admin_headers: dict[str, str], fakes: dict[str, FakeServer]
) -> None:
    headers, user_id = await user_with_usage(stack, api, admin_headers, BUDGET - 300)

    response = await api.post("/chat/", json=chat_body("Say hello.", 32), headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["text"] == ANSWER
    assert len(await fakes["openai"].requests()) == 1
    used, usages = await used_today(stack, user_id)
    answered = [usage for usage in usages if usage["total_tokens"] != BUDGET - 300]
    assert len(answered) == 1 and answered[0]["prompt_tokens"] > 0 and answered[0]["completion_tokens"] > 0
    assert used == BUDGET - 300 + answered[0]["total_tokens"]


async def test_a_spent_budget_is_refused_whatever_the_body(
    stack: RunningStack, api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    headers, _ = await user_with_usage(stack, api, admin_headers, BUDGET)
    for body in ({}, chat_body("hi", 1)):
        error = assert_refused_for_the_day(await api.post("/chat/", json=body, headers=headers))
        assert error["details"] == {
            "budget": BUDGET,
            "used": BUDGET,
            "resets_at": error["details"]["resets_at"],
        }
        assert "is spent" in error["message"]


async def test_a_body_the_route_cannot_read_reaches_the_route(
    stack: RunningStack, api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    headers, _ = await user_with_usage(stack, api, admin_headers, BUDGET - 1)
    assert (await api.post("/chat/", json={}, headers=headers)).status_code == 422
    assert (await api.post("/chat/", content=b"not json", headers=headers)).status_code == 422
