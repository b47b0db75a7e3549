"""Embedding texts with a collection's embedder, named "provider/model" (e.g. "local/all-MiniLM-L6-v2").

`local` is the model server and `openai` the OpenAI API (or any server speaking its wire format); both
are reached through the official openai SDK with its own retries off: retrying is the calling
activity's job. `gemini` is Gemini's batchEmbedContents through the google-genai SDK (GEMINI_API_KEY),
and `ollama` an Ollama server's /api/embed through the ollama SDK (OLLAMA_BASE_URL, with an embedding
model pulled into it: OLLAMA_EMBEDDING_MODEL). Each provider's embedders are offered once it is
configured. Used by the embedding activity and, for a query, by the search route's read path.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from typing import Literal

import httpx
import httpx2
import numpy as np
import ollama
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from core.settings import Settings

InputType = Literal["query", "passage"]
EMBEDDING_PROVIDERS = ("local", "openai", "gemini", "ollama")
# batchEmbedContents takes at most 100 requests.
GEMINI_BATCH = 100
# Gemini's retrieval embedders are trained for the two sides of a search.
_GEMINI_TASK_TYPES = {"query": "RETRIEVAL_QUERY", "passage": "RETRIEVAL_DOCUMENT"}


class EmbedderNotAvailable(ValueError):
    """The embedder names a provider that cannot embed, or one that is not configured."""


class EmbedderFailed(ApplicationError):
    """A gemini or ollama embedder's failure, already in the form Temporal acts on: an outage (timeout,
    5xx, 429) is retried, a refusal (bad key, unknown model) is final. Type "EmbedderError", like the
    failures of the OpenAI-wire embedders once the embedding activity has mapped them."""

    def __init__(self, provider: str, message: str, *, retryable: bool, retry_after_s: float | None = None):
        delay = timedelta(seconds=retry_after_s) if retry_after_s else None
        super().__init__(
            f"embedder: {provider}: {message}",
            type="EmbedderError",
            non_retryable=not retryable,
            next_retry_delay=delay,
        )
        self.provider = provider
        self.retryable = retryable


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


def missing_configuration(settings: Settings, provider: str) -> str | None:
    """What a provider lacks to embed here, or None when it is configured."""
    if provider == "openai" and not _secret(settings.openai_api_key):
        return "openai embeddings need OPENAI_API_KEY"
    if provider == "gemini" and not _secret(settings.gemini_api_key):
        return "gemini embeddings need GEMINI_API_KEY"
    if provider == "ollama" and not settings.ollama_embedding_model:
        return (
            "ollama embeddings need OLLAMA_EMBEDDING_MODEL, an embedding model pulled into the Ollama "
            "server at OLLAMA_BASE_URL (e.g. nomic-embed-text)"
        )
    return None


def offered_embedders(settings: Settings) -> list[str]:
    """Embedders a document can be indexed with here: the default, the local models, and each configured
    provider's default embedding model (any other model name of a configured provider is accepted too)."""
    offered = [settings.embedding_model, f"local/{settings.local_embedding_model}"]
    if settings.local_multilingual_embedding_model:
        offered.append(f"local/{settings.local_multilingual_embedding_model}")
    defaults = {
        "openai": settings.openai_embedding_model,
        "gemini": settings.gemini_embedding_model,
        "ollama": settings.ollama_embedding_model,
    }
    for provider, model in defaults.items():
        if model and missing_configuration(settings, provider) is None:
            offered.append(f"{provider}/{model}")
    return list(dict.fromkeys(offered))


