"""The rate limiter with API keys: each key spends from a window of its own at the user limit, and the
budgeted routes check the daily token budget of the key's user. In process, on a SQLite database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.rate_limits import RateLimitMiddleware, RateLimits
from core.api_keys import hash_key, new_key
from core.db import create_engine, create_sessionmaker
from core.settings import Settings
from core.tables import ApiKey, Base, Completion, User

USER_LIMIT = 3
ADMIN_LIMIT = 100
BUDGET = 50


async def hello(_: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A limited app, and keys by name: an admin's, a user's two, and a user's whose budget is spent."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessions = create_sessionmaker(engine)
    keys = {name: new_key() for name in ("admin", "user-a", "user-b", "spent")}
    async with sessions() as session:
        admin = User(username="admin", password_hash="x", role="admin")
        user = User(username="user", password_hash="x")
        spender = User(username="spender", password_hash="x")
        session.add_all([admin, user, spender])
        await session.flush()
        owners = {"admin": admin, "user-a": user, "user-b": user, "spent": spender}
        for name, key in keys.items():
            session.add(ApiKey(user_id=owners[name].id, name=name, prefix=key[:10], key_hash=hash_key(key)))
        usage = {"total_tokens": BUDGET}
        session.add(
            Completion(job_id="j1", owner_id=spender.id, provider="local", model="m", text="t",
                       latency_ms=1.0, request={}, usage=usage)
        )  # fmt: skip
        await session.commit()

    settings = Settings(
        _env_file=None,
        rate_limit_user_requests=USER_LIMIT,
        rate_limit_admin_requests=ADMIN_LIMIT,
        token_budget_user_per_day=BUDGET,
        token_budget_admin_per_day=0,
    )
    app = Starlette(
        routes=[Route("/hello", hello), Route("/chat", hello, methods=["POST"])],
        middleware=[Middleware(RateLimitMiddleware, limits=RateLimits(settings))],
    )
    app.state.jwt_secret = "a secret no key is signed with"
    app.state.sessions = sessions
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http, keys
    await engine.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_each_key_has_its_own_window_at_the_user_limit(
    client: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    http, keys = client
    for _ in range(USER_LIMIT):
        response = await http.get("/hello", headers=bearer(keys["user-a"]))
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == str(USER_LIMIT)
    refused = await http.get("/hello", headers=bearer(keys["user-a"]))
    assert refused.status_code == 429
    # Another key, even of the same user, and anonymous callers count apart.
    assert (await http.get("/hello", headers=bearer(keys["user-b"]))).status_code == 200
    assert (await http.get("/hello")).status_code == 200
    # An admin's key gets the user limit too: the limiter does not look the key up to learn the role.
    admin = await http.get("/hello", headers=bearer(keys["admin"]))
    assert admin.headers["X-RateLimit-Limit"] == str(USER_LIMIT)


async def test_a_key_spends_its_users_daily_token_budget(
    client: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    http, keys = client
    refused = await http.post("/chat", headers=bearer(keys["spent"]))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert (await http.post("/chat", headers=bearer(keys["user-a"]))).status_code == 200
    # An unknown key is the route's to refuse.
    assert (await http.post("/chat", headers=bearer(new_key()))).status_code == 200
