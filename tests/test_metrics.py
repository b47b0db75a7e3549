"""/metrics on the API and the worker (the model server's is tested with it)."""

from __future__ import annotations

import httpx

from tests.conftest import RunningStack


async def test_metrics_are_served_by_the_api_and_the_worker(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack
) -> None:
    chat = await api.post("/chat/", json={"prompt": "hi", "max_tokens": 4}, headers=user_headers)
    assert chat.status_code == 200
    api_metrics = (await api.get("/metrics")).text
    assert 'handler="/chat/"' in api_metrics and "http_requests_total" in api_metrics
    async with httpx.AsyncClient() as client:
        worker = (await client.get(f"http://127.0.0.1:{stack.settings.worker_metrics_port}/metrics")).text
    # The Temporal SDK's own metrics and ours, on one endpoint.
    assert "temporal_workflow_completed" in worker
    assert "assistant_provider_requests{" in worker and 'provider="local"' in worker
