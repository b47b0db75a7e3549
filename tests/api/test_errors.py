"""Every error, on every route, has one shape: {"error": {"code", "message", "details"?}}."""

from __future__ import annotations

import httpx


def assert_error_shape(body: dict) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "details"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_framework_errors_use_the_one_shape(api: httpx.AsyncClient, user_headers: dict) -> None:
    cases = [
        (await api.get("/no/such/route"), 404, "not_found"),
        (await api.delete("/auth/me", headers=user_headers), 405, "method_not_allowed"),
        (await api.post("/chat/", content=b"{", headers={**user_headers, "content-type": "application/json"}),
         422, "invalid_request"),
        (await api.get("/auth/me"), 401, "unauthorized"),
    ]  # fmt: skip
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert_error_shape(response.json())
        assert response.json()["error"]["code"] == code
