"""Token counts for the daily token budgets: what a request may spend before its job starts, and the usage
of an answer whose provider did not report one.

OpenAI models are counted with their own tiktoken encoding, so the count is the one OpenAI bills. Other
providers' models (Gemini, Ollama, the local model) have tokenizers of their own that are not at hand
here: they are counted with tiktoken's cl100k_base, an estimate. Of the two shipped encodings it is the
larger count for non-Latin scripts, where small vocabularies split words finer: on a Russian sample,
SmolLM2's tokenizer gave 271 tokens, cl100k_base 174, o200k_base 92; on English README text 1901, 1686
and 1700. Counts a provider reports are always kept: the estimate only fills in what it left out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from core.schemas import GenerateInput, GenerateResult, Message, Usage
from core.token_counts import EncodingUnavailable, count_tokens

log = logging.getLogger(__name__)

OPENAI_PROVIDER = "openai"
ESTIMATE_ENCODING = "cl100k_base"

# OpenAI's chat format wraps each message in tokens of its own (role and separators), and every answer
# starts with a few more: the counts the OpenAI cookbook gives for its current chat models.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3


def counting_model(provider: str, model: str | None) -> str:
    """What to count a provider's model with: an OpenAI model's own name (its real encoding), else the
    estimate's encoding."""
    if provider == OPENAI_PROVIDER and model:
        return model
    return ESTIMATE_ENCODING


def count_text(provider: str, model: str | None, text: str) -> int:
    """Tokens of a text for a provider's model (see counting_model)."""
    try:
        return count_tokens(counting_model(provider, model), text)
    except EncodingUnavailable:
        # A legacy OpenAI model whose encoding is not shipped: an estimate beats refusing to count.
        return count_tokens(ESTIMATE_ENCODING, text)


def prompt_tokens(provider: str, model: str | None, messages: Sequence[Message]) -> int:
    """The prompt tokens of a conversation as OpenAI's chat format counts them: each message's text plus
    its wrapping, plus the start of the answer."""
    if not messages:
        return 0
    texts = sum(count_text(provider, model, text) for m in messages for text in (m.role, m.content))
    return texts + TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING_TOKENS


@dataclass(frozen=True)
class RequestTokens:
    """The most a request may spend: its prompt and its max_tokens, once for every provider it asks."""

    prompt_tokens: int
    max_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.max_tokens


def request_tokens(
    targets: Sequence[tuple[str, str | None]], messages: Sequence[Message], max_tokens: int
) -> RequestTokens:
    """What a chat request asking each (provider, model) of `targets` for an answer may spend at most:
    the prompt in each model's tokens and max_tokens from each. A fallback provider is not a target: it
    answers only when the one before it failed, and a failed call spends nothing from the budget."""
    return RequestTokens(
        prompt_tokens=sum(prompt_tokens(provider, model, messages) for provider, model in targets),
        max_tokens=max_tokens * len(targets),
    )


def with_usage(result: GenerateResult, request: GenerateInput) -> GenerateResult:
    """The result with its usage counted here where the provider reported none (a stream without a usage
    chunk, an OpenAI-compatible server that leaves it out): a real answer always spends tokens. Counts the
    provider did report are kept."""
    usage = result.usage
    if usage.prompt_tokens > 0 and (usage.completion_tokens > 0 or not result.text):
        return result
    model = result.model or request.model
    try:
        prompt = usage.prompt_tokens or prompt_tokens(result.provider, model, request.messages)
        completion = usage.completion_tokens or count_text(result.provider, model, result.text)
    except Exception:
        # The answer is worth more than its count (tiktoken's cache dir unwritable, say): keep it.
        log.exception("could not count the tokens of an answer without usage from %s", result.provider)
        return result
    filled = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    return result.model_copy(update={"usage": filled})
