"""Each completed chat is saved once and exported as JSON lines to its owner only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import new_user


async def export(api: httpx.AsyncClient, headers: dict, **params: str) -> list[dict]:
    response = await api.get("/completions/export", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


async def test_completed_chats_are_exported_to_their_owner(
    api: httpx.AsyncClient, admin_headers: dict
) -> None:
    owner, _ = await new_user(api, admin_headers)
    other, _ = await new_user(api, admin_headers)
    started = datetime.now(UTC) - timedelta(seconds=1)
    answers = []
    for prompt in ("Say hi.", "Say bye."):
        response = await api.post(
            "/chat/", json={"prompt": prompt, "max_tokens": 8, "seed": 3}, headers=owner
        )
        answers.append(response.json())
    failed = await api.post("/chat/", json={"prompt": "x", "model": "no-such-model"}, headers=owner)
    assert failed.status_code == 502

    records = await export(api, owner)
    assert [r["job_id"] for r in records] == [a["job_id"] for a in answers]  # failed jobs are not saved
    first = records[0]
    assert first["text"] == answers[0]["text"] and first["provider"] == "local"
    assert first["model"] == "SmolLM2-135M-Instruct"
    assert first["usage"] == answers[0]["usage"] and first["latency_ms"] > 0
    assert first["request"]["prompt"] == "Say hi." and first["request"]["params"]["seed"] == 3

    assert await export(api, other) == []
    assert len(await export(api, owner, provider="local")) == 2
    assert await export(api, owner, provider="openai") == []
    assert len(await export(api, owner, since=started.isoformat())) == 2
    assert await export(api, owner, until=started.isoformat()) == []
    bad = await api.get("/completions/export", params={"since": "yesterday"}, headers=owner)
    assert bad.status_code == 422
