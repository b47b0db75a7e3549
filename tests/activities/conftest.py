"""Fake OpenAI, Gemini and Ollama servers on loopback, each its own process, for the provider tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.fakes.process import FakeServer, start_fake

FAKES = ("openai", "gemini", "ollama")


@pytest.fixture(scope="session")
def fake_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FakeServer]]:
    logs = tmp_path_factory.mktemp("fake-logs")
    started = []
    try:
        for name in FAKES:
            started.append((name, *start_fake(logs, f"{name}_server")))
        yield {name: FakeServer(url) for name, _, url in started}
    finally:
        for _, stack, _ in started:
            stack.stop()


@pytest.fixture
async def fakes(fake_servers: dict[str, FakeServer]) -> dict[str, FakeServer]:
    """The fakes with no queued faults and no recorded requests."""
    for fake in fake_servers.values():
        await fake.reset()
    return fake_servers


def settings_for_fakes(fakes: dict[str, FakeServer], tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "var_dir": tmp_path,
        "openai_api_key": "sk-test-key",
        "openai_base_url": f"{fakes['openai'].url}/v1",
        "gemini_api_key": "gemini-test-key",
        "gemini_base_url": fakes["gemini"].url,
        "ollama_base_url": fakes["ollama"].url,
        "provider_timeout_s": 10.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(fakes: dict[str, FakeServer], tmp_path: Path) -> Settings:
    return settings_for_fakes(fakes, tmp_path)
