"""POST /chat/stream: tokens as the model makes them, from a job that stays a durable workflow."""

from __future__ import annotations

import json
import time

import httpx

from tests.api.routes.test_chat import wait_for_job

ESSAY = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 60, "temperature": 0}


async def sse_events(response: httpx.Response):  # type: ignore[no-untyped-def]
    """(event, data, arrival time) for each server-sent event."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data)), time.perf_counter()
            event, data = "message", []


async def test_stream_delivers_tokens_while_the_job_runs(api: httpx.AsyncClient, user_headers: dict) -> None:
    async with api.stream("POST", "/chat/stream", json=ESSAY, headers=user_headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [e async for e in sse_events(response)]
    kinds = [kind for kind, _, _ in events]
    assert kinds[0] == "job" and kinds[-1] == "result"
    assert set(kinds[1:-1]) == {"delta"}
    deltas = [data["text"] for kind, data, _ in events if kind == "delta"]
    result = events[-1][1]
    assert len(deltas) > 10
    assert "".join(deltas) == result["text"]
    assert result["job_id"] == events[0][1]["job_id"]
    # Deltas arrive while the model works, not all at once at the end.
    first, last = events[1][2], events[-2][2]
    assert last - first > 0.5 * (events[-1][2] - events[0][2])

    # The same job, read by id, holds the same full text; and a plain call says the same.
    job = await wait_for_job(api, result["job_id"], user_headers)
    assert job["result"]["text"] == result["text"]
    plain = await api.post("/chat/", json={**ESSAY, "wait_s": 600}, headers=user_headers)
    assert plain.json()["text"] == result["text"]


async def test_a_client_that_disconnects_does_not_lose_the_answer(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    async with api.stream("POST", "/chat/stream", json=ESSAY, headers=user_headers) as response:
        events = sse_events(response)
        kind, job, _ = await anext(events)
        assert kind == "job"
        kind, _, _ = await anext(events)
        assert kind == "delta"
    # Gone mid-stream: the job goes on to the end.
    finished = await wait_for_job(api, job["job_id"], user_headers)
    assert finished["status"] == "completed"
    assert len(finished["result"]["text"]) > 40


async def test_a_failed_job_ends_the_stream_with_its_error(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    body = {"prompt": "hi", "model": "no-such-model"}
    async with api.stream("POST", "/chat/stream", json=body, headers=user_headers) as response:
        events = [e async for e in sse_events(response)]
    assert [kind for kind, _, _ in events] == ["job", "error"]
    error = events[-1][1]["error"]
    assert error["code"] == "provider_error" and "does not exist" in error["message"]
    assert error["details"]["job_id"] == events[0][1]["job_id"]


async def test_nobody_else_can_write_into_a_stream(api: httpx.AsyncClient) -> None:
    batch = {"attempt": "1:1", "provider": "local", "deltas": ["injected"]}
    unsigned = await api.post("/internal/streams/chat-x", json=batch)
    assert unsigned.status_code == 403
    forged = await api.post("/internal/streams/chat-x", json=batch, headers={"X-Stream-Signature": "0" * 64})
    assert forged.status_code == 403


async def test_stream_requests_are_validated_like_chat(api: httpx.AsyncClient, user_headers: dict) -> None:
    response = await api.post("/chat/stream", json={"prompt": "", "temperature": 9}, headers=user_headers)
    assert response.status_code == 422
    compare = await api.post(
        "/chat/stream", json={"prompt": "hi", "compare": ["local"]}, headers=user_headers
    )
    assert compare.status_code == 422
    assert (await api.post("/chat/stream", json={"prompt": "hi"})).status_code == 401
