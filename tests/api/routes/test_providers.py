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
    # The test stack points the remote providers at their fakes on loopback (tests/conftest.py);
    # a provider without its key is covered in tests/activities/test_providers.py.
    for name in ("openai", "gemini", "ollama"):
        assert by_name[name]["configured"] and by_name[name]["reachable"], by_name[name]
        assert by_name[name]["models"], by_name[name]
    assert (await api.get("/providers")).status_code == 401
