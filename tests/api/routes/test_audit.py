"""GET /admin/audit-events refuses numbers and times the database cannot hold instead of failing on them."""

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


@pytest.mark.parametrize(
    ("param", "instant"), [("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:59:00-05:00")]
)
async def test_a_time_outside_utcs_years_is_refused_not_an_error(
    api: httpx.AsyncClient, admin_headers: dict, param: str, instant: str
) -> None:
    response = await api.get("/admin/audit-events", params={param: instant}, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == f"query.{param}"
