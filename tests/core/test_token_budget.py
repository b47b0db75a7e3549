"""Token counts for the daily budgets: tiktoken's real counts for OpenAI models, an estimate for the others,
and the usage of answers whose provider reported none, filled in through the openai provider against the
fake OpenAI server when it behaves like a compatible server that reports no usage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from activities.providers import get_provider
from api.rate_limits import ASGIApp, Message, Receive, Scope, Send
from core.schemas import GenerateInput, GenerateResult, GenerationParams, Usage
from core.schemas import Message as ChatMessage
from core.settings import Settings
from core.token_budget import (
    ESTIMATE_ENCODING,
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    count_text,
    counting_model,
    prompt_tokens,
    request_tokens,
    with_usage,
)
from core.token_counts import count_tokens, encoding_for
from tests.conftest import free_port
from tests.fakes.control import ANSWER_PIECES
from tests.fakes.openai_server import create_app
from tests.fakes.process import FakeServer

ANSWER = "".join(ANSWER_PIECES)
RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю. Сколько токенов осталось на сегодня?"
ENGLISH = "How many tokens are left of today's budget?"


@pytest.fixture(autouse=True)
def own_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tiktoken"))


def conversation(*texts: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="Be brief."),
        *(ChatMessage(role="user", content=t) for t in texts),
    ]


# --- counting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4.1", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
    ],
)
def test_openai_models_are_counted_with_their_own_encoding(model: str, encoding: str) -> None:
    assert counting_model("openai", model) == model
    assert encoding_for(model).name == encoding
    for text in (ENGLISH, RUSSIAN):
        expected = len(encoding_for(encoding).encode_ordinary(text))
        assert count_text("openai", model, text) == expected > 0


def test_the_two_encodings_count_russian_differently_and_each_model_gets_its_own() -> None:
    # o200k_base has far more Cyrillic in its vocabulary than cl100k_base: the model's encoding matters.
    newer, older = count_text("openai", "gpt-4o", RUSSIAN), count_text("openai", "gpt-4", RUSSIAN)
    assert 0 < newer < older
    assert older == count_tokens("cl100k_base", RUSSIAN)


def test_an_unknown_openai_model_name_is_counted_with_the_current_chat_encoding() -> None:
    # OPENAI_BASE_URL may point at any compatible server, whose model names tiktoken does not know.
    for model in ("fake-model", "my-finetune", "gpt-test"):
        assert count_text("openai", model, RUSSIAN) == count_tokens("o200k_base", RUSSIAN)


def test_other_providers_models_are_estimated_with_cl100k() -> None:
    for provider, model in [
        ("gemini", "gemini-2.0-flash"),
        ("ollama", "llama3"),
        ("local", "gpt2"),
        ("local", None),
    ]:
        assert counting_model(provider, model) == ESTIMATE_ENCODING == "cl100k_base"
        assert count_text(provider, model, RUSSIAN) == count_tokens("cl100k_base", RUSSIAN)


def test_a_legacy_openai_model_is_estimated_instead_of_downloading_its_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # text-davinci-003's p50k_base is not shipped: a download attempt goes to a closed port and fails.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert count_text("openai", "text-davinci-003", ENGLISH) == count_tokens(ESTIMATE_ENCODING, ENGLISH)


def test_prompt_tokens_add_openais_per_message_wrapping() -> None:
    messages = conversation(RUSSIAN)
    texts = sum(count_tokens("gpt-4o", text) for m in messages for text in (m.role, m.content))
    expected = texts + TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING_TOKENS
    assert prompt_tokens("openai", "gpt-4o", messages) == expected
    assert prompt_tokens("openai", "gpt-4o", []) == 0


def test_a_request_may_spend_its_prompt_and_max_tokens_once_per_provider_asked() -> None:
    messages = conversation(ENGLISH)
    one = request_tokens([("openai", "gpt-4o")], messages, 100)
    assert one.prompt_tokens == prompt_tokens("openai", "gpt-4o", messages)
    assert one.max_tokens == 100 and one.total == one.prompt_tokens + 100

    compared = request_tokens([("openai", "gpt-4o"), ("gemini", "gemini-2.0-flash")], messages, 100)
    assert compared.prompt_tokens == one.prompt_tokens + prompt_tokens("gemini", None, messages)
    assert compared.max_tokens == 200


# --- usage of answers without it ---------------------------------------------------------------------


def answer(text: str, usage: Usage, provider: str = "openai", model: str = "gpt-4o") -> GenerateResult:
    return GenerateResult(provider=provider, model=model, text=text, usage=usage, latency_ms=1.0)


def asked(provider: str = "openai", model: str = "gpt-4o") -> GenerateInput:
    return GenerateInput(provider=provider, model=model, messages=conversation(RUSSIAN))  # type: ignore[arg-type]


def test_usage_a_provider_reports_is_kept() -> None:
    reported = Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    assert with_usage(answer("Привет!", reported), asked()).usage == reported
    # An empty answer spent no completion tokens: its zero is real.
    empty = Usage(prompt_tokens=7, completion_tokens=0, total_tokens=7)
    assert with_usage(answer("", empty), asked()).usage == empty


def test_missing_usage_is_counted_with_tiktoken() -> None:
    filled = with_usage(answer("Привет, мир!", Usage()), asked()).usage
    assert filled.prompt_tokens == prompt_tokens("openai", "gpt-4o", conversation(RUSSIAN))
    assert filled.completion_tokens == count_tokens("gpt-4o", "Привет, мир!") > 0
    assert filled.total_tokens == filled.prompt_tokens + filled.completion_tokens


def test_a_missing_half_is_counted_and_the_reported_half_kept() -> None:
    filled = with_usage(answer("Привет, мир!", Usage(prompt_tokens=40, total_tokens=40)), asked()).usage
    assert filled.prompt_tokens == 40
    assert filled.completion_tokens == count_tokens("gpt-4o", "Привет, мир!")
    assert filled.total_tokens == 40 + filled.completion_tokens


def test_other_providers_answers_without_usage_get_the_estimate() -> None:
    result = answer("Привет, мир!", Usage(), provider="ollama", model="llama3")
    filled = with_usage(result, asked("ollama", "llama3")).usage
    assert filled.completion_tokens == count_tokens("cl100k_base", "Привет, мир!")
    assert filled.prompt_tokens == prompt_tokens("ollama", "llama3", conversation(RUSSIAN))


# --- through the openai provider, against a server that reports no usage -------------------------------


def without_usage(app: ASGIApp) -> ASGIApp:
    """The fake OpenAI server as a compatible server that knows no usage: it ignores stream_options (so a
    stream has no usage chunk) and leaves `usage` out of whole answers."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if body:
            request = json.loads(body)
            request.pop("stream_options", None)
            body = json.dumps(request).encode()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        held: dict[str, Any] = {}

        async def stripped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"application/json"):
                    held["start"], held["body"] = message, b""
                    return
            elif "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                answer = json.loads(held["body"])
                answer.pop("usage", None)
                content = json.dumps(answer).encode()
                start = held.pop("start")
                start["headers"] = [
                    (k, str(len(content)).encode() if k == b"content-length" else v)
                    for k, v in start["headers"]
                ]
                await send(start)
                await send({"type": "http.response.body", "body": content, "more_body": False})
                return
            await send(message)

        await app(scope, replay, stripped)

    return wrapped


