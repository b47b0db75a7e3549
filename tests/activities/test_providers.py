"""Each provider through its official SDK against a fake of its real wire format on loopback (and the
local provider against the real model server): answers, streams, parameter mapping, and every fault
mapped to a ProviderError that says whether trying again can help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from activities.providers import PROVIDER_NAMES, ProviderError, get_provider
from core.schemas import GenerateInput, GenerateResult, GenerationParams, Message
from core.settings import Settings
from tests.activities.conftest import settings_for_fakes
from tests.conftest import FAKES, RunningStack, free_port
from tests.fakes.control import ANSWER_PIECES, RETRY_AFTER_S
from tests.fakes.process import FakeServer

ANSWER = "".join(ANSWER_PIECES)


def chat(provider: str, model: str | None = None, **params: Any) -> GenerateInput:
    return GenerateInput(
        provider=provider,  # type: ignore[arg-type]
        model=model,
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Say hello."),
            Message(role="assistant", content="Hello?"),
            Message(role="user", content="Say hello to the fake."),
        ],
        params=GenerationParams(**params),
    )


async def collect(
    provider: str, request: GenerateInput, settings: Settings
) -> tuple[list[str], GenerateResult]:
    items = [item async for item in get_provider(provider).stream(request, settings)]
    *deltas, result = items
    assert all(isinstance(delta, str) for delta in deltas)
    assert isinstance(result, GenerateResult)
    return deltas, result  # type: ignore[return-value]


def test_registry_names_the_four_providers() -> None:
    assert PROVIDER_NAMES == ("local", "openai", "gemini", "ollama")


def test_an_unknown_provider_is_a_non_retryable_error() -> None:
    with pytest.raises(ProviderError) as caught:
        get_provider("nope")
    assert not caught.value.retryable


@pytest.mark.parametrize("provider", FAKES)
async def test_generate_answers_through_the_official_sdk(
    provider: str, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    result = await get_provider(provider).generate(chat(provider), settings)

    assert result.provider == provider
    assert result.text == ANSWER
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.latency_ms > 0
    # No model in the request: the provider's default model from the settings.
    assert result.model == get_provider(provider).default_model(settings)
    assert len(await fakes[provider].requests()) == 1


@pytest.mark.parametrize("provider", FAKES)
async def test_stream_yields_deltas_then_the_full_result(
    provider: str, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    deltas, result = await collect(provider, chat(provider, model="some-model"), settings)

    assert deltas == ANSWER_PIECES
    assert result.text == "".join(deltas)
    assert result.model == "some-model"  # a model given is passed through, never checked
    assert result.finish_reason == "stop"
    assert result.usage.completion_tokens > 0


async def test_openai_params_reach_the_wire_in_openais_names(
    fakes: dict[str, FakeServer], settings: Settings
) -> None:
    params = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 32,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "response_format": "json_object",
    }
    result = await get_provider("openai").generate(chat("openai", model="gpt-test", **params), settings)

    (received,) = await fakes["openai"].requests()
    assert received["path"] == "/v1/chat/completions"
    assert received["headers"]["authorization"] == "Bearer sk-test-key"
    body = received["json"]
    assert body["model"] == "gpt-test"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["max_completion_tokens"] == 32
    assert body["stop"] == ["END"] and body["seed"] == 7
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.25
    assert body["response_format"] == {"type": "json_object"}
    assert json.loads(result.text) == {"answer": ANSWER}


async def test_gemini_params_reach_the_wire_in_geminis_names(
    fakes: dict[str, FakeServer], settings: Settings
) -> None:
    params = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 32,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "response_format": "json_object",
    }
    result = await get_provider("gemini").generate(chat("gemini", model="gemini-test", **params), settings)
    await collect("gemini", chat("gemini", model="gemini-test"), settings)

    whole, streamed = await fakes["gemini"].requests()
    assert whole["path"] == "/v1beta/models/gemini-test:generateContent"
    assert streamed["path"] == "/v1beta/models/gemini-test:streamGenerateContent"
    assert streamed["query"] == {"alt": "sse"}
    assert whole["headers"]["x-goog-api-key"] == "gemini-test-key"
    body = whole["json"]
    # The system message travels apart; the assistant is called "model".
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 32,
        "stopSequences": ["END"],
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "responseMimeType": "application/json",
    }
    assert json.loads(result.text) == {"answer": ANSWER}


async def test_ollama_params_reach_the_wire_as_ollama_options(
    fakes: dict[str, FakeServer], settings: Settings
) -> None:
    params = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 32,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "response_format": "json_object",
    }
    result = await get_provider("ollama").generate(chat("ollama", model="llama-test", **params), settings)
    await collect("ollama", chat("ollama", model="llama-test"), settings)

    whole, streamed = await fakes["ollama"].requests()
    assert whole["path"] == streamed["path"] == "/api/chat"
    assert whole["json"]["stream"] is False and streamed["json"]["stream"] is True
    body = whole["json"]
    assert body["model"] == "llama-test"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["options"] == {
        "num_predict": 32,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    assert body["format"] == "json"
    assert json.loads(result.text) == {"answer": ANSWER}


def test_unsupported_params_are_reported_by_name() -> None:
    params = GenerationParams(
        stop=["x"], seed=1, presence_penalty=0.1, frequency_penalty=0.1, response_format="json_object"
    )
    assert get_provider("local").unsupported(params) == [
        "presence_penalty",
        "frequency_penalty",
        "response_format",
    ]
    for name in ("openai", "gemini", "ollama"):
        assert get_provider(name).unsupported(params) == []
    # Plain text is what every provider answers anyway.
    assert get_provider("local").unsupported(GenerationParams(response_format="text")) == []


async def test_a_provider_refuses_params_it_cannot_honour_before_calling(
    fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    # The local provider pointed at the fake OpenAI server: nothing may reach it.
    settings = settings_for_fakes(fakes, tmp_path, model_server_url=fakes["openai"].url)
    request = chat("local", presence_penalty=0.5, response_format="json_object")

    with pytest.raises(ProviderError) as caught:
        await get_provider("local").generate(request, settings)
    with pytest.raises(ProviderError):
        await collect("local", request, settings)

    assert not caught.value.retryable
    assert "presence_penalty" in caught.value.message and "response_format" in caught.value.message
    assert await fakes["openai"].requests() == []


async def test_a_provider_without_its_key_is_not_configured(
    fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    settings = settings_for_fakes(fakes, tmp_path, openai_api_key=None, gemini_api_key=None)
    for name in ("openai", "gemini"):
        provider = get_provider(name)
        assert not provider.is_configured(settings)
        with pytest.raises(ProviderError) as caught:
            await provider.generate(chat(name), settings)
        assert not caught.value.retryable
        status = await provider.check(settings)
        assert status["configured"] is False and status["reachable"] is False
    assert get_provider("ollama").is_configured(settings) and get_provider("local").is_configured(settings)
    assert await fakes["openai"].requests() == [] and await fakes["gemini"].requests() == []


@pytest.mark.parametrize("provider", FAKES)
async def test_a_server_error_is_retryable_and_the_next_attempt_succeeds(
    provider: str, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    await fakes[provider].fail_next("server_error")

    with pytest.raises(ProviderError) as caught:
        await get_provider(provider).generate(chat(provider), settings)
    result = await get_provider(provider).generate(chat(provider), settings)

    assert caught.value.retryable and caught.value.status == 500
    assert result.text == ANSWER
    assert len(await fakes[provider].requests()) == 2  # no retry inside the SDK


# The provider's own words for each fault, as its fake sends them.
BAD_KEY = {
    "openai": (401, "Incorrect API key"),
    "gemini": (400, "API key not valid"),
    "ollama": (401, "unauthorized"),
}
UNKNOWN_MODEL = {
    "openai": "`no-such-model` does not exist",
    "gemini": "models/no-such-model is not found",
    "ollama": 'model "no-such-model" not found',
}


@pytest.mark.parametrize("provider", FAKES)
@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_a_bad_key_is_not_retryable_and_keeps_the_providers_message(
    provider: str, streaming: bool, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    await fakes[provider].fail_next("bad_key")
    error = await failure(provider, chat(provider), settings, streaming)
    status, message = BAD_KEY[provider]
    assert not error.retryable
    assert error.status == status
    assert message in error.message


@pytest.mark.parametrize("provider", FAKES)
@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_an_unknown_model_is_not_retryable_and_keeps_the_providers_message(
    provider: str, streaming: bool, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    await fakes[provider].fail_next("unknown_model")
    error = await failure(provider, chat(provider, model="no-such-model"), settings, streaming)
    assert not error.retryable
    assert error.status == 404
    assert UNKNOWN_MODEL[provider] in error.message


@pytest.mark.parametrize("provider", FAKES)
async def test_a_rate_limit_is_retryable_with_the_providers_retry_after(
    provider: str, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    await fakes[provider].fail_next("rate_limited")
    error = await failure(provider, chat(provider), settings, streaming=False)
    assert error.retryable and error.status == 429
    # The ollama SDK drops response headers; the others keep Retry-After for the retry's delay.
    assert error.retry_after_s == (None if provider == "ollama" else RETRY_AFTER_S)


@pytest.mark.parametrize("provider", FAKES)
@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_a_slow_answer_past_the_timeout_is_retryable(
    provider: str, streaming: bool, fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    settings = settings_for_fakes(fakes, tmp_path, provider_timeout_s=0.5)
    await fakes[provider].fail_next("slow")
    error = await failure(provider, chat(provider), settings, streaming)
    assert error.retryable and error.status is None
    assert "timed out" in error.message


@pytest.mark.parametrize("provider", FAKES)
@pytest.mark.parametrize("fault", ["cut", "truncated"])
async def test_a_stream_cut_halfway_is_retryable(
    provider: str, fault: str, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    await fakes[provider].fail_next(fault)
    deltas: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for item in get_provider(provider).stream(chat(provider), settings):
            deltas.append(item)  # type: ignore[arg-type]
    assert caught.value.retryable
    assert "".join(deltas) != ANSWER  # part of the answer came before the cut


@pytest.mark.parametrize("provider", FAKES)
async def test_an_answer_cut_halfway_is_retryable(
    provider: str, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    await fakes[provider].fail_next("cut")
    error = await failure(provider, chat(provider), settings, streaming=False)
    assert error.retryable


@pytest.mark.parametrize("provider", FAKES)
async def test_a_refused_connection_is_retryable(
    provider: str, fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = settings_for_fakes(
        fakes, tmp_path, openai_base_url=f"{nowhere}/v1", gemini_base_url=nowhere, ollama_base_url=nowhere
    )
    for streaming in (False, True):
        error = await failure(provider, chat(provider), settings, streaming)
        assert error.retryable and "connection failed" in error.message
    status = await get_provider(provider).check(settings)
    assert status["reachable"] is False and status["error"]


@pytest.mark.parametrize("provider", FAKES)
async def test_check_lists_the_models_of_a_reachable_provider(
    provider: str, fakes: dict[str, FakeServer], settings: Settings
) -> None:
    status = await get_provider(provider).check(settings)
    expected_model = {
        "openai": "fake-model",
        "gemini": "gemini-2.0-flash",
        "ollama": "mistral:7b-instruct-q4_K_M",
    }
    assert status["name"] == provider
    assert status["configured"] is True and status["reachable"] is True
    assert expected_model[provider] in status["models"]
    assert status["default_model"] == get_provider(provider).default_model(settings)
    assert "error" not in status


async def test_local_streams_the_real_models_deltas_and_their_join_is_the_answer(stack: RunningStack) -> None:
    request = chat("local", max_tokens=24, seed=1, stop=["\n\n\n"])
    provider = get_provider("local")

    deltas, result = await collect("local", request, stack.settings)
    whole = await provider.generate(request, stack.settings)
    status = await provider.check(stack.settings)

    assert len(deltas) > 1
    assert "".join(deltas) == result.text and result.text
    assert result.finish_reason in ("stop", "length")
    assert result.usage.completion_tokens > 0
    assert whole.text and whole.provider == "local"
    assert status["reachable"] is True and provider.default_model(stack.settings) in status["models"]


async def failure(
    provider: str, request: GenerateInput, settings: Settings, streaming: bool
) -> ProviderError:
    """The ProviderError a call raises, whole or streamed."""
    with pytest.raises(ProviderError) as caught:
        if streaming:
            await collect(provider, request, settings)
        else:
            await get_provider(provider).generate(request, settings)
    return caught.value
