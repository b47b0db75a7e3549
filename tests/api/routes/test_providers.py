"""GET /providers: which providers are configured, their models, and whether each answers."""

from __future__ import annotations

import httpx


async def test_providers_lists_each_with_its_state(api: httpx.AsyncClient, user_headers: dict) -> None:
    response = await api.get("/providers", headers=user_headers)
    assert response.status_code == 200
    by_name = {p["name"]: p for p in response.json()}
    assert set(by_name) == {"local", "openai", "gemini", "ollama"}
    local = by_name["local"]
    assert local["configured"] and local["reachable"]
    assert local["default_model"] == "SmolLM2-135M-Instruct" and "SmolLM2-135M-Instruct" in local["models"]
    # No keys in the test stack: configured is false and the reason says so.
    assert not by_name["openai"]["configured"] and "not configured" in by_name["openai"]["error"]
    # Ollama needs no key, but nothing listens on its default port here.
    assert by_name["ollama"]["configured"] and not by_name["ollama"]["reachable"]
    assert (await api.get("/providers")).status_code == 401
