"""One session fixture starts the real local stack on free ports: the Temporal dev server, the model
server on the small offline model, a worker and the API, each its own process as in production.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from temporalio.client import Client

from assistant.stack import Stack, stack_parts, temporal_dev_server_command
from core.settings import PROJECT_ROOT, Settings
from workers.main import connect

if TYPE_CHECKING:
    from tests.fakes.process import FakeServer

ADMIN_PASSWORD = "admin-password-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(condition: bool, reason: str) -> None:
    """Skip when a part is missing on a developer's machine; in CI (CI=true) the part must be there."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the project's own files must install and start it)")
    pytest.skip(reason)


SESSION_TOKEN_BUDGET = 100_000_000


def stack_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a stack on free ports whose state lives in var_dir."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("API_", "MODEL_SERVER_", "TEMPORAL_", "WORKER_", "DATABASE_", "VAULT_"))
    }
    env.update(
        VAR_DIR=str(var_dir),
        API_PORT=str(free_port()),
        MODEL_SERVER_PORT=str(free_port()),
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        TEMPORAL_UI_PORT=str(free_port()),
        WORKER_METRICS_PORT=str(free_port()),
        API_WORKER_METRICS_PORT=str(free_port()),
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        LOG_LEVEL="INFO",
        # The suite makes many requests per user and per admin within a minute: limits that never bind,
        # while the limiter still runs on every request; tests of the limits start stacks of their own.
        RATE_LIMIT_USER_REQUESTS="1000000",
        RATE_LIMIT_ADMIN_REQUESTS="1000000",
        RATE_LIMIT_LOGIN_IP_FAILURES="1000000",
        RATE_LIMIT_LOGIN_USERNAME_FAILURES="1000000",
        # Far past what any test spends, except the budget tests' users, who start close to it.
        TOKEN_BUDGET_USER_PER_DAY=str(SESSION_TOKEN_BUDGET),
        TOKEN_BUDGET_ADMIN_PER_DAY="0",
        **extra,
    )
    return env


def settings_for(env: dict[str, str]) -> Settings:
    """The settings the stack's processes will read from env."""
    return Settings(
        _env_file=None, **{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    )


@dataclass
class RunningStack:
    settings: Settings
    env: dict[str, str]
    stack: Stack
    logs: Path

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs.glob("*.log"))


def start_stack(var_dir: Path, env: dict[str, str], *, with_model_server: bool = True) -> RunningStack:
    settings = settings_for(env)
    subprocess.run(
        [sys.executable, "-m", "assistant", "db", "upgrade"], env=env, check=True, cwd=PROJECT_ROOT
    )
    parts = stack_parts(settings)
    # Tests keep Temporal's state in memory: faster, and nothing to clean up.
    parts[0].command = [*temporal_dev_server_command(settings, db_file=None), "--headless"]
    if not with_model_server:
        parts = [p for p in parts if p.name != "model-server"]
    logs = var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(parts, env=env, log_dir=logs)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return RunningStack(settings, env, stack, logs)


FAKES = ("openai", "gemini", "ollama")


@pytest.fixture(scope="session")
def fake_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FakeServer]]:
    """Fake OpenAI, Gemini and Ollama servers on loopback, each its own process, for the session."""
    from tests.fakes.process import FakeServer, start_fake  # it imports this module

    logs = tmp_path_factory.mktemp("fake-logs")
    started = []
    try:
        for name in FAKES:
            started.append((name, *start_fake(logs, f"{name}_server")))
        yield {name: FakeServer(url) for name, _, url in started}
    finally:
        for _, fake, _ in started:
            fake.stop()


def provider_env(fakes: dict[str, FakeServer]) -> dict[str, str]:
    """Settings that point the three remote providers at their fakes."""
    return {
        "OPENAI_API_KEY": "sk-test-key",
        "OPENAI_BASE_URL": f"{fakes['openai'].url}/v1",
        "GEMINI_API_KEY": "gemini-test-key",
        "GEMINI_BASE_URL": fakes["gemini"].url,
        "OLLAMA_BASE_URL": fakes["ollama"].url,
    }


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_servers: dict[str, FakeServer]
) -> Iterator[RunningStack]:
    """The whole stack, with the local model real and the remote providers faked on loopback."""
    var_dir = tmp_path_factory.mktemp("var")
    running = start_stack(var_dir, stack_env(var_dir, **provider_env(fake_servers)))
    yield running
    running.stack.stop()


@pytest.fixture
async def fakes(fake_servers: dict[str, FakeServer]) -> dict[str, FakeServer]:
    """The fakes with no queued faults and no recorded requests."""
    for fake in fake_servers.values():
        await fake.reset()
    return fake_servers


@pytest.fixture(scope="session")
async def temporal(stack: RunningStack) -> Client:
    return await connect(stack.settings)


@pytest.fixture(scope="session")
async def api(stack: RunningStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as client:
        yield client


async def login(api: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await api.post("/auth/login", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="session")
async def admin_headers(api: httpx.AsyncClient) -> dict[str, str]:
    return await login(api, "admin", ADMIN_PASSWORD)


_user_counter = iter(range(1, 1_000_000))


async def new_user(
    api: httpx.AsyncClient, admin_headers: dict[str, str], role: str = "user"
) -> tuple[dict, str]:
    """Registers a fresh user through the API; returns its auth headers and its username."""
    username = f"user{next(_user_counter)}-{os.getpid()}"
    password = f"{username}-password"
    response = await api.post(
        "/auth/register",
        json={"username": username, "password": password, "role": role},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    return await login(api, username, password), username


@pytest.fixture
async def user_headers(api: httpx.AsyncClient, admin_headers: dict[str, str]) -> dict[str, str]:
    headers, _ = await new_user(api, admin_headers)
    return headers
