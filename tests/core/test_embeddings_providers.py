"""Providers' embedders through their official SDKs against fakes of their real wire formats on loopback:
vectors in order and of the model's dimension, the query/passage distinction where the provider has one,
failures that say whether to retry, and providers that are not configured refused by name."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from core.chunking import chunker_for_embedder
from core.embeddings import (
    EmbedderFailed,
    EmbedderNotAvailable,
    check_embedder,
    embed_texts,
    offered_embedders,
)
from core.schemas import ChunkPoint, PageText
from core.settings import Settings
from core.vector_store import EmbedderMismatch, VectorStore, collection_name
from tests.activities.conftest import settings_for_fakes
from tests.conftest import free_port
from tests.fakes.process import FakeServer

TEXTS = [
    "The ingestion workflow parses, chunks and embeds a PDF.",
    "Поиск по документам возвращает страницу и отрывок.",
    "Qdrant keeps one collection per embedder.",
    "A retry is a new activity attempt.",
]


@pytest.fixture
def settings(fakes: dict[str, FakeServer], tmp_path: Path) -> Settings:
    return settings_for_fakes(fakes, tmp_path, ollama_embedding_model="nomic-embed-text")


@pytest.fixture
def unconfigured(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, var_dir=tmp_path)  # type: ignore[call-arg]


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


@pytest.mark.parametrize(
    ("embedder", "dimension"),
    [
        ("openai/text-embedding-3-small", 1536),
        ("openai/text-embedding-3-large", 3072),
        ("gemini/gemini-embedding-001", 3072),
        ("gemini/text-embedding-004", 768),
        ("ollama/nomic-embed-text", 768),
        ("ollama/mxbai-embed-large", 1024),
    ],
)
async def test_vectors_come_back_in_order_with_the_models_dimension(
    embedder: str, dimension: int, settings: Settings
) -> None:
    vectors = await embed_texts(settings, embedder, TEXTS)
    assert [len(vector) for vector in vectors] == [dimension] * len(TEXTS)
    assert all(abs(norm(vector) - 1.0) < 1e-5 for vector in vectors)
    # Each text's vector is the one it gets alone, whatever its place in the batch.
    for text, vector in zip(TEXTS, vectors, strict=True):
        [alone] = await embed_texts(settings, embedder, [text])
        assert alone == pytest.approx(vector, abs=1e-6)
    backwards = await embed_texts(settings, embedder, TEXTS[::-1])
    assert np.allclose(backwards[::-1], vectors, atol=1e-6)


async def test_gemini_gets_one_content_per_text_in_batches_of_at_most_100(
    settings: Settings, fakes: dict[str, FakeServer]
) -> None:
    texts = [f"chunk number {n}" for n in range(230)]
    vectors = await embed_texts(settings, "gemini/text-embedding-004", texts)
    assert len(vectors) == 230
    requests = await fakes["gemini"].requests()
    assert [r["path"] for r in requests] == ["/v1beta/models/text-embedding-004:batchEmbedContents"] * 3
    batches = [r["json"]["requests"] for r in requests]
    assert [len(batch) for batch in batches] == [100, 100, 30]
    sent = [item["content"]["parts"][0]["text"] for batch in batches for item in batch]
    assert sent == texts
    assert all(item["model"] == "models/text-embedding-004" for batch in batches for item in batch)
    [last] = await embed_texts(settings, "gemini/text-embedding-004", [texts[-1]])
    assert last == pytest.approx(vectors[-1], abs=1e-6)


async def test_gemini_embeds_queries_and_passages_as_their_task_types(
    settings: Settings, fakes: dict[str, FakeServer]
) -> None:
    await embed_texts(settings, "gemini/gemini-embedding-001", TEXTS[:2], input_type="passage")
    await embed_texts(settings, "gemini/gemini-embedding-001", TEXTS[:1], input_type="query")
    passages, query = await fakes["gemini"].requests()
    assert {item["taskType"] for item in passages["json"]["requests"]} == {"RETRIEVAL_DOCUMENT"}
    assert [item["taskType"] for item in query["json"]["requests"]] == ["RETRIEVAL_QUERY"]
    # The key travels in its header, never in the URL (where proxies and access logs would keep it).
    assert passages["headers"]["x-goog-api-key"] == "gemini-test-key"
    assert "gemini-test-key" not in str(passages["query"])


async def test_ollama_embeds_through_its_native_api(settings: Settings, fakes: dict[str, FakeServer]) -> None:
    await embed_texts(settings, "ollama/nomic-embed-text", TEXTS)
    [request] = await fakes["ollama"].requests()
    assert request["path"] == "/api/embed"
    assert request["json"]["model"] == "nomic-embed-text"
    assert request["json"]["input"] == TEXTS


async def test_openai_embeddings_travel_as_base64(settings: Settings, fakes: dict[str, FakeServer]) -> None:
    vectors = await embed_texts(settings, "openai/text-embedding-3-small", TEXTS[:2])
    [request] = await fakes["openai"].requests()
    assert request["path"] == "/v1/embeddings"
    assert request["json"]["encoding_format"] == "base64"
    assert len(vectors) == 2 and vectors[0] != vectors[1]


@pytest.mark.parametrize(
    ("embedder", "setting"),
    [
        ("openai/text-embedding-3-small", "OPENAI_API_KEY"),
        ("gemini/gemini-embedding-001", "GEMINI_API_KEY"),
        ("ollama/nomic-embed-text", "OLLAMA_EMBEDDING_MODEL"),
    ],
)
async def test_an_unconfigured_provider_is_refused_naming_what_it_needs(
    embedder: str, setting: str, unconfigured: Settings
) -> None:
    with pytest.raises(EmbedderNotAvailable, match=setting):
        await embed_texts(unconfigured, embedder, TEXTS)
    with pytest.raises(EmbedderNotAvailable, match=setting) as caught:
        check_embedder(unconfigured, embedder)
    # It also says what can be chosen instead.
    assert "local/all-MiniLM-L6-v2" in str(caught.value)
    assert embedder not in offered_embedders(unconfigured)


def test_configured_providers_offer_their_default_models(settings: Settings, unconfigured: Settings) -> None:
    assert offered_embedders(unconfigured) == ["local/all-MiniLM-L6-v2", "local/multilingual-e5-small"]
    assert offered_embedders(settings) == [
        "local/all-MiniLM-L6-v2",
        "local/multilingual-e5-small",
        "openai/text-embedding-3-small",
        "gemini/gemini-embedding-001",
        "ollama/nomic-embed-text",
    ]
    # Any model of a configured provider may be chosen; a local model must be one served here.
    assert check_embedder(settings, "gemini/text-embedding-004") == "gemini/text-embedding-004"
    assert check_embedder(settings, "ollama/mxbai-embed-large") == "ollama/mxbai-embed-large"
    with pytest.raises(EmbedderNotAvailable, match="not offered"):
        check_embedder(settings, "local/some-other-model")
    with pytest.raises(EmbedderNotAvailable, match="provider in local, openai, gemini, ollama"):
        check_embedder(settings, "cohere/embed-v3")


@pytest.mark.parametrize("embedder", ["gemini/fault-unknown_model", "ollama/fault-unknown_model"])
async def test_an_unknown_model_is_a_final_failure(embedder: str, settings: Settings) -> None:
    with pytest.raises(EmbedderFailed) as caught:
        await embed_texts(settings, embedder, TEXTS)
    assert caught.value.non_retryable and caught.value.type == "EmbedderError"
    assert "404" in caught.value.message and "fault-unknown_model" in caught.value.message


async def test_a_bad_gemini_key_is_final_and_the_key_is_not_in_the_message(
    settings: Settings, fakes: dict[str, FakeServer]
) -> None:
    await fakes["gemini"].fail_next("bad_key")
    with pytest.raises(EmbedderFailed) as caught:
        await embed_texts(settings, "gemini/gemini-embedding-001", TEXTS)
    assert caught.value.non_retryable
    assert "API key not valid" in caught.value.message
    assert "gemini-test-key" not in str(caught.value) + caught.value.message


@pytest.mark.parametrize("provider", ["gemini", "ollama"])
async def test_outages_are_retried_and_a_rate_limit_says_when(
    provider: str, settings: Settings, fakes: dict[str, FakeServer]
) -> None:
    embedder = f"{provider}/{'gemini-embedding-001' if provider == 'gemini' else 'nomic-embed-text'}"
    await fakes[provider].fail_next("server_error", "rate_limited")
    with pytest.raises(EmbedderFailed) as server_error:
        await embed_texts(settings, embedder, TEXTS)
    assert not server_error.value.non_retryable
    with pytest.raises(EmbedderFailed) as rate_limited:
        await embed_texts(settings, embedder, TEXTS)
    assert not rate_limited.value.non_retryable
    if provider == "gemini":  # the ollama SDK keeps no headers of an error
        assert rate_limited.value.next_retry_delay == timedelta(seconds=7)
    # The next attempt, like Temporal's retry, succeeds.
    assert len(await embed_texts(settings, embedder, TEXTS)) == len(TEXTS)


async def test_an_unreachable_ollama_is_an_outage(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"ollama_base_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(EmbedderFailed, match="connection failed") as caught:
        await embed_texts(nowhere, "ollama/nomic-embed-text", TEXTS)
    assert not caught.value.non_retryable


async def test_a_cut_gemini_answer_is_an_outage(settings: Settings, fakes: dict[str, FakeServer]) -> None:
    await fakes["gemini"].fail_next("cut")
    with pytest.raises(EmbedderFailed) as caught:
        await embed_texts(settings, "gemini/gemini-embedding-001", TEXTS)
    assert not caught.value.non_retryable


async def test_a_chat_only_ollama_model_cannot_embed(settings: Settings) -> None:
    with pytest.raises(EmbedderFailed, match="does not support embeddings") as caught:
        await embed_texts(settings, "ollama/llama3.2", TEXTS)
    assert caught.value.non_retryable


async def test_a_document_chunked_in_openai_tokens_is_stored_and_found_by_its_embedder(
    settings: Settings,
) -> None:
    embedder = "openai/text-embedding-3-small"
    chunker = chunker_for_embedder(
        settings, embedder, max_chunk_tokens=40, overlap_tokens=0, max_embed_tokens=8191
    )
    page = PageText(page=1, text=" ".join(f"{text} ({n})" for n in range(6) for text in TEXTS))
    chunks = chunker.chunk_pages([page], max_chunks=100).chunks
    assert len(chunks) > 2
    vectors = await embed_texts(settings, embedder, [chunk.text for chunk in chunks])
    collection = collection_name(embedder, len(vectors[0]))
    assert collection == "chunks-openai-text-embedding-3-small-1536"
    with VectorStore.open(settings) as store:
        store.ensure_collection(collection, embedder, 1536)
        points = [
            ChunkPoint(
                document_id="doc-1",
                chunk_index=chunk.chunk_index,
                owner="1",
                filename="doc.pdf",
                page=chunk.page,
                text=chunk.text,
                vector=vector,
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        store.upsert(collection, points)
        # The fake gives a text the same vector as a query: the chunk itself must come first.
        query = await embed_texts(settings, embedder, [chunks[1].text], input_type="query")
        hits = store.search(collection, query[0], chunks[1].text, k=3, owner="1", sparse_weight=0.0)
        assert hits[0].chunk_index == 1
        # The collection remembers which embedder made it: another one is refused, by name.
        with pytest.raises(EmbedderMismatch, match="openai/text-embedding-3-small"):
            store.ensure_collection(collection, "gemini/gemini-embedding-001", 1536)
