"""GET /admin/audit-events refuses numbers the database cannot hold instead of failing on them."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("param", ["offset", "actor_id"])
async def test_a_number_beyond_64_bits_is_refused_not_an_error(
    api: httpx.AsyncClient, admin_headers: dict, param: str
) -> None:
    response = await api.get("/admin/audit-events", params={param: 2**63}, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == f"query.{param}"
    largest = await api.get("/admin/audit-events", params={param: 2**63 - 1}, headers=admin_headers)
    assert largest.status_code == 200
    assert largest.json()["events"] == []
