"""The `generate` activity: one chat completion from the provider the input names, whole or streamed
to the API process that holds the client's stream, screened by the output guard on the way
(core/output_screen.py): a blocked answer ends the activity with a non-retryable OutputBlocked and a
security event, and a stream stops before the blocked text is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.guard import record_in_job
from activities.providers import Provider, ProviderError, get_provider
from core.guard import get_guard
from core.output_screen import OutputBlocked, OutputScreen
from core.schemas import GenerateInput, GenerateResult, GuardVerdict, StreamBatch
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

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions  # for the security event of a blocked answer
        # One connection pool for every stream this worker delivers.
        self._stream_client: httpx.AsyncClient | None = None

    @activity.defn(name="generate")
    async def generate(self, request: GenerateInput) -> GenerateResult:
        meter = activity.metric_meter()
        screen = OutputScreen(
            get_guard(),
            system_prompt="\n".join(m.content for m in request.messages if m.role == "system") or None,
            max_chars=self.settings.max_response_length,
        )
        try:
            provider = get_provider(request.provider)
            attrs = {
                "provider": provider.name,
                "model": request.model or provider.default_model(self.settings),
            }
            if request.stream_to:
                result = await _heartbeating(self._stream(provider, request, screen))
            else:
                result = await _heartbeating(provider.generate(request, self.settings))
                screen.check_whole(result.text)
        except OutputBlocked as blocked:
            verdict = GuardVerdict(allowed=False, score=blocked.score, reasons=blocked.reasons)
            await record_in_job(self.sessions, request.owner, "output", [(blocked.excerpt, verdict)])
            meter.create_counter("assistant_security_events", "Security events by reason").add(
                1, {"kind": "output", "reason": blocked.reasons[0]}
            )
            raise ApplicationError(
                str(blocked),
                {"reasons": blocked.reasons, "score": blocked.score},
                type="OutputBlocked",
                non_retryable=True,
            ) from None
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

    async def _stream(
        self, provider: Provider, request: GenerateInput, screen: OutputScreen
    ) -> GenerateResult:
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

        async def deliver(text: str) -> None:
            nonlocal listening
            if not listening or not text:
                return
            batch = StreamBatch(attempt=batch_key, provider=provider.name, deltas=[text])
            try:
                response = await self._stream_client.post(  # type: ignore[union-attr]
                    request.stream_to or "", content=batch.model_dump_json(),
                    headers={**headers, "content-type": "application/json"},
                )  # fmt: skip
                listening = response.status_code == 204
            except httpx.HTTPError:
                listening = False

        async for item in provider.stream(request, self.settings):
            if isinstance(item, GenerateResult):
                # What the screen still held back (the start of a phrase that never came) goes out last.
                await deliver(screen.finish())
                return item
            if item:
                await deliver(screen.feed(item))
        raise ProviderError(provider.name, "the stream ended without an answer", retryable=True)


def _delay(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds else None
