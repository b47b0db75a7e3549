"""Login, registration and the checks every authenticated request goes through."""

from __future__ import annotations

import base64
import json

import httpx
import jwt
from sqlalchemy import update

from core.db import create_engine
from core.security import create_access_token
from core.tables import User
from tests.conftest import ADMIN_PASSWORD, RunningStack, new_user


async def test_login_accepts_the_oauth2_form_and_json(api: httpx.AsyncClient) -> None:
    form = await api.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    as_json = await api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    for response in (form, as_json):
        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "bearer"
        me = await api.get("/auth/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"})
        assert me.json()["username"] == "admin" and me.json()["role"] == "admin"


async def test_wrong_password_and_unknown_user_get_the_same_401(api: httpx.AsyncClient) -> None:
    wrong = await api.post("/auth/login", data={"username": "admin", "password": "not-it"})
    unknown = await api.post("/auth/login", data={"username": "nobody-here", "password": "not-it"})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json() == {
            "error": {"code": "invalid_credentials", "message": "wrong username or password"}
        }


async def test_login_without_fields_is_a_422_with_a_message(api: httpx.AsyncClient) -> None:
    response = await api.post("/auth/login", json={"username": "admin"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    broken = await api.post("/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422


async def test_register_is_for_admins_only(api: httpx.AsyncClient, admin_headers: dict) -> None:
    user, _ = await new_user(api, admin_headers)
    body = {"username": "would-be-user", "password": "long-enough-password"}
    assert (await api.post("/auth/register", json=body)).status_code == 401
    forbidden = await api.post("/auth/register", json=body, headers=user)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"


async def test_register_refuses_a_taken_username_and_a_weak_password(
    api: httpx.AsyncClient, admin_headers: dict
) -> None:
    _, username = await new_user(api, admin_headers)
    taken = await api.post("/auth/register", json={"username": username, "password": "another-password"},
                           headers=admin_headers)  # fmt: skip
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "username_taken"
    weak = await api.post(
        "/auth/register", json={"username": "weakling", "password": "short"}, headers=admin_headers
    )
    assert weak.status_code == 422
    assert "password" in weak.json()["error"]["message"]


async def test_registered_user_logs_in_with_the_user_role(
    api: httpx.AsyncClient, admin_headers: dict
) -> None:
    headers, username = await new_user(api, admin_headers)
    me = (await api.get("/auth/me", headers=headers)).json()
    assert me["username"] == username and me["role"] == "user" and me["is_active"] is True


def _forge(claims: dict, secret: str, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


async def test_tokens_that_must_not_work(
    api: httpx.AsyncClient, admin_headers: dict, stack: RunningStack
) -> None:
    secret = stack.settings.secret_value("jwt_secret")
    me = (await api.get("/auth/me", headers=admin_headers)).json()
    unsigned_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(
        b"="
    )
    unsigned_claims = base64.urlsafe_b64encode(
        json.dumps({"sub": str(me["id"]), "role": "admin", "exp": 9999999999}).encode()
    ).rstrip(b"=")
    valid = create_access_token(me["id"], "admin", secret, 5)
    bad_tokens = {
        "alg none": f"{unsigned_header.decode()}.{unsigned_claims.decode()}.",
        "tampered signature": valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB"),
        "other secret": create_access_token(
            me["id"], "admin", "some-other-secret-that-is-long-enough-for-hs256", 5
        ),
        "expired": create_access_token(me["id"], "admin", secret, -1),
        "no such user": create_access_token(10_000_000, "admin", secret, 5),
        "garbage": "not-a-token",
    }
    for name, token in bad_tokens.items():
        response = await api.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthorized", name
        assert response.headers["www-authenticate"] == "Bearer", name
    assert (await api.get("/auth/me", headers={"Authorization": f"Bearer {valid}"})).status_code == 200


async def test_role_claim_must_match_the_database(
    api: httpx.AsyncClient, admin_headers: dict, stack: RunningStack
) -> None:
    headers, _ = await new_user(api, admin_headers)
    me = (await api.get("/auth/me", headers=headers)).json()
    forged_admin = create_access_token(me["id"], "admin", stack.settings.secret_value("jwt_secret"), 5)
    response = await api.post(
        "/auth/register",
        json={"username": "made-by-forgery", "password": "long-enough-password"},
        headers={"Authorization": f"Bearer {forged_admin}"},
    )
    assert response.status_code == 401


async def test_deactivated_user_is_refused_at_once(
    api: httpx.AsyncClient, admin_headers: dict, stack: RunningStack
) -> None:
    headers, username = await new_user(api, admin_headers)
    assert (await api.get("/auth/me", headers=headers)).status_code == 200
    engine = create_engine(stack.settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.username == username).values(is_active=False))
    await engine.dispose()
    assert (await api.get("/auth/me", headers=headers)).status_code == 401
    refused = await api.post("/auth/login", data={"username": username, "password": f"{username}-password"})
    assert refused.status_code == 401


async def test_every_authenticated_route_refuses_anonymous_callers(api: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/auth/me"),
        ("POST", "/chat/"),
        ("POST", "/chat/async"),
        ("GET", "/inference/x"),
    ):
        response = await api.request(method, path, json={"prompt": "hi"})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized", path
