"""API keys against the real stack: shown once, usable by the openai SDK, scoped, revocable, audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import openai
from sqlalchemy import update

from core.db import create_engine
from core.tables import ApiKey
from tests.conftest import RunningStack, new_user


async def create_key(api: httpx.AsyncClient, headers: dict, **body: object) -> dict:
    response = await api.post("/auth/keys", json={"name": "script", **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_key_is_shown_once_and_listed_without_its_secret(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    created = await create_key(api, user_headers, name="laptop", expires_in_days=30)
    secret = created["key"]
    assert secret.startswith("ak-") and len(secret) >= 40
    assert created["prefix"] == secret[: len(created["prefix"])] and len(created["prefix"]) < 16
    assert created["scopes"] == ["all"] and created["revoked"] is False
    assert created["expires_at"] is not None

    listing = await api.get("/auth/keys", headers=user_headers)
    assert listing.status_code == 200
    [listed] = listing.json()
    assert listed["id"] == created["id"] and listed["name"] == "laptop"
    assert "key" not in listed and secret not in listing.text

    me = await api.get("/auth/me", headers=bearer(secret))
    assert me.status_code == 200
    # The first use is recorded.
    [listed] = (await api.get("/auth/keys", headers=user_headers)).json()
    assert listed["last_used_at"] is not None


async def test_the_openai_sdk_works_with_a_key(
    stack: RunningStack, api: httpx.AsyncClient, user_headers: dict
) -> None:
    key = (await create_key(api, user_headers, scopes=["chat"]))["key"]
    sdk = openai.AsyncOpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0, timeout=120)
    completion = await sdk.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0
    )
    assert completion.choices[0].message.content
    models = await sdk.models.list()
    assert "local/SmolLM2-135M-Instruct" in [m.id for m in models.data]
    # A chat key reads its own job back.
    job = await api.get(f"/inference/{completion.id}", headers=bearer(key))
    assert job.status_code == 200 and job.json()["status"] == "completed"


async def test_revoked_and_expired_keys_get_401(
    stack: RunningStack, api: httpx.AsyncClient, user_headers: dict
) -> None:
    revoked = await create_key(api, user_headers)
    assert (await api.get("/auth/me", headers=bearer(revoked["key"]))).status_code == 200
    assert (await api.delete(f"/auth/keys/{revoked['id']}", headers=user_headers)).status_code == 204
    response = await api.get("/auth/me", headers=bearer(revoked["key"]))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    [listed] = [
        k for k in (await api.get("/auth/keys", headers=user_headers)).json() if k["id"] == revoked["id"]
    ]
    assert listed["revoked"] is True

    expired = await create_key(api, user_headers, expires_in_days=1)
    engine = create_engine(stack.settings.database_url)
    async with engine.begin() as connection:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await connection.execute(update(ApiKey).where(ApiKey.id == expired["id"]).values(expires_at=past))
    await engine.dispose()
    response = await api.get("/auth/me", headers=bearer(expired["key"]))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"

    assert (await api.get("/auth/me", headers=bearer("ak-" + "x" * 43))).status_code == 401


async def test_a_chat_key_chats_but_cannot_upload(api: httpx.AsyncClient, user_headers: dict) -> None:
    key = (await create_key(api, user_headers, scopes=["chat"]))["key"]
    upload = await api.post("/documents", files={"file": ("a.txt", b"some text")}, headers=bearer(key))
    assert upload.status_code == 403
    assert upload.json()["error"]["code"] == "insufficient_scope"
    assert (await api.get("/auth/me", headers=bearer(key))).status_code == 403

    chat = await api.post("/chat/", json={"prompt": "Say hi.", "max_tokens": 8}, headers=bearer(key))
    assert chat.status_code == 200, chat.text
    assert chat.json()["text"]


async def test_keys_cannot_mint_keys(api: httpx.AsyncClient, user_headers: dict) -> None:
    for scopes in (["all"], ["chat"]):
        key = (await create_key(api, user_headers, scopes=scopes))["key"]
        response = await api.post("/auth/keys", json={"name": "child"}, headers=bearer(key))
        assert response.status_code == 403, scopes
        assert response.json()["error"]["code"] == "insufficient_scope"


async def test_another_users_key_is_404_and_stays_valid(
    api: httpx.AsyncClient, admin_headers: dict, user_headers: dict
) -> None:
    other_headers, _ = await new_user(api, admin_headers)
    theirs = await create_key(api, other_headers)
    response = await api.delete(f"/auth/keys/{theirs['id']}", headers=user_headers)
    assert response.status_code == 404
    assert (await api.delete("/auth/keys/999999999", headers=user_headers)).status_code == 404
    assert (await api.get("/auth/me", headers=bearer(theirs["key"]))).status_code == 200


async def test_an_admin_revocation_is_in_the_audit_log(
    api: httpx.AsyncClient, admin_headers: dict, user_headers: dict
) -> None:
    key = await create_key(api, user_headers, name="leaked")
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert (await api.delete(f"/auth/keys/{key['id']}", headers=admin_headers)).status_code == 204
    assert (await api.get("/auth/me", headers=bearer(key["key"]))).status_code == 401

    admin_id = (await api.get("/auth/me", headers=admin_headers)).json()["id"]
    params = {"action": "api_key.revoke", "actor_id": admin_id, "since": before.isoformat(), "limit": 200}
    response = await api.get("/admin/audit-events", params=params, headers=admin_headers)
    assert response.status_code == 200, response.text
    page = response.json()
    [event] = [e for e in page["events"] if e["target"] == str(key["id"])]
    assert event["actor_id"] == admin_id and event["details"]["name"] == "leaked"
    assert page["total"] >= 1

    # Filters narrow: nothing from before the time window, one per page.
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await api.get("/admin/audit-events", params={"since": future}, headers=admin_headers)
    assert later.json() == {"events": [], "total": 0}
    one = (await api.get("/admin/audit-events", params={"limit": 1}, headers=admin_headers)).json()
    assert len(one["events"]) == 1

    refused = await api.get("/admin/audit-events", headers=user_headers)
    assert refused.status_code == 403


async def test_registering_a_user_is_audited(api: httpx.AsyncClient, admin_headers: dict) -> None:
    _, username = await new_user(api, admin_headers)
    params = {"action": "user.register", "limit": 200}
    events = (await api.get("/admin/audit-events", params=params, headers=admin_headers)).json()["events"]
    assert any(e["details"]["username"] == username for e in events)


async def test_a_key_id_beyond_64_bits_is_refused_not_an_error(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    response = await api.delete("/auth/keys/479260550022572848185344", headers=user_headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"]
