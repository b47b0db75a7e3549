"""The first slice through everything: login, register, a chat job on the real local model."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import RunningStack, new_user

PROMPT = "Name three colours of the rainbow."
MAX_TOKENS = 40


@pytest.fixture(scope="module")
def direct_greedy_text(stack: RunningStack) -> str:
    """What the same model says when loaded directly with transformers, greedy decoding."""
    path = stack.settings.model_path(stack.settings.local_chat_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


async def test_chat_at_temperature_zero_returns_the_models_own_greedy_text(
    api: httpx.AsyncClient, admin_headers: dict, direct_greedy_text: str
) -> None:
    headers, _ = await new_user(api, admin_headers)
    response = await api.post(
        "/chat/", json={"prompt": PROMPT, "temperature": 0, "max_tokens": MAX_TOKENS}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == direct_greedy_text
    assert body["text"].strip()
    assert body["provider"] == "local"
    assert body["model"] == "SmolLM2-135M-Instruct"
    assert body["job_id"].startswith("chat-")
    assert body["usage"]["completion_tokens"] > 0
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert body["latency_ms"] > 0


async def test_async_job_completes_and_is_hidden_from_other_users(
    api: httpx.AsyncClient, admin_headers: dict
) -> None:
    owner, _ = await new_user(api, admin_headers)
    stranger, _ = await new_user(api, admin_headers)
    response = await api.post("/chat/async", json={"prompt": "Say hello.", "max_tokens": 16}, headers=owner)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/inference/{job_id}"

    statuses = []
    for _ in range(300):
        job = (await api.get(f"/inference/{job_id}", headers=owner)).json()
        statuses.append(job["status"])
        if job["status"] not in ("pending", "running"):
            break
        await asyncio.sleep(0.1)
    assert job["status"] == "completed", job
    assert job["result"]["text"].strip()
    assert job["result"]["job_id"] == job_id
    assert set(statuses) <= {"pending", "running", "completed"}

    hidden = await api.get(f"/inference/{job_id}", headers=stranger)
    assert hidden.status_code == 404
    assert hidden.json() == {"error": {"code": "not_found", "message": "job not found"}}
    # Admins see every job.
    assert (await api.get(f"/inference/{job_id}", headers=admin_headers)).json()["status"] == "completed"


async def test_docs_and_openapi_are_served(api: httpx.AsyncClient) -> None:
    docs = await api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = (await api.get("/openapi.json")).json()
    for path in ("/auth/login", "/auth/register", "/auth/me", "/chat/", "/chat/async", "/inference/{job_id}"):
        assert path in spec["paths"], path
    # Swagger's Authorize button: an OAuth2 password flow pointing at our login route.
    schemes = spec["components"]["securitySchemes"]
    assert any(
        s.get("flows", {}).get("password", {}).get("tokenUrl") == "/auth/login" for s in schemes.values()
    )


async def test_health_reports_every_part_ready(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "parts": {"database": "ok", "temporal": "ok", "worker": "ok", "model_server": "ok"},
    }
