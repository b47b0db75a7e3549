"""Chat providers: one module each, all registered in one registry by name.

A provider turns a GenerateInput into a GenerateResult (or streams it), and raises ProviderError for
every failure, saying whether trying again can help. Retrying itself is Temporal's job, never the
provider's: every SDK is built with its own retries off.

Adding a provider is one new module that calls `register(Provider(...))` and one import line at the
bottom of this file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from core.schemas import GenerateInput, GenerateResult, GenerationParams
from core.settings import Settings
from core.token_budget import with_usage


class ProviderError(Exception):
    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.retryable = retryable
        self.status = status
        # What the provider asked for in Retry-After (429/503), for the retry's next delay.
        self.retry_after_s = retry_after_s


# Statuses where the same request may succeed later: timeout, conflict, rate limit (and every 5xx).
_RETRYABLE_STATUSES = frozenset({408, 409, 429})


def status_error(
    provider: str, status: int, message: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The one rule for HTTP statuses, whatever the wire format: 408/409/429/5xx retryable, other 4xx
    (bad key, unknown model, invalid request) not; the provider's own message is kept."""
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    return ProviderError(
        provider,
        f"HTTP {status}: {message}",
        retryable=retryable,
        status=status,
        retry_after_s=_retry_after(headers),
    )


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare from APIs; the retry policy's own backoff applies
        return None


def stream_ended_early(provider: str) -> ProviderError:
    # The connection closed cleanly but before the provider's end marker: the answer is incomplete.
    return ProviderError(provider, "the stream ended before the answer was complete", retryable=True)


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


StreamItem = str | GenerateResult

NOT_CONFIGURED = "not configured: its API key is not set"


@dataclass(frozen=True)
class Provider:
    """What the registry holds for each provider. The callables speak the provider's wire format;
    the methods add what every provider shares (default model, refusing params it cannot honour,
    classifying anything unexpected, the GET /providers check)."""

    name: str
    # Optional GenerationParams (see GenerationParams.optional_params_set) this provider can honour.
    supported_params: frozenset[str]
    default_model: Callable[[Settings], str]
    is_configured: Callable[[Settings], bool]
    # Each gets a request whose model is set, and raises ProviderError for every failure it knows.
    generate_once: Callable[[GenerateInput, Settings], Awaitable[GenerateResult]]
    stream_once: Callable[[GenerateInput, Settings], AsyncIterator[StreamItem]]
    list_models: Callable[[Settings, float], Awaitable[list[str]]]

    def unsupported(self, params: GenerationParams) -> list[str]:
        return [
            name
            for name in params.optional_params_set()
            # Plain text is what every provider answers anyway.
            if name not in self.supported_params
            and not (name == "response_format" and params.response_format == "text")
        ]

    async def generate(self, request: GenerateInput, settings: Settings) -> GenerateResult:
        request = self._prepared(request, settings)
        try:
            result = await self.generate_once(request, settings)
        except ProviderError:
            raise  # already classified; `from` itself would make it its own cause
        except Exception as exc:
            raise self._classified(exc) from exc
        # Daily token budgets add up usage: an answer without it is counted here (core/token_budget.py).
        return with_usage(result, request)

    async def stream(self, request: GenerateInput, settings: Settings) -> AsyncIterator[StreamItem]:
        """Text deltas as the provider produces them, then one GenerateResult with the full text."""
        request = self._prepared(request, settings)
        try:
            async with aclosing(self.stream_once(request, settings)) as items:
                async for item in items:
                    yield with_usage(item, request) if isinstance(item, GenerateResult) else item
        except ProviderError:
            raise  # already classified; `from` itself would make it its own cause
        except Exception as exc:
            raise self._classified(exc) from exc

    async def check(self, settings: Settings) -> dict[str, Any]:
        """For GET /providers: configured, default model, models and reachability, within a short timeout."""
        status: dict[str, Any] = {
            "name": self.name,
            "configured": self.is_configured(settings),
            "default_model": self.default_model(settings),
            "models": [],
            "reachable": False,
        }
        if not status["configured"]:
            status["error"] = NOT_CONFIGURED
            return status
        timeout_s = settings.provider_check_timeout_s
        try:
            # The SDK's timeout covers each read; this one bounds the whole call.
            status["models"] = await asyncio.wait_for(self.list_models(settings, timeout_s), timeout_s + 1)
            status["reachable"] = True
        except TimeoutError:
            status["error"] = f"no answer within {timeout_s:g} s"
        except Exception as exc:
            status["error"] = self._classified(exc).message
        return status

    def _prepared(self, request: GenerateInput, settings: Settings) -> GenerateInput:
        # Never drop a parameter silently: the API refuses these with a 422 before a job starts; this
        # catches a fallback to a provider that cannot honour what the request asked for.
        if not self.is_configured(settings):
            raise ProviderError(self.name, NOT_CONFIGURED, retryable=False)
        unsupported = self.unsupported(request.params)
        if unsupported:
            raise ProviderError(self.name, f"cannot honour {', '.join(unsupported)}", retryable=False)
        if request.model is None:
            request = request.model_copy(update={"model": self.default_model(settings)})
        return request

    def _classified(self, exc: Exception) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        # Each wire module classifies its SDK's errors; anything else is a bug or an answer we cannot
        # read, which trying again will not fix.
        return ProviderError(self.name, f"unexpected {type(exc).__name__}: {exc}", retryable=False)


PROVIDERS: dict[str, Provider] = {}


def register(provider: Provider) -> Provider:
    PROVIDERS[provider.name] = provider
    return provider


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ProviderError(name, f"unknown provider {name!r}", retryable=False) from None


# Importing a provider's module registers it, in this order; these imports come last because the
# modules use the names above. A new provider is one more line here.
from activities.providers import local  # noqa: E402, F401, I001
from activities.providers import openai  # noqa: E402, F401
from activities.providers import gemini  # noqa: E402, F401
from activities.providers import ollama  # noqa: E402, F401

PROVIDER_NAMES: tuple[str, ...] = tuple(PROVIDERS)
