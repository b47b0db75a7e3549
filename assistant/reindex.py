"""`assistant reindex`: moves stored documents to another embedder.

Each document is ingested again from its stored upload by a job of its own, writing into the new
embedder's collection; once its new vectors are in, the job removes the old ones. Searches with the
old embedder stop finding the document then, searches with the new one start.
"""

from __future__ import annotations

from sqlalchemy import select

from core.db import create_engine, create_sessionmaker
from core.embeddings import check_embedder
from core.schemas import IngestInput
from core.settings import Settings
from core.tables import Document, DocumentStatus
from core.uploads import upload_path
from workers.main import connect
from workflows.ingestion import start_ingestion


async def reindex(
    settings: Settings, target: str, source: str | None = None, document_ids: list[str] | None = None
) -> list[str]:
    """Starts one job per completed document (of `source`, or of every other embedder); returns their ids."""
    check_embedder(settings, target)
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            query = select(Document).where(
                Document.status == DocumentStatus.completed, Document.embedder != target
            )
            if source is not None:
                query = query.where(Document.embedder == source)
            if document_ids:
                query = query.where(Document.id.in_(document_ids))
            documents = list(await session.scalars(query.order_by(Document.created_at)))
    finally:
        await engine.dispose()
    client = await connect(settings)
    jobs = []
    for document in documents:
        request = IngestInput(
            document_id=document.id,
            owner=document.owner_id,
            sha256=document.sha256,
            filename=document.filename,
            title=document.title,
            metadata=document.meta or {},
            media_type=document.media_type,  # type: ignore[arg-type]
            size_bytes=document.size_bytes,
            upload_path=str(upload_path(settings, document.owner_id, document.sha256)),
            embedder=target,
            vector_task_queue=settings.vector_task_queue,
            reindex=True,
            replaces_collection=document.collection,
        )
        handle = await start_ingestion(client, request, task_queue=settings.task_queue)
        jobs.append(handle.id)
    return jobs
