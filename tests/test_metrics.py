"""/metrics on the API and the worker (the model server's is tested with it)."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import RunningStack


async def test_metrics_are_served_by_the_api_and_the_worker(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack
) -> None:
    chat = await api.post("/chat/", json={"prompt": "hi", "max_tokens": 4}, headers=user_headers)
    assert chat.status_code == 200
    # The request's metrics are recorded once its response has gone out: a moment after we read it.
    for _ in range(50):
        api_metrics = (await api.get("/metrics")).text
        if 'handler="/chat/"' in api_metrics:
            break
        await asyncio.sleep(0.1)
    assert 'handler="/chat/"' in api_metrics and "http_requests_total" in api_metrics
    ports = (stack.settings.worker_metrics_port, stack.settings.api_worker_metrics_port)
    async with httpx.AsyncClient() as client:
        workers = [(await client.get(f"http://127.0.0.1:{port}/metrics")).text for port in ports]
    # Each worker (the worker process, and the API's own of the chat fast path) serves the
    # Temporal SDK's metrics and ours on one endpoint; the chat ran on one of them.
    assert all("temporal_request" in text for text in workers)
    assert any("temporal_workflow_completed" in text for text in workers)
    assert any("assistant_provider_requests{" in text and 'provider="local"' in text for text in workers)
