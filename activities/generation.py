"""The `generate` activity: one chat completion from the provider the input names, whole or streamed
to the API process that holds the client's stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.providers import Provider, ProviderError, get_provider
from core.schemas import GenerateInput, GenerateResult, StreamBatch
from core.security import STREAM_SIGNATURE_HEADER, stream_signature
from core.settings import Settings

T = TypeVar("T")

HEARTBEAT_EVERY_S = 1.0
STREAM_POST_TIMEOUT_S = 5.0


async def _heartbeating(call: Awaitable[T]) -> T:
    """Awaits the call while heartbeating: a heartbeat is how a cancelled job's cancellation reaches
    this activity (and then, by closing the connection, the provider), and how a dead worker is
    noticed within the heartbeat timeout instead of the whole start-to-close timeout.
    A local activity has no heartbeats: its workflow task stands for it."""
    if activity.info().is_local:
        return await call
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
        # One connection pool for every stream this worker delivers.
        self._stream_client: httpx.AsyncClient | None = None

    @activity.defn(name="generate")
    async def generate(self, request: GenerateInput) -> GenerateResult:
        meter = activity.metric_meter()
        try:
            provider = get_provider(request.provider)
            attrs = {
                "provider": provider.name,
                "model": request.model or provider.default_model(self.settings),
            }
            call = (
                self._stream(provider, request)
                if request.stream_to
                else provider.generate(request, self.settings)
            )
            result = await _heartbeating(call)
        except ProviderError as exc:
            kind = "retryable" if exc.retryable else "refused"
            meter.create_counter("assistant_provider_errors", "Failed provider calls").add(
                1, {"provider": request.provider, "model": request.model or "", "kind": kind,
                    "status": str(exc.status or "")},
            )  # fmt: skip
            # The one place where provider errors become Temporal's: retryable or not, with the reason;
            # a provider's Retry-After becomes the next attempt's delay.
            raise ApplicationError(
                str(exc),
                {"status": exc.status},
                type="ProviderError",
                non_retryable=not exc.retryable,
                next_retry_delay=_delay(exc.retry_after_s),
            ) from exc
        attrs["model"] = result.model
        meter.create_counter("assistant_provider_requests", "Answered provider calls").add(1, attrs)
        meter.create_histogram("assistant_provider_latency", "Provider call latency", "ms").record(
            int(result.latency_ms), attrs
        )
        meter.create_counter("assistant_tokens_in", "Prompt tokens", "tokens").add(
            result.usage.prompt_tokens, attrs
        )
        meter.create_counter("assistant_tokens_out", "Completion tokens", "tokens").add(
            result.usage.completion_tokens, attrs
        )
        return result

    async def _stream(self, provider: Provider, request: GenerateInput) -> GenerateResult:
        """Streams from the provider and posts each delta to the client's API process. The job does
        not depend on the client: once nobody listens, deltas are no longer posted, the answer goes on."""
        info = activity.info()
        batch_key = f"{info.activity_id}:{info.attempt}"
        headers = {
            STREAM_SIGNATURE_HEADER: stream_signature(
                self.settings.secret_value("jwt_secret"), info.workflow_id
            )
        }
        if self._stream_client is None:
            self._stream_client = httpx.AsyncClient(timeout=STREAM_POST_TIMEOUT_S)
        listening = True
        async for item in provider.stream(request, self.settings):
            if isinstance(item, GenerateResult):
                return item
            if not listening or not item:
                continue
            batch = StreamBatch(attempt=batch_key, provider=provider.name, deltas=[item])
            try:
                response = await self._stream_client.post(
                    request.stream_to or "", content=batch.model_dump_json(),
                    headers={**headers, "content-type": "application/json"},
                )  # fmt: skip
                listening = response.status_code == 204
            except httpx.HTTPError:
                listening = False
        raise ProviderError(provider.name, "the stream ended without an answer", retryable=True)


def _delay(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds else None
