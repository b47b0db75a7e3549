"""POST /chat/ and /chat/async: validation, waiting, and jobs that fail with a reason."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from core.jobs import start_job
from core.schemas import ChatInput
from tests.conftest import RunningStack, free_port
from tests.fakes.process import FakeServer
from workers.main import build_worker
from workflows.chat import ChatWorkflow


async def wait_for_job(api: httpx.AsyncClient, job_id: str, headers: dict, timeout_s: float = 120) -> dict:
    for _ in range(int(timeout_s * 10)):
        job = (await api.get(f"/inference/{job_id}", headers=headers)).json()
        if job.get("status") not in ("pending", "running"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job}")


async def activity_attempts(temporal: Client, job_id: str) -> list[int]:
    history = await temporal.get_workflow_handle(job_id).fetch_history()
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


async def test_invalid_parameters_get_422_naming_the_field(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    cases = {
        "temperature": {"prompt": "hi", "temperature": 2.5},
        "top_p": {"prompt": "hi", "top_p": 0},
        "max_tokens": {"prompt": "hi", "max_tokens": 0},
        "prompt": {"prompt": ""},
        "provider": {"prompt": "hi", "provider": "no-such-provider"},
        "timeout_s": {"prompt": "hi", "timeout_s": -1},
    }
    for field, body in cases.items():
        for path in ("/chat/", "/chat/async"):
            response = await api.post(path, json=body, headers=user_headers)
            assert response.status_code == 422, (path, field, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_request"
            assert field in error["message"]
            assert any(d["field"] == f"body.{field}" for d in error["details"])
    not_json = await api.post(
        "/chat/", content=b"prompt=hi", headers={**user_headers, "content-type": "text/plain"}
    )
    assert not_json.status_code == 422


async def test_chat_past_wait_s_answers_202_and_the_job_still_completes(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    response = await api.post("/chat/", json={"prompt": "Count to five.", "max_tokens": 24, "wait_s": 0},
                              headers=user_headers)  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/inference/{job_id}" == response.json()["status_url"]
    job = await wait_for_job(api, job_id, user_headers)
    assert job["status"] == "completed"
    assert job["result"]["text"]


async def test_a_provider_refusal_fails_the_job_at_once_with_its_reason(
    api: httpx.AsyncClient, user_headers: dict, temporal: Client
) -> None:
    response = await api.post("/chat/", json={"prompt": "hi", "model": "no-such-model"}, headers=user_headers)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "provider_error"
    assert "no-such-model" in error["message"] and "does not exist" in error["message"]
    job_id = error["details"]["job_id"]
    job = await wait_for_job(api, job_id, user_headers)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_error"
    assert "does not exist" in job["error"]["message"]
    # A 4xx from the provider is not retried: one attempt. (A sync chat calls its provider as a
    # local activity, whose attempts only the job's steps tell.)
    steps = (await api.get(f"/jobs/{job_id}/steps", headers=user_headers)).json()["steps"]
    assert [(s["name"], s["local"], s["attempts"], s["status"]) for s in steps] == [
        ("check_prompt", True, 1, "completed"),
        ("generate", True, 1, "failed"),
    ]


async def test_a_provider_that_is_down_fails_the_job_after_bounded_retries(
    api: httpx.AsyncClient, user_headers: dict, temporal: Client, stack: RunningStack
) -> None:
    # A worker of its own whose model server address has nothing listening.
    queue = f"provider-down-{uuid.uuid4().hex}"
    settings = stack.settings.model_copy(
        update={"task_queue": queue, "model_server_url": f"http://127.0.0.1:{free_port()}"}
    )
    me = (await api.get("/auth/me", headers=user_headers)).json()
    async with build_worker(temporal, settings):
        handle = await start_job(
            temporal,
            ChatWorkflow.run,
            ChatInput(prompt="hello"),
            kind="chat",
            owner=me["id"],
            task_queue=queue,
            timeout_s=300,
        )
        job = await wait_for_job(api, handle.id, user_headers, timeout_s=60)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_error"
    assert "connect" in job["error"]["message"]
    # Temporal records the last attempt's start: the fourth, then no more.
    assert await activity_attempts(temporal, handle.id) == [4]


async def test_a_job_past_its_timeout_ends_failed_not_hung(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack
) -> None:
    body = {"prompt": "Write a long essay about rivers.", "max_tokens": 150, "timeout_s": 0.5}
    response = await api.post("/chat/async", json=body, headers=user_headers)
    job = await wait_for_job(api, response.json()["job_id"], user_headers)
    assert job["status"] == "failed"
    assert job["error"] == {"code": "job_timeout", "message": "the job did not finish within its timeout_s"}
    # The provider call learns of the timeout only at its next heartbeat. A one-token request
    # queues behind it, so later tests find the model free and measure only their own work.
    async with httpx.AsyncClient(timeout=120) as client:
        drained = await client.post(
            f"{stack.settings.model_server_url}/v1/chat/completions",
            json={
                "model": "SmolLM2-135M-Instruct",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 1,
            },
        )
    assert drained.status_code == 200


async def test_fallback_tries_the_next_provider_when_one_fails_for_good(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    body = {"prompt": "Say hi.", "provider": "local/no-such-model", "fallback": ["local"], "max_tokens": 8}
    response = await api.post("/chat/", json=body, headers=user_headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["provider"] == "local" and result["model"] == "SmolLM2-135M-Instruct"
    assert result["text"]
    first, second = result["attempts"]
    assert first["model"] == "no-such-model" and "does not exist" in first["error"]
    assert second == {"provider": "local", "model": "SmolLM2-135M-Instruct", "error": None}


async def test_when_every_provider_fails_the_error_names_each(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    body = {"prompt": "Say hi.", "provider": "local/missing-a", "fallback": ["local/missing-b"]}
    response = await api.post("/chat/", json=body, headers=user_headers)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "provider_error"
    assert "missing-a" in error["message"] and "missing-b" in error["message"]


async def test_compare_returns_every_answer_side_by_side(api: httpx.AsyncClient, user_headers: dict) -> None:
    body = {
        "prompt": "Say hi.",
        "compare": ["local", "local/no-such-model"],
        "max_tokens": 8,
        "temperature": 0,
    }
    response = await api.post("/chat/", json=body, headers=user_headers)
    assert response.status_code == 200, response.text
    good, bad = response.json()["answers"]
    assert good["provider"] == "local" and good["text"] and good["error"] is None
    assert bad["model"] == "no-such-model" and "does not exist" in bad["error"] and bad["text"] == ""
    assert response.json()["text"] == good["text"]


async def test_a_multi_turn_conversation_in_openais_shape(api: httpx.AsyncClient, user_headers: dict) -> None:
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
    ]
    response = await api.post("/chat/", json={"messages": messages, "max_tokens": 8}, headers=user_headers)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 30  # the whole conversation reached the model


async def test_prompt_and_messages_exclude_each_other(api: httpx.AsyncClient, user_headers: dict) -> None:
    both = {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}
    neither = {"max_tokens": 8}
    for body in (both, neither):
        response = await api.post("/chat/", json=body, headers=user_headers)
        assert response.status_code == 422
        assert "prompt or messages" in response.json()["error"]["message"]
    unknown = await api.post("/chat/", json={"prompt": "hi", "fallback": ["nobody"]}, headers=user_headers)
    assert unknown.status_code == 422 and "nobody" in unknown.json()["error"]["message"]


async def test_the_same_idempotency_key_gives_the_same_job(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    body = {"prompt": "Say hi.", "max_tokens": 8, "temperature": 1.0}
    first = await api.post("/chat/", json=body, headers={**user_headers, **key})
    again = await api.post("/chat/", json=body, headers={**user_headers, **key})
    queued = await api.post("/chat/async", json=body, headers={**user_headers, **key})
    assert first.status_code == again.status_code == 200
    # Sampling at temperature 1 would differ on a second call: the same text means one call.
    assert first.json() == again.json()
    assert queued.json()["job_id"] == first.json()["job_id"]
    other = await api.post("/chat/", json=body, headers=user_headers)
    assert other.json()["job_id"] != first.json()["job_id"]


async def test_a_parameter_the_provider_cannot_honour_is_a_422_naming_it(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    # The local model server has no penalties and no JSON mode.
    body = {"prompt": "hi", "presence_penalty": 0.5, "response_format": "json_object"}
    response = await api.post("/chat/", json=body, headers=user_headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unsupported_parameter"
    assert error["details"] == {"provider": "local", "parameters": ["presence_penalty", "response_format"]}
    honoured = await api.post("/chat/", json={"prompt": "hi", "stop": ["."], "seed": 1, "max_tokens": 8},
                              headers=user_headers)  # fmt: skip
    assert honoured.status_code == 200


async def test_more_concurrent_sync_chats_than_database_connections_all_answer(
    api: httpx.AsyncClient, user_headers: dict, fakes: dict[str, FakeServer]
) -> None:
    # The pool holds 15 connections (5 + 10 overflow); a request that kept its session's connection
    # while waiting for its job left the 16th waiting for one, and every request then timed out.
    body = {"prompt": "Say hi.", "provider": "openai"}
    chats = [api.post("/chat/", json=body, headers=user_headers) for _ in range(40)]
    responses = await asyncio.gather(*chats)
    failed = [r.text for r in responses if r.status_code != 200]
    assert failed == []
