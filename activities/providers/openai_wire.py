"""OpenAI's chat-completions wire format through the official `openai` SDK, shared by every provider
that speaks it (`openai` itself and the project's model server, `local`). Errors are classified here
once for all of them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any

import openai

from activities.providers import (
    Provider,
    ProviderError,
    StreamItem,
    elapsed_ms,
    status_error,
    stream_ended_early,
)
from core.schemas import GenerateInput, GenerateResult, Usage
from core.settings import Settings

# Where a provider's client comes from: (base_url, api_key) for the given settings.
Endpoint = Callable[[Settings], tuple[str, str]]


@lru_cache(maxsize=16)
def _client(base_url: str, api_key: str, timeout_s: float) -> openai.AsyncOpenAI:
    # max_retries=0: a retry is a new activity attempt, visible in the workflow's history.
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)


def classify(provider: str, exc: openai.OpenAIError) -> ProviderError:
    if isinstance(exc, openai.APIStatusError):
        return status_error(provider, exc.status_code, _message(exc), exc.response.headers)
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(provider, "the request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(provider, f"connection failed: {exc.__cause__ or exc}", retryable=True)
    if isinstance(exc, openai.APIError):
        # An error event inside a stream the provider had accepted: its side failed, not the request.
        return ProviderError(provider, exc.message, retryable=True)
    return ProviderError(provider, str(exc), retryable=False)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message


def arguments(request: GenerateInput) -> dict[str, Any]:
    """The request in OpenAI's names. Only params the provider supports are set by now (Provider
    refuses the others), so one mapping serves every OpenAI-wire provider."""
    params = request.params
    args: dict[str, Any] = {
        "model": request.model,
        "messages": [m.model_dump() for m in request.messages],
        "temperature": params.temperature,
        "top_p": params.top_p,
        # OpenAI's current name; max_tokens is deprecated there and refused by its reasoning models.
        "max_completion_tokens": params.max_tokens,
    }
    optional = {
        "stop": params.stop,
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    args.update({name: value for name, value in optional.items() if value is not None})
    if params.response_format == "json_object":
        args["response_format"] = {"type": "json_object"}
    return args


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def provider(
    name: str,
    endpoint: Endpoint,
    *,
    supported_params: frozenset[str],
    default_model: Callable[[Settings], str],
    is_configured: Callable[[Settings], bool],
) -> Provider:
    """A Provider speaking OpenAI's wire format at the endpoint the settings give."""

    def client(settings: Settings) -> openai.AsyncOpenAI:
        base_url, api_key = endpoint(settings)
        return _client(base_url, api_key, settings.provider_timeout_s)

    async def generate_once(request: GenerateInput, settings: Settings) -> GenerateResult:
        started = time.perf_counter()
        try:
            completion = await client(settings).chat.completions.create(**arguments(request))
        except openai.OpenAIError as exc:
            raise classify(name, exc) from exc
        if not completion.choices:
            raise ProviderError(name, "the answer has no choices", retryable=True)
        choice = completion.choices[0]
        return GenerateResult(
            provider=name,
            model=completion.model or str(request.model),
            text=choice.message.content or "",
            usage=_usage(completion.usage),
            finish_reason=choice.finish_reason,
            latency_ms=elapsed_ms(started),
        )

    async def stream_once(request: GenerateInput, settings: Settings) -> AsyncIterator[StreamItem]:
        started = time.perf_counter()
        deltas: list[str] = []
        model, finish_reason, usage = str(request.model), None, None
        try:
            chunks = await client(settings).chat.completions.create(
                **arguments(request), stream=True, stream_options={"include_usage": True}
            )
            async with chunks:
                async for chunk in chunks:
                    model = chunk.model or model
                    # With include_usage, the last chunk has usage and no choices.
                    usage = chunk.usage or usage
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    finish_reason = choice.finish_reason or finish_reason
                    if choice.delta.content:
                        deltas.append(choice.delta.content)
                        yield choice.delta.content
        except openai.OpenAIError as exc:
            raise classify(name, exc) from exc
        if finish_reason is None:
            raise stream_ended_early(name)
        yield GenerateResult(
            provider=name,
            model=model,
            text="".join(deltas),
            usage=_usage(usage),
            finish_reason=finish_reason,
            latency_ms=elapsed_ms(started),
        )

    async def list_models(settings: Settings, timeout_s: float) -> list[str]:
        try:
            page = await client(settings).with_options(timeout=timeout_s).models.list()
        except openai.OpenAIError as exc:
            raise classify(name, exc) from exc
        return [model.id for model in page.data]

    return Provider(
        name=name,
        supported_params=supported_params,
        default_model=default_model,
        is_configured=is_configured,
        generate_once=generate_once,
        stream_once=stream_once,
        list_models=list_models,
    )
