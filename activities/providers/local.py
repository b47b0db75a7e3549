"""The local provider: the project's own model server, reached through the official `openai` SDK."""

from __future__ import annotations

import time
from functools import lru_cache

import openai

from activities.providers import ProviderError, register
from activities.providers.openai_errors import classify
from core.schemas import GenerateInput, GenerateResult, Usage
from core.settings import Settings

NAME = "local"


@lru_cache(maxsize=8)
def _client(base_url: str, api_key: str, timeout_s: float) -> openai.AsyncOpenAI:
    # max_retries=0: a retry is a new activity attempt, visible in the workflow's history.
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)


@register(NAME)
async def generate(request: GenerateInput, settings: Settings) -> GenerateResult:
    client = _client(
        f"{settings.model_server_url}/v1",
        settings.model_server_api_key.get_secret_value(),
        settings.provider_timeout_s,
    )
    model = request.model or settings.model_path(settings.local_chat_model).name
    started = time.perf_counter()
    try:
        completion = await client.chat.completions.create(
            model=model,
            messages=[m.model_dump() for m in request.messages],  # type: ignore[misc]
            temperature=request.params.temperature,
            top_p=request.params.top_p,
            max_tokens=request.params.max_tokens,
        )
    except openai.OpenAIError as exc:
        raise classify(NAME, exc) from exc
    if not completion.choices:
        raise ProviderError(NAME, "the answer has no choices", retryable=True)
    choice = completion.choices[0]
    usage = completion.usage
    return GenerateResult(
        provider=NAME,
        model=completion.model or model,
        text=choice.message.content or "",
        usage=Usage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
        ),
        finish_reason=choice.finish_reason,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
