"""Rate limits and daily token budgets on stacks of their own with small limits (the session stack's
never bind). All requests come from loopback; tests that must not share a client address's login
window connect from other loopback addresses (127.0.0.0/8 all reaches the server on 127.0.0.1)."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.rate_limits import RateLimitMiddleware, RateLimits
from assistant.stack import Part, Stack, http_ok
from core.db import create_engine, create_sessionmaker
from core.settings import Settings
from core.tables import Completion
from tests.conftest import ADMIN_PASSWORD, RunningStack, free_port, login, new_user, stack_env, start_stack
from tests.redis import running_redis

USER_LIMIT = 5
ADMIN_LIMIT = 15  # the first admin also registers every user of this module within the window
USERNAME_FAILURES = 3
ADDRESS_FAILURES = 6
TOKEN_BUDGET = 100

LIMITS = {
    "RATE_LIMIT_USER_REQUESTS": str(USER_LIMIT),
    "RATE_LIMIT_ADMIN_REQUESTS": str(ADMIN_LIMIT),
    "RATE_LIMIT_WINDOW": "60",
    "RATE_LIMIT_LOGIN_IP_FAILURES": str(ADDRESS_FAILURES),
    "RATE_LIMIT_LOGIN_USERNAME_FAILURES": str(USERNAME_FAILURES),
    "RATE_LIMIT_LOGIN_WINDOW": "300",
    "TOKEN_BUDGET_USER_PER_DAY": str(TOKEN_BUDGET),
    "TOKEN_BUDGET_ADMIN_PER_DAY": "0",
}


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    var_dir = tmp_path_factory.mktemp("limited")
    env = stack_env(var_dir)
    env.update(LIMITS)  # after stack_env: its own generous limits are what these override
    running = start_stack(var_dir, env)
    yield running
    running.stack.stop()


@pytest.fixture(scope="module")
async def limited(limited_stack: RunningStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited_stack.api_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
async def limited_admin(limited: httpx.AsyncClient) -> dict[str, str]:
    return await login(limited, "admin", ADMIN_PASSWORD)


def client_from(stack: RunningStack, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=stack.api_url, transport=transport, timeout=60)


def assert_rate_headers(response: httpx.Response, limit: int, remaining: int) -> None:
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == str(remaining)
    assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())


async def test_user_over_the_limit_gets_429_and_another_user_is_unaffected(
    limited: httpx.AsyncClient, limited_admin: dict[str, str]
) -> None:
    heavy, _ = await new_user(limited, limited_admin)
    other, _ = await new_user(limited, limited_admin)
    for spent in range(1, USER_LIMIT + 1):
        response = await limited.get("/auth/me", headers=heavy)
        assert response.status_code == 200, response.text
        assert_rate_headers(response, USER_LIMIT, USER_LIMIT - spent)

    refused = await limited.get("/auth/me", headers=heavy)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert_rate_headers(refused, USER_LIMIT, 0)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60

    response = await limited.get("/auth/me", headers=other)
    assert response.status_code == 200
    assert_rate_headers(response, USER_LIMIT, USER_LIMIT - 1)


async def test_heavier_routes_cost_more(limited: httpx.AsyncClient, limited_admin: dict[str, str]) -> None:
    headers, _ = await new_user(limited, limited_admin)
    # A RAG question costs 3 (the body is invalid: the limiter counts before the route reads it).
    response = await limited.post("/chat/rag", json={}, headers=headers)
    assert response.status_code == 422
    assert_rate_headers(response, USER_LIMIT, USER_LIMIT - 3)
    response = await limited.post("/chat/rag", json={}, headers=headers)
    assert response.status_code == 429  # 2 left, 3 needed
    response = await limited.get("/auth/me", headers=headers)
    assert response.status_code == 200
    assert_rate_headers(response, USER_LIMIT, 1)


async def test_admins_get_the_higher_limit(limited: httpx.AsyncClient, limited_admin: dict[str, str]) -> None:
    _, username = await new_user(limited, limited_admin, role="admin")
    admin = await login(limited, username, f"{username}-password")
    for _ in range(ADMIN_LIMIT):
        response = await limited.get("/auth/me", headers=admin)
        assert response.status_code == 200
    assert_rate_headers(response, ADMIN_LIMIT, 0)
    assert (await limited.get("/auth/me", headers=admin)).status_code == 429


async def test_login_is_locked_per_username_before_the_password_is_checked(
    limited_stack: RunningStack, limited: httpx.AsyncClient, limited_admin: dict[str, str]
) -> None:
    _, username = await new_user(limited, limited_admin)
    async with client_from(limited_stack, "127.0.0.2") as attacker:
        for attempt in range(1, USERNAME_FAILURES + 1):
            response = await attacker.post("/auth/login", data={"username": username, "password": "guess"})
            assert response.status_code == 401
            assert_rate_headers(response, USERNAME_FAILURES, USERNAME_FAILURES - attempt)
        # Locked: even the right password is refused, from any address, without being checked.
        right = {"username": username, "password": f"{username}-password"}
        refused = await attacker.post("/auth/login", json=right)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
    async with client_from(limited_stack, "127.0.0.3") as elsewhere:
        assert (await elsewhere.post("/auth/login", data=right)).status_code == 429
    # Another username from the attacker's address is still free: its address has failures to spare.
    _, other = await new_user(limited, limited_admin)
    async with client_from(limited_stack, "127.0.0.2") as attacker:
        response = await attacker.post(
            "/auth/login", data={"username": other, "password": f"{other}-password"}
        )
        assert response.status_code == 200


async def test_login_is_locked_per_client_address(limited_stack: RunningStack) -> None:
    async with client_from(limited_stack, "127.0.0.4") as attacker:
        # Spraying one password over many usernames: each username fails once, the address every time.
        for attempt in range(ADDRESS_FAILURES):
            response = await attacker.post(
                "/auth/login", data={"username": f"spray{attempt}", "password": "x"}
            )
            assert response.status_code == 401
        refused = await attacker.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
    # The admin's own address is another window.
    async with client_from(limited_stack, "127.0.0.5") as admin:
        response = await admin.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert response.status_code == 200


async def _record_usage(stack: RunningStack, owner_id: int, tokens: int) -> None:
    """A completion as the chat workflow saves it, with the given usage, made today."""
    engine = create_engine(stack.settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            session.add(
                Completion(
                    job_id=f"usage-{owner_id}-{time.time_ns()}",
                    owner_id=owner_id,
                    provider="local",
                    model="SmolLM2-135M-Instruct",
                    text="",
                    latency_ms=1.0,
                    request={},
                    usage={"prompt_tokens": tokens // 2, "completion_tokens": tokens - tokens // 2,
                           "total_tokens": tokens},
                )
            )  # fmt: skip
            await session.commit()
    finally:
        await engine.dispose()


async def test_chat_is_refused_once_the_daily_token_budget_is_spent(
    limited_stack: RunningStack, limited: httpx.AsyncClient, limited_admin: dict[str, str]
) -> None:
    headers, _ = await new_user(limited, limited_admin)
    me = (await limited.get("/auth/me", headers=headers)).json()
    await _record_usage(limited_stack, me["id"], TOKEN_BUDGET - 1)
    # Under budget: the request reaches the route (which rejects the empty body).
    assert (await limited.post("/chat/", json={}, headers=headers)).status_code == 422

    await _record_usage(limited_stack, me["id"], 1)
    refused = await limited.post(
        "/chat/", json={"messages": [{"role": "user", "content": "hi"}]}, headers=headers
    )
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"]["budget"] == TOKEN_BUDGET and error["details"]["used"] == TOKEN_BUDGET
    assert error["details"]["resets_at"].endswith("T00:00:00+00:00")
    assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    refused = await limited.post("/chat/async", json={}, headers=headers)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    # Routes that start no model call still answer.
    assert (await limited.get("/auth/me", headers=headers)).status_code == 200


async def test_probes_metrics_docs_and_stream_deliveries_are_exempt(
    limited: httpx.AsyncClient, limited_admin: dict[str, str]
) -> None:
    headers, _ = await new_user(limited, limited_admin)
    for _ in range(USER_LIMIT):
        await limited.get("/auth/me", headers=headers)
    assert (await limited.get("/auth/me", headers=headers)).status_code == 429
    for path in ("/health", "/metrics", "/docs", "/openapi.json"):
        response = await limited.get(path, headers=headers)
        assert response.status_code in (200, 503), (path, response.status_code)
        assert "X-RateLimit-Limit" not in response.headers
    response = await limited.post("/internal/streams/no-such-job", json={}, headers=headers)
    assert response.status_code != 429
    assert "X-RateLimit-Limit" not in response.headers


def _second_api(stack: RunningStack, var_dir: Path) -> tuple[Stack, str]:
    """Another API process on its own port and state directory, against the same Temporal and database."""
    env = {
        **stack.env,
        "VAR_DIR": str(var_dir),
        "API_PORT": str(free_port()),
        "API_WORKER_METRICS_PORT": "0",
        "DATABASE_URL": stack.settings.database_url,
        # Tokens from either process must be valid in both: the first one generated the secret.
        "JWT_SECRET": (stack.settings.var_dir / "jwt_secret").read_text().strip(),
        # The vector store is this process's own: keep the first process's ingestion queue to itself.
        "VECTOR_TASK_QUEUE": "ai-assistant-vectors-second-api",
    }
    url = f"http://127.0.0.1:{env['API_PORT']}"
    part = Part("api-2", [sys.executable, "-m", "assistant", "api"], http_ok(f"{url}/health"))
    second = Stack([part], env=env, log_dir=stack.logs)
    try:
        second.start()
    except BaseException:
        second.stop()
        raise
    return second, url


async def test_two_api_processes_share_one_budget_through_redis(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_redis() as redis_url:
        var_dir = tmp_path_factory.mktemp("shared")
        env = stack_env(var_dir)
        env.update(LIMITS, REDIS_URL=redis_url)
        first = start_stack(var_dir, env)
        try:
            second, second_url = _second_api(first, tmp_path_factory.mktemp("second-api"))
            try:
                async with (
                    httpx.AsyncClient(base_url=first.api_url, timeout=60) as one,
                    httpx.AsyncClient(base_url=second_url, timeout=60) as two,
                ):
                    admin = await login(one, "admin", ADMIN_PASSWORD)
                    headers, _ = await new_user(one, admin)
                    for _ in range(3):
                        assert (await one.get("/auth/me", headers=headers)).status_code == 200
                    response = await two.get("/auth/me", headers=headers)
                    assert response.status_code == 200
                    assert_rate_headers(response, USER_LIMIT, USER_LIMIT - 4)
                    assert (await two.get("/auth/me", headers=headers)).status_code == 200
                    assert (await two.get("/auth/me", headers=headers)).status_code == 429
                    assert (await one.get("/auth/me", headers=headers)).status_code == 429
            finally:
                second.stop()
        finally:
            first.stack.stop()


async def test_requests_are_refused_while_the_shared_storage_is_unreachable() -> None:
    async def hello(_: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    # Nothing listens on port 1: every storage call fails to connect.
    limits = RateLimits(Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0"))
    app = Starlette(
        routes=[Route("/hello", hello), Route("/health", hello)],
        middleware=[Middleware(RateLimitMiddleware, limits=limits)],
    )
    app.state.jwt_secret = "not used: no token is sent"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        refused = await client.get("/hello")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "rate_limiter_unavailable"
        assert (await client.get("/health")).status_code == 200
