"""The gemini provider: Google's Gemini API through the official `google-genai` SDK.

GEMINI_BASE_URL points the SDK elsewhere (a proxy, or a fake on loopback in tests); the SDK adds the
API version and `models/{model}:generateContent` (or `:streamGenerateContent?alt=sse`) to it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import lru_cache
from typing import Any

import httpx
import httpx2
from google import genai
from google.genai import errors, types

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

NAME = "gemini"
API_VERSION = "v1beta"

# The SDK talks through httpx2 by default and through httpx when told to (GOOGLE_GENAI_HTTP_CLIENT).
_TIMEOUTS = (httpx.TimeoutException, httpx2.TimeoutException)
_TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)

# Gemini's finish reasons in OpenAI's words where there is one; others are kept, lower-cased.
_FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}


def _api_key(settings: Settings) -> str:
    return settings.gemini_api_key.get_secret_value() if settings.gemini_api_key else ""


@lru_cache(maxsize=16)
def _client(base_url: str, api_key: str, timeout_s: float) -> genai.client.AsyncClient:
    options = types.HttpOptions(
        base_url=base_url,
        # v1beta has every parameter we map (seed, penalties, responseMimeType, systemInstruction); the
        # SDK's default version has changed between releases, so it is pinned here.
        api_version=API_VERSION,
        timeout=int(timeout_s * 1000),  # milliseconds
        # One attempt: a retry is a new activity attempt, visible in the workflow's history.
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    # vertexai=False and an explicit key: never pick up Vertex or a key from the environment.
    return genai.Client(api_key=api_key, vertexai=False, http_options=options).aio


def _client_for(settings: Settings) -> genai.client.AsyncClient:
    return _client(settings.gemini_base_url, _api_key(settings), settings.provider_timeout_s)


def classify(exc: Exception) -> ProviderError:
    if isinstance(exc, errors.APIError):
        headers = getattr(exc.response, "headers", None)
        return status_error(NAME, exc.code, exc.message or str(exc), headers)
    if isinstance(exc, _TIMEOUTS):
        return ProviderError(NAME, "the request timed out", retryable=True)
    if isinstance(exc, _TRANSPORT_ERRORS):
        # Refused or dropped connections, and a stream cut before its end.
        return ProviderError(NAME, f"connection failed: {exc}", retryable=True)
    if isinstance(exc, errors.UnknownApiResponseError):
        # A garbled body: the provider's side, and the next attempt may get a whole one.
        return ProviderError(NAME, str(exc), retryable=True)
    return ProviderError(NAME, f"{type(exc).__name__}: {exc}", retryable=False)


def _contents(request: GenerateInput) -> tuple[list[types.Content], str | None]:
    """Gemini keeps system text apart from the turns, and calls the assistant "model"."""
    system = [m.content for m in request.messages if m.role == "system"]
    contents = [
        types.Content(role="model" if m.role == "assistant" else "user", parts=[types.Part(text=m.content)])
        for m in request.messages
        if m.role != "system"
    ]
    return contents, "\n\n".join(system) or None


def _config(request: GenerateInput, system: str | None) -> types.GenerateContentConfig:
    params = request.params
    return types.GenerateContentConfig(
        system_instruction=system,
        temperature=params.temperature,
        top_p=params.top_p,
        max_output_tokens=params.max_tokens,
        stop_sequences=params.stop,
        seed=params.seed,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        response_mime_type="application/json" if params.response_format == "json_object" else None,
    )


def _arguments(request: GenerateInput) -> dict[str, Any]:
    contents, system = _contents(request)
    return {"model": request.model, "contents": contents, "config": _config(request, system)}


def _text(response: types.GenerateContentResponse) -> str:
    if not response.candidates or response.candidates[0].content is None:
        return ""
    parts = response.candidates[0].content.parts or []
    # Thought summaries are not the answer.
    return "".join(part.text for part in parts if part.text and not part.thought)


def _finish_reason(response: types.GenerateContentResponse) -> str | None:
    if not response.candidates or response.candidates[0].finish_reason is None:
        return None
    reason = response.candidates[0].finish_reason
    value = str(getattr(reason, "value", reason))
    return _FINISH_REASONS.get(value, value.lower())


def _usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
    if metadata is None:
        return Usage()
    prompt = metadata.prompt_token_count or 0
    completion = metadata.candidates_token_count or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=metadata.total_token_count or prompt + completion,
    )


def _refuse_blocked(response: types.GenerateContentResponse) -> None:
    # A prompt Gemini refuses comes back as 200 without candidates: the same prompt fails again.
    feedback = response.prompt_feedback
    if not response.candidates and feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        message = feedback.block_reason_message or f"the prompt was blocked ({reason})"
        raise ProviderError(NAME, message, retryable=False)


async def _generate(request: GenerateInput, settings: Settings) -> GenerateResult:
    started = time.perf_counter()
    try:
        response = await _client_for(settings).models.generate_content(**_arguments(request))
    except Exception as exc:
        raise classify(exc) from exc
    _refuse_blocked(response)
    return GenerateResult(
        provider=NAME,
        model=response.model_version or str(request.model),
        text=_text(response),
        usage=_usage(response.usage_metadata),
        finish_reason=_finish_reason(response),
        latency_ms=elapsed_ms(started),
    )


async def _stream(request: GenerateInput, settings: Settings) -> AsyncIterator[StreamItem]:
    started = time.perf_counter()
    deltas: list[str] = []
    model, finish_reason, usage = str(request.model), None, None
    try:
        chunks = await _client_for(settings).models.generate_content_stream(**_arguments(request))
        # aclosing: a consumer that stops early releases the connection now, not when collected.
        async with aclosing(chunks):
            async for chunk in chunks:
                _refuse_blocked(chunk)
                model = chunk.model_version or model
                usage = chunk.usage_metadata or usage
                finish_reason = _finish_reason(chunk) or finish_reason
                delta = _text(chunk)
                if delta:
                    deltas.append(delta)
                    yield delta
    except ProviderError:
        raise
    except Exception as exc:
        raise classify(exc) from exc
    if finish_reason is None:
        raise stream_ended_early(NAME)
    yield GenerateResult(
        provider=NAME,
        model=model,
        text="".join(deltas),
        usage=_usage(usage),
        finish_reason=finish_reason,
        latency_ms=elapsed_ms(started),
    )


async def _list_models(settings: Settings, timeout_s: float) -> list[str]:
    config = types.ListModelsConfig(
        page_size=100, http_options=types.HttpOptions(timeout=int(timeout_s * 1000))
    )
    try:
        pager = await _client_for(settings).models.list(config=config)
    except Exception as exc:
        raise classify(exc) from exc
    # The first page is enough for an overview; names come as "models/gemini-2.0-flash".
    return [(model.name or "").removeprefix("models/") for model in pager.page]


register(
    Provider(
        name=NAME,
        supported_params=frozenset(
            {"stop", "seed", "presence_penalty", "frequency_penalty", "response_format"}
        ),
        default_model=lambda settings: settings.gemini_default_model,
        is_configured=lambda settings: bool(_api_key(settings)),
        generate_once=_generate,
        stream_once=_stream,
        list_models=_list_models,
    )
)