def check_embedder(settings: Settings, embedder: str) -> str:
    """The embedder if this deployment offers it; EmbedderNotAvailable naming the choices if not."""
    provider, _ = split_embedder(embedder)
    if embedder in offered_embedders(settings):
        return embedder
    choices = ", ".join(offered_embedders(settings))
    if provider != "local":
        missing = missing_configuration(settings, provider)
        if missing is None:
            return embedder
        raise EmbedderNotAvailable(
            f"embedder {embedder!r} is not available: {missing}; offered here: {choices}"
        )
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
    prefixes (e5), which the model server applies, and to Gemini's, which take it as their task type
    (RETRIEVAL_QUERY or RETRIEVAL_DOCUMENT); other models ignore it. Failures: EmbedderNotAvailable for
    an embedder this deployment cannot use; openai's own errors for local and openai; EmbedderFailed
    (a Temporal ApplicationError saying whether to retry) for gemini and ollama."""
    if not texts:
        return []
    provider, model = split_embedder(embedder)
    if provider in ("gemini", "ollama"):
        missing = missing_configuration(settings, provider)
        if missing is not None:
            raise EmbedderNotAvailable(missing)
        embed = _embed_gemini if provider == "gemini" else _embed_ollama
        return _checked(provider, await embed(settings, model, texts, input_type), len(texts))
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


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _checked(provider: str, vectors: list[list[float]], count: int) -> list[list[float]]:
    """Vectors as many as the texts, all of one dimension: anything else would be stored against the
    wrong chunk or in the wrong collection."""
    if len(vectors) != count:
        raise EmbedderFailed(provider, f"{len(vectors)} vectors for {count} texts", retryable=False)
    dimensions = {len(vector) for vector in vectors}
    if len(dimensions) != 1 or 0 in dimensions:
        raise EmbedderFailed(provider, f"vectors of dimensions {sorted(dimensions)}", retryable=False)
    return vectors


def _status_failure(
    provider: str, status: int, message: str, headers: Mapping[str, str] | None = None
) -> EmbedderFailed:
    retry_after = None
    if status == 429 and headers is not None:
        try:
            retry_after = float(headers.get("retry-after", ""))
        except ValueError:
            pass
    retryable = status in (408, 429) or status >= 500
    return EmbedderFailed(
        provider, f"HTTP {status}: {message}", retryable=retryable, retry_after_s=retry_after
    )


# --- gemini ---------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _gemini_client(base_url: str, api_key: str, timeout_s: float) -> genai.client.AsyncClient:
    options = genai_types.HttpOptions(
        base_url=base_url,
        api_version="v1beta",  # where batchEmbedContents lives, as for the chat provider
        timeout=int(timeout_s * 1000),  # milliseconds
        retry_options=genai_types.HttpRetryOptions(attempts=1),
    )
    # vertexai=False and an explicit key: never pick up Vertex or a key from the environment.
    return genai.Client(api_key=api_key, vertexai=False, http_options=options).aio


async def _embed_gemini(
    settings: Settings, model: str, texts: list[str], input_type: InputType
) -> list[list[float]]:
    client = _gemini_client(
        settings.gemini_base_url, _secret(settings.gemini_api_key), settings.provider_timeout_s
    )
    config = genai_types.EmbedContentConfig(task_type=_GEMINI_TASK_TYPES[input_type])
    vectors: list[list[float]] = []
    for start in range(0, len(texts), GEMINI_BATCH):
        # One Content per text: given bare strings, the SDK joins them into one content for some models.
        contents = [
            genai_types.Content(parts=[genai_types.Part(text=text)])
            for text in texts[start : start + GEMINI_BATCH]
        ]
        try:
            response = await client.models.embed_content(model=model, contents=contents, config=config)
        except genai_errors.APIError as exc:
            headers = getattr(exc.response, "headers", None)
            raise _status_failure("gemini", exc.code, exc.message or str(exc), headers) from exc
        except (httpx.TimeoutException, httpx2.TimeoutException) as exc:
            raise EmbedderFailed("gemini", "the request timed out", retryable=True) from exc
        except (httpx.TransportError, httpx2.TransportError) as exc:
            raise EmbedderFailed("gemini", f"connection failed: {exc}", retryable=True) from exc
        except genai_errors.UnknownApiResponseError as exc:
            raise EmbedderFailed("gemini", f"unreadable answer: {exc}", retryable=True) from exc
        vectors += [list(embedding.values or []) for embedding in response.embeddings or []]
    return vectors


# --- ollama ---------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _ollama_client(base_url: str, timeout_s: float) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=base_url, timeout=timeout_s)


async def _embed_ollama(
    settings: Settings, model: str, texts: list[str], input_type: InputType
) -> list[list[float]]:
    client = _ollama_client(settings.ollama_base_url, settings.provider_timeout_s)
    try:
        response = await client.embed(model=model, input=texts)
    except ollama.ResponseError as exc:
        raise _status_failure("ollama", exc.status_code, str(exc.error)) from exc
    except httpx.TimeoutException as exc:
        raise EmbedderFailed("ollama", "the request timed out", retryable=True) from exc
    except (ConnectionError, httpx.TransportError) as exc:
        # The SDK turns a refused connection into ConnectionError.
        raise EmbedderFailed("ollama", f"connection failed: {exc}", retryable=True) from exc
    except json.JSONDecodeError as exc:
        raise EmbedderFailed("ollama", f"unreadable answer: {exc}", retryable=True) from exc
    return [list(vector) for vector in response.embeddings]
