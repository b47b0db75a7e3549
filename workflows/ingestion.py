"""IngestionWorkflow: an uploaded document made searchable, as a durable job.

register -> parse (child process, time and memory capped) -> chunk -> embed in batches -> upsert ->
done, with a `progress` query. Texts and vectors stay on disk next to the upload; the activities pass
paths and counts. Point ids come from document id and chunk index, so a retried or resumed job never
duplicates a chunk. A document that cannot be read ends the job `failed` with the reason, written on
the document too. DeleteDocumentWorkflow removes a document's vectors, then its row and files.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.document_records import DocumentRecords
    from activities.documents import DocumentActivities
    from activities.retrieval import RetrievalActivities
    from core.jobs import new_job_id, start_job
    from core.schemas import (
        ChunkRequest,
        DeleteDocumentInput,
        DeleteVectors,
        DocumentOutcome,
        DocumentRef,
        EmbedBatch,
        EmbeddedBatch,
        IngestInput,
        IngestProgress,
        IngestResult,
        ParseRequest,
        UpsertBatch,
    )

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
RECORD_TIMEOUT = timedelta(seconds=30)
# Parsing and chunking stop themselves at their own limits; these bound a stuck worker.
PARSE_TIMEOUT = timedelta(minutes=15)
EMBED_TIMEOUT = timedelta(minutes=10)
UPSERT_TIMEOUT = timedelta(minutes=2)
# Each long step heartbeats; a worker that died is noticed after this, not after the whole timeout.
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
EMBED_WINDOW = 2  # embedding batches in flight at once


# A large document on a busy machine may take hours; the job's steps bound themselves well within this.
INGESTION_TIMEOUT_S = 24 * 3600


async def start_ingestion(
    client: Client, request: IngestInput, *, task_queue: str, eager: bool = False
) -> WorkflowHandle:
    """Starts an ingestion job for the document (a new upload, or a re-index of a stored one)."""
    return await start_job(
        client,
        IngestionWorkflow.run,
        request,
        job_id=new_job_id("ingest"),
        kind="ingest",
        owner=request.owner,
        task_queue=task_queue,
        timeout_s=INGESTION_TIMEOUT_S,
        eager=eager,
    )


def failure_reason(error: BaseException) -> str:
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.message if isinstance(cause, ApplicationError) else str(error)


@workflow.defn
class IngestionWorkflow:
    def __init__(self) -> None:
        self._progress = IngestProgress()
        self._collection: str | None = None  # known once a batch is embedded; deletion needs it

    @workflow.query
    def progress(self) -> IngestProgress:
        return self._progress

    @workflow.run
    async def run(self, request: IngestInput) -> IngestResult:
        registered = await workflow.execute_local_activity_method(
            DocumentRecords.register_document,
            request,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        if not registered:
            raise ApplicationError(
                f"document {request.document_id} is already being ingested by another job",
                type="DuplicateDocument",
                non_retryable=True,
            )
        try:
            result = await self._ingest(request)
        except (ActivityError, ApplicationError, CancelledError, asyncio.CancelledError) as error:
            self._progress.stage = "failed"
            cancelled = isinstance(error, CancelledError | asyncio.CancelledError) or (
                isinstance(error, ActivityError) and isinstance(error.cause, CancelledError)
            )
            reason = "the ingestion was cancelled" if cancelled else failure_reason(error)
            await self._finish(
                DocumentOutcome(
                    document_id=request.document_id,
                    status="failed",
                    error=reason,
                    collection=self._collection,
                )
            )
            if cancelled:
                raise
            raise ApplicationError(reason, type="DocumentError", non_retryable=True) from None
        await self._finish(
            DocumentOutcome(
                document_id=request.document_id,
                status="completed",
                page_count=result.page_count,
                chunk_count=result.chunk_count,
                collection=result.collection,
                page_errors=result.page_errors,
                warnings=result.warnings,
            )
        )
        self._progress.stage = "done"
        return result

    async def _ingest(self, request: IngestInput) -> IngestResult:
        self._progress.stage = "parsing"
        parsed = await workflow.execute_activity_method(
            DocumentActivities.parse_document,
            ParseRequest(path=request.upload_path, media_type=request.media_type, password=request.password),
            start_to_close_timeout=PARSE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        self._progress.pages, self._progress.pages_with_text = parsed.page_count, parsed.text_pages

        self._progress.stage = "chunking"
        chunked = await workflow.execute_activity_method(
            DocumentActivities.chunk_document,
            ChunkRequest(pages_path=parsed.pages_path, embedder=request.embedder),
            start_to_close_timeout=PARSE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        self._progress.chunks = chunked.chunk_count
        if chunked.chunk_count == 0:
            raise ApplicationError(
                "the document has no text to index", type="DocumentError", non_retryable=True
            )

        self._progress.stage = "embedding"
        document = DocumentRef(
            document_id=request.document_id,
            owner=str(request.owner),
            filename=request.filename,
            title=request.title,
        )
        batches = [
            (start, min(start + request.batch_size, chunked.chunk_count))
            for start in range(0, chunked.chunk_count, request.batch_size)
        ]
        # Two batches are in flight at the embedder, so it never idles while one result travels back
        # and the next request is scheduled; each batch is written while later ones are embedded.
        embedding: deque[asyncio.Task[EmbeddedBatch]] = deque()
        for start, end in batches[:EMBED_WINDOW]:
            embedding.append(self._embed(chunked.chunks_path, start, end, request.embedder))
        writing: asyncio.Task[int] | None = None
        for index, (start, end) in enumerate(batches):
            embedded = await embedding.popleft()
            if index + EMBED_WINDOW < len(batches):
                start_next, end_next = batches[index + EMBED_WINDOW]
                embedding.append(self._embed(chunked.chunks_path, start_next, end_next, request.embedder))
            self._collection = embedded.collection
            if writing is not None:
                self._progress.chunks_embedded += await writing
            writing = asyncio.ensure_future(
                workflow.execute_activity_method(
                    RetrievalActivities.upsert_chunks,
                    UpsertBatch(
                        chunks_path=chunked.chunks_path,
                        vectors_path=embedded.vectors_path,
                        start=start,
                        end=end,
                        embedder=request.embedder,
                        document=document,
                    ),
                    task_queue=request.vector_task_queue,
                    start_to_close_timeout=UPSERT_TIMEOUT,
                    retry_policy=STEP_RETRY,
                )
            )
        if writing is not None:
            self._progress.chunks_embedded += await writing
        replaced = request.replaces_collection
        if replaced is not None and replaced != self._collection:
            await workflow.execute_activity_method(
                RetrievalActivities.delete_document_vectors,
                DeleteVectors(collection=replaced, document_id=request.document_id),
                task_queue=request.vector_task_queue,
                start_to_close_timeout=UPSERT_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
        return IngestResult(
            document_id=request.document_id,
            page_count=parsed.page_count,
            chunk_count=chunked.chunk_count,
            collection=self._collection,
            page_errors=parsed.page_errors,
            warnings=[*parsed.warnings, *chunked.warnings],
        )

    def _embed(self, chunks_path: str, start: int, end: int, embedder: str) -> asyncio.Task[EmbeddedBatch]:
        return asyncio.ensure_future(
            workflow.execute_activity_method(
                RetrievalActivities.embed_chunks,
                EmbedBatch(chunks_path=chunks_path, start=start, end=end, embedder=embedder),
                start_to_close_timeout=EMBED_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
        )

    async def _finish(self, outcome: DocumentOutcome) -> None:
        await workflow.execute_local_activity_method(
            DocumentRecords.finish_document,
            outcome,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=STEP_RETRY,
        )


@workflow.defn
class DeleteDocumentWorkflow:
    @workflow.run
    async def run(self, request: DeleteDocumentInput) -> None:
        if request.collection is not None:
            await workflow.execute_activity_method(
                RetrievalActivities.delete_document_vectors,
                DeleteVectors(collection=request.collection, document_id=request.document_id),
                task_queue=request.vector_task_queue,
                start_to_close_timeout=UPSERT_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
        await workflow.execute_local_activity_method(
            DocumentRecords.forget_document,
            request.document_id,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
