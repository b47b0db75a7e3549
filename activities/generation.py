"""The `generate` activity: one chat completion from the provider the input names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.providers import ProviderError, get_provider
from core.schemas import GenerateInput, GenerateResult
from core.settings import Settings

T = TypeVar("T")


HEARTBEAT_EVERY_S = 1.0


async def _heartbeating(call: Awaitable[T]) -> T:
    """Awaits the call while heartbeating: a heartbeat is how a cancelled job's cancellation reaches
    this activity (and then, by closing the connection, the provider), and how a dead worker is
    noticed within the heartbeat timeout instead of the whole start-to-close timeout."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=HEARTBEAT_EVERY_S)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()


class GenerationActivities:
    """Activities get their settings from the worker that hosts them, never from globals."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="generate")
    async def generate(self, request: GenerateInput) -> GenerateResult:
        meter = activity.metric_meter()
        attrs = {"provider": request.provider}
        try:
            result = await _heartbeating(get_provider(request.provider)(request, self.settings))
        except ProviderError as exc:
            meter.create_counter("assistant_provider_errors", "Failed provider calls").add(
                1, {**attrs, "retryable": str(exc.retryable).lower()}
            )
            # The one place where provider errors become Temporal's: retryable or not, with the reason.
            raise ApplicationError(
                str(exc), {"status": exc.status}, type="ProviderError", non_retryable=not exc.retryable
            ) from exc
        meter.create_counter("assistant_provider_requests", "Successful provider calls").add(1, attrs)
        meter.create_histogram("assistant_provider_latency", "Provider call latency", "ms").record(
            int(result.latency_ms), attrs
        )
        return result
