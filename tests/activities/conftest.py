"""Settings that send the provider activities to the session's fake servers (see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from tests.fakes.process import FakeServer


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