@pytest.fixture(scope="module")
def usage_free_openai() -> Iterator[str]:
    """The fake OpenAI server behind without_usage, in this process on a loopback port."""
    port = free_port()
    config = uvicorn.Config(without_usage(create_app()), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the fake server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def openai_settings(base_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        var_dir=tmp_path,
        openai_api_key="sk-test-key",  # type: ignore[arg-type]
        openai_base_url=base_url,
        provider_timeout_s=10.0,
    )


def russian_chat() -> GenerateInput:
    return GenerateInput(
        provider="openai",
        model="gpt-4o",
        messages=conversation(RUSSIAN),
        params=GenerationParams(max_tokens=32),
    )


def expected_usage() -> Usage:
    prompt = prompt_tokens("openai", "gpt-4o", conversation(RUSSIAN))
    completion = count_tokens("gpt-4o", ANSWER)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


async def test_an_answer_from_a_server_without_usage_is_counted(
    usage_free_openai: str, tmp_path: Path
) -> None:
    result = await get_provider("openai").generate(
        russian_chat(), openai_settings(usage_free_openai, tmp_path)
    )
    assert result.text == ANSWER
    assert result.usage == expected_usage()


async def test_a_stream_without_a_usage_chunk_is_counted(usage_free_openai: str, tmp_path: Path) -> None:
    settings = openai_settings(usage_free_openai, tmp_path)
    items = [item async for item in get_provider("openai").stream(russian_chat(), settings)]
    *deltas, result = items
    assert deltas == ANSWER_PIECES
    assert isinstance(result, GenerateResult)
    assert result.usage == expected_usage()


async def test_usage_the_server_reports_is_never_replaced_by_a_count(
    fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    # The fake counts words, not tokens: its numbers come through as it sent them.
    settings = openai_settings(f"{fakes['openai'].url}/v1", tmp_path)
    whole = await get_provider("openai").generate(russian_chat(), settings)
    *_, streamed = [item async for item in get_provider("openai").stream(russian_chat(), settings)]
    assert isinstance(streamed, GenerateResult)
    words = sum(len(m.content.split()) for m in conversation(RUSSIAN))
    for result in (whole, streamed):
        assert result.usage == Usage(
            prompt_tokens=words,
            completion_tokens=len(ANSWER.split()),
            total_tokens=words + len(ANSWER.split()),
        )
