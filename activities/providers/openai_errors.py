"""Classifies errors of the `openai` SDK once, for every provider that speaks OpenAI's API."""

from __future__ import annotations

import openai

from activities.providers import ProviderError

# Statuses where the same request may succeed later: timeouts, conflicts, rate limits, server faults.
_RETRYABLE_STATUSES = {408, 409, 429}


def classify(provider: str, exc: openai.OpenAIError) -> ProviderError:
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in _RETRYABLE_STATUSES or status >= 500
        return ProviderError(provider, f"HTTP {status}: {_message(exc)}", retryable=retryable, status=status)
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(provider, "the request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(provider, f"cannot connect: {exc.__cause__ or exc}", retryable=True)
    return ProviderError(provider, str(exc), retryable=False)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
