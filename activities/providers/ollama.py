"""The ollama provider: an Ollama server (OLLAMA_BASE_URL) through the official `ollama` SDK."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import lru_cache
from typing import Any

import httpx
import ollama

from activities.providers import (
    Provider,
    ProviderError,
    StreamItem,
    elapsed_ms,
    register,
    status_error,
    stream_ended_early,
)
from core.schemas import GenerateInput, GenerateResult, Usage
from core.settings import Settings

NAME = "ollama"


@lru_cache(maxsize=16)
def _client(base_url: str, timeout_s: float) -> ollama.AsyncClient:
    # The SDK never retries by itself; a retry is a new activity attempt, visible in history.
    return ollama.AsyncClient(host=base_url, timeout=timeout_s)


def classify(exc: Exception) -> ProviderError:
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == -1:
            # An error line inside a stream Ollama had accepted: its side failed, not the request.
            return ProviderError(NAME, str(exc.error), retryable=True)
        return status_error(NAME, exc.status_code, str(exc.error))
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(NAME, "the request timed out", retryable=True)
    if isinstance(exc, ConnectionError | httpx.TransportError):
        # The SDK turns a refused connection into ConnectionError; a cut stream is httpx's own error.
        return ProviderError(NAME, f"connection failed: {exc}", retryable=True)
    if isinstance(exc, json.JSONDecodeError):
        # A garbled line: the provider's side, and the next attempt may get a whole answer.
        return ProviderError(NAME, f"unreadable answer: {exc}", retryable=True)
    return ProviderError(NAME, f"{type(exc).__name__}: {exc}", retryable=False)


def _arguments(request: GenerateInput) -> dict[str, Any]:
    params = request.params
    options = {
        "num_predict": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": params.stop,
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    return {
        "model": request.model,
        "messages": [m.model_dump() for m in request.messages],
        "options": {name: value for name, value in options.items() if value is not None},
        "format": "json" if params.response_format == "json_object" else None,
    }


def _usage(response: ollama.ChatResponse) -> Usage:
    prompt = response.prompt_eval_count or 0
    completion = response.eval_count or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


async def _generate(request: GenerateInput, settings: Settings) -> GenerateResult:
    started = time.perf_counter()
    try:
        response = await _client(settings.ollama_base_url, settings.provider_timeout_s).chat(
            **_arguments(request), stream=False
        )
    except Exception as exc:
        raise classify(exc) from exc
    return GenerateResult(
        provider=NAME,
        model=response.model or str(request.model),
        text=response.message.content or "",
        usage=_usage(response),
        finish_reason=response.done_reason,
        latency_ms=elapsed_ms(started),
    )


async def _stream(request: GenerateInput, settings: Settings) -> AsyncIterator[StreamItem]:
    started = time.perf_counter()
    deltas: list[str] = []
    last: ollama.ChatResponse | None = None
    try:
        parts = await _client(settings.ollama_base_url, settings.provider_timeout_s).chat(
            **_arguments(request), stream=True
        )
        # aclosing: a consumer that stops early releases the connection now, not when collected.
        async with aclosing(parts):
            async for part in parts:
                last = part
                if part.message.content:
                    deltas.append(part.message.content)
                    yield part.message.content
    except Exception as exc:
        raise classify(exc) from exc
    # The last line says done, with the reason and the token counts.
    if last is None or not last.done:
        raise stream_ended_early(NAME)
    yield GenerateResult(
        provider=NAME,
        model=last.model or str(request.model),
        text="".join(deltas),
        usage=_usage(last),
        finish_reason=last.done_reason,
        latency_ms=elapsed_ms(started),
    )


async def _list_models(settings: Settings, timeout_s: float) -> list[str]:
    try:
        async with ollama.AsyncClient(host=settings.ollama_base_url, timeout=timeout_s) as client:
            response = await client.list()
    except Exception as exc:
        raise classify(exc) from exc
    return [model.model for model in response.models if model.model]


register(
    Provider(
        name=NAME,
        supported_params=frozenset(
            {"stop", "seed", "presence_penalty", "frequency_penalty", "response_format"}
        ),
        default_model=lambda settings: settings.ollama_default_model,
        is_configured=lambda settings: True,
        generate_once=_generate,
        stream_once=_stream,
        list_models=_list_models,
    )
)
