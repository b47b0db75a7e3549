"""Retrieval activities: embed a batch of chunks, write it to the vector store, delete a document's
vectors, and search.

`embed_chunks` runs on the main task queue (any worker: it calls the embedder over HTTP). The others
touch the vector store and run on `vector_task_queue`, served by the one process that holds the store
(with Qdrant's in-process engine, only one process may open it).
"""

from __future__ import annotations

import asyncio
import io
from itertools import islice
from pathlib import Path

import numpy as np
import openai
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.chunking import read_chunks, write_atomic
from core.embeddings import EmbedderNotAvailable, embed_texts
from core.schemas import (
    ChunkPoint,
    DeleteVectors,
    DocumentChunk,
    EmbedBatch,
    EmbeddedBatch,
    SearchRequest,
    SearchResult,
    UpsertBatch,
)
from core.settings import Settings
from core.text_terms import detect_language
from core.vector_store import EmbedderMismatch, VectorStore, collection_name


def batch_chunks(chunks_path: str, start: int, end: int) -> list[DocumentChunk]:
    return list(islice(read_chunks(chunks_path, start), end - start))


def vectors_path_for(chunks_path: str, start: int, end: int) -> Path:
    return Path(f"{chunks_path}.vectors") / f"{start:07d}-{end:07d}.npy"


def embedder_error(exc: Exception) -> ApplicationError:
    """An embedder's refusal (bad model, bad key) is final; its outages are retried by Temporal."""
    retryable = isinstance(
        exc, openai.APIConnectionError | openai.APITimeoutError | openai.RateLimitError
    ) or (isinstance(exc, openai.APIStatusError) and exc.status_code >= 500)
    return ApplicationError(f"embedder: {exc}", type="EmbedderError", non_retryable=not retryable)


async def query_vector(settings: Settings, embedder: str, query: str) -> list[float]:
    [vector] = await embed_texts(settings, embedder, [query], input_type="query")
    return vector


class RetrievalActivities:
    def __init__(self, settings: Settings, store: VectorStore | None = None) -> None:
        """`store` is given only to the process that holds the vector store."""
        self.settings = settings
        self.store = store

    def _store(self) -> VectorStore:
        if self.store is None:
            raise ApplicationError("this worker holds no vector store", type="Misrouted", non_retryable=True)
        return self.store

    @activity.defn(name="embed_chunks")
    async def embed_chunks(self, batch: EmbedBatch) -> EmbeddedBatch:
        chunks = batch_chunks(batch.chunks_path, batch.start, batch.end)
        texts = [chunk.text for chunk in chunks]
        vectors: list[list[float]] = []
        step = self.settings.embed_batch_size
        try:
            for offset in range(0, len(texts), step):
                activity.heartbeat(batch.start + offset)
                vectors += await embed_texts(self.settings, batch.embedder, texts[offset : offset + step])
        except EmbedderNotAvailable as exc:
            raise ApplicationError(str(exc), type="EmbedderError", non_retryable=True) from exc
        except openai.OpenAIError as exc:
            raise embedder_error(exc) from exc
        matrix = np.asarray(vectors, dtype="<f4")
        path = vectors_path_for(batch.chunks_path, batch.start, batch.end)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, _npy_bytes(matrix))
        return EmbeddedBatch(
            vectors_path=str(path),
            count=len(chunks),
            collection=collection_name(batch.embedder, int(matrix.shape[1])),
        )

    @activity.defn(name="upsert_chunks")
    async def upsert_chunks(self, batch: UpsertBatch) -> int:
        store = self._store()
        chunks = batch_chunks(batch.chunks_path, batch.start, batch.end)
        matrix = np.load(batch.vectors_path)
        collection = collection_name(batch.embedder, int(matrix.shape[1]))
        document = batch.document
        points = [
            ChunkPoint(
                document_id=document.document_id,
                chunk_index=chunk.chunk_index,
                owner=document.owner,
                filename=document.filename,
                title=document.title,
                page=chunk.page,
                text=chunk.text,
                language=detect_language(chunk.text),
                vector=row.tolist(),
            )
            for chunk, row in zip(chunks, matrix, strict=True)
        ]
        try:
            await asyncio.to_thread(store.ensure_collection, collection, batch.embedder, int(matrix.shape[1]))
        except EmbedderMismatch as exc:
            raise ApplicationError(str(exc), type="EmbedderMismatch", non_retryable=True) from exc
        await asyncio.to_thread(store.upsert, collection, points)
        return len(points)

    @activity.defn(name="delete_document_vectors")
    async def delete_document_vectors(self, request: DeleteVectors) -> None:
        await asyncio.to_thread(self._store().delete_document, request.collection, request.document_id)

    @activity.defn(name="search_vectors")
    async def search_vectors(self, request: SearchRequest) -> SearchResult:
        return await search(self.settings, self._store(), request)


async def search(settings: Settings, store: VectorStore, request: SearchRequest) -> SearchResult:
    """Hybrid search of the caller's chunks: the query's vector and its terms, fused."""
    try:
        vector = await query_vector(settings, request.embedder, request.query)
    except EmbedderNotAvailable as exc:
        raise ApplicationError(str(exc), type="EmbedderError", non_retryable=True) from exc
    except openai.OpenAIError as exc:
        raise embedder_error(exc) from exc
    hits = await asyncio.to_thread(
        store.search,
        collection_name(request.embedder, len(vector)),
        vector,
        request.query,
        request.k,
        request.owner,
        request.document_ids,
        request.filters,
    )
    return SearchResult(hits=hits)


def _npy_bytes(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    return buffer.getvalue()
