"""The official OpenAI SDK works against the model server unchanged: replies, usage, finish reasons,
models, embeddings and errors come back as the SDK expects them from OpenAI.
"""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

from tests.model_server.conftest import CHAT_MODEL, EMBEDDING_MODEL, ESSAY

HELLO = [{"role": "user", "content": "Say hello to Ada in one short sentence."}]


def test_chat_completion_returns_text_usage_and_finish_reason(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, temperature=0, max_tokens=12)

    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == CHAT_MODEL
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 12


def test_temperature_zero_gives_the_same_reply_every_time(client: openai.OpenAI) -> None:
    replies = [
        client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, temperature=0, max_tokens=12)
        for _ in range(2)
    ]
    assert replies[0].choices[0].message.content == replies[1].choices[0].message.content


def test_max_tokens_one_ends_with_finish_reason_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=ESSAY, temperature=0, max_tokens=1)

    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 1


def test_max_completion_tokens_is_honoured_like_max_tokens(client: openai.OpenAI) -> None:
    # Newer SDK code sends max_completion_tokens instead of the deprecated max_tokens.
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=ESSAY, temperature=0, max_completion_tokens=3
    )

    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_stop_string_cuts_the_reply_before_it(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=CHAT_MODEL, messages=ESSAY, temperature=0, max_tokens=40)
    text = full.choices[0].message.content or ""
    words = text.split(" ")
    assert len(words) > 8, text
    # Two words in the middle of the reply: a stop string longer than one token, as stop strings are.
    stop = " ".join(words[4:6])

    cut = client.chat.completions.create(
        model=CHAT_MODEL, messages=ESSAY, temperature=0, max_tokens=40, stop=[stop]
    )

    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage is not None and full.usage is not None
    assert cut.usage.completion_tokens < full.usage.completion_tokens


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model=CHAT_MODEL, messages=ESSAY, temperature=1.0, max_tokens=20, seed=seed
        )
        return reply.choices[0].message.content or ""

    first = sample(1234)
    assert sample(1234) == first
    # The seed must drive real sampling, not a greedy fallback: other seeds give other texts.
    assert len({first, sample(1), sample(2)}) > 1


def test_models_list_names_the_chat_and_the_embedding_model(client: openai.OpenAI) -> None:
    models = list(client.models.list())

    assert {m.id for m in models} == {CHAT_MODEL, EMBEDDING_MODEL, "multilingual-e5-small"}
    assert all(m.object == "model" for m in models)


def test_embeddings_are_normalised_384_dimensional_and_rank_a_paraphrase_first(
    client: openai.OpenAI,
) -> None:
    texts = [
        "The cat is sleeping on the sofa.",
        "A cat naps on the couch.",
        "Interest rates rose sharply this quarter.",
    ]
    response = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)

    assert response.model == EMBEDDING_MODEL
    assert [d.index for d in response.data] == [0, 1, 2]
    vectors = [d.embedding for d in response.data]
    for vector in vectors:
        assert len(vector) == 384
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-4)
    # Normalised vectors: the dot product is the cosine similarity.
    paraphrase = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    unrelated = sum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))
    assert paraphrase > unrelated + 0.2, (paraphrase, unrelated)
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_a_single_string_is_embedded_like_a_one_item_list(client: openai.OpenAI) -> None:
    text = "The cat is sleeping on the sofa."
    single = client.embeddings.create(model=EMBEDDING_MODEL, input=text).data
    listed = client.embeddings.create(model=EMBEDDING_MODEL, input=[text]).data

    assert len(single) == 1
    assert single[0].embedding == pytest.approx(listed[0].embedding, abs=1e-6)


def test_embeddings_are_the_same_in_float_and_base64_encoding(client: openai.OpenAI) -> None:
    text = "The cat is sleeping on the sofa."
    # Without encoding_format the SDK asks for base64 and decodes it; with "float" it takes the JSON.
    decoded_by_sdk = client.embeddings.create(model=EMBEDDING_MODEL, input=text).data[0].embedding
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float")
    raw = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="base64")

    assert decoded_by_sdk == floats.data[0].embedding
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)
    assert list(struct.unpack("<384f", base64.b64decode(encoded))) == floats.data[0].embedding


@pytest.mark.parametrize("endpoint", ["chat", "embeddings"])
def test_unknown_model_raises_not_found(client: openai.OpenAI, endpoint: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        if endpoint == "chat":
            client.chat.completions.create(model="gpt-nonexistent", messages=HELLO, max_tokens=4)
        else:
            client.embeddings.create(model="gpt-nonexistent", input="hello")

    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "gpt-nonexistent" in caught.value.message


def test_invalid_parameter_raises_bad_request_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, temperature=5, max_tokens=4)

    assert caught.value.param == "temperature"
    assert caught.value.type == "invalid_request_error"


def test_prompt_longer_than_the_context_raises_bad_request(client: openai.OpenAI) -> None:
    # Far past the 8192-token context; only tokenised, never run.
    too_long = [{"role": "user", "content": "hello " * 9000}]

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=too_long, max_tokens=4)

    assert caught.value.code == "context_length_exceeded"


def test_reply_cut_by_the_end_of_the_context_reports_length(client: openai.OpenAI) -> None:
    # A prompt a few tokens short of the 8192-token context leaves room for fewer tokens than asked
    # for; the reply is cut by length all the same. Reading such a prompt takes ~20 s on a CPU.
    nearly_full = [{"role": "user", "content": "hello " * 8155}]

    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=nearly_full, temperature=0, max_tokens=50
    )

    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens < 50
    assert usage.total_tokens == 8192, usage
    assert reply.choices[0].finish_reason == "length"
