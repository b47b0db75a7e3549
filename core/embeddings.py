"""Embedding texts with a collection's embedder, named "provider/model" (e.g. "local/all-MiniLM-L6-v2").

`local` is the model server and `openai` the OpenAI API (or any server speaking its wire format); both
are reached through the official openai SDK with its own retries off: retrying is the calling
activity's job. Used by the embedding activity and, for a query, by the search route's read path.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Literal

import numpy as np
import openai

from core.settings import Settings

InputType = Literal["query", "passage"]
EMBEDDING_PROVIDERS = ("local", "openai")


class EmbedderNotAvailable(ValueError):
    """The embedder names a provider that cannot embed, or one that is not configured."""


@lru_cache(maxsize=8)
def _client(base_url: str, api_key: str, timeout_s: float) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)


def split_embedder(embedder: str) -> tuple[str, str]:
    provider, _, model = embedder.partition("/")
    if provider not in EMBEDDING_PROVIDERS or not model:
        choices = ", ".join(EMBEDDING_PROVIDERS)
        message = f"embedder {embedder!r} must be 'provider/model' with provider in {choices}"
        raise EmbedderNotAvailable(message)
    return provider, model


def offered_embedders(settings: Settings) -> list[str]:
    """Embedders a document can be indexed with here: the default, the local models, and OpenAI's
    (any model name) once its key is set."""
    offered = [settings.embedding_model, f"local/{settings.local_embedding_model}"]
    if settings.local_multilingual_embedding_model:
        offered.append(f"local/{settings.local_multilingual_embedding_model}")
    return list(dict.fromkeys(offered))


def check_embedder(settings: Settings, embedder: str) -> str:
    """The embedder if this deployment offers it; EmbedderNotAvailable naming the choices if not."""
    provider, _ = split_embedder(embedder)
    if embedder in offered_embedders(settings) or (provider == "openai" and settings.openai_api_key):
        return embedder
    choices = ", ".join(offered_embedders(settings))
    raise EmbedderNotAvailable(f"embedder {embedder!r} is not offered here; choose one of {choices}")


def _endpoint(provider: str, settings: Settings) -> tuple[str, str]:
    if provider == "local":
        return f"{settings.model_server_url}/v1", settings.model_server_api_key.get_secret_value()
    if settings.openai_api_key is None:
        raise EmbedderNotAvailable("openai embeddings need OPENAI_API_KEY")
    return settings.openai_base_url, settings.openai_api_key.get_secret_value()


async def embed_texts(
    settings: Settings, embedder: str, texts: list[str], input_type: InputType = "passage"
) -> list[list[float]]:
    """One vector per text, in order. `input_type` matters to models trained with query/passage
    prefixes (e5); the model server applies them, other models ignore the field."""
    if not texts:
        return []
    provider, model = split_embedder(embedder)
    base_url, api_key = _endpoint(provider, settings)
    client = _client(base_url, api_key, settings.provider_timeout_s)
    extra = {"input_type": input_type} if provider == "local" else None
    # base64 halves the bytes on the wire and skips parsing thousands of JSON floats.
    response = await client.embeddings.create(
        model=model, input=texts, encoding_format="base64", extra_body=extra
    )
    vectors = sorted(response.data, key=lambda item: item.index)
    return [_decode(item.embedding) for item in vectors]


def _decode(embedding: str | list[float]) -> list[float]:
    if isinstance(embedding, list):
        return embedding
    return np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
