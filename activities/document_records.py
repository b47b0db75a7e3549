"""The document's row, written by its ingestion job: registered at the first step, its outcome at the
last; and the removal of a document's row and files once its vectors are gone."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.schemas import DocumentOutcome, IngestInput
from core.settings import Settings
from core.tables import Document, DocumentStatus
from core.uploads import upload_path


def derived_files(upload: Path) -> list[Path]:
    """The upload and what parsing, chunking and embedding wrote next to it."""
    return [upload, *upload.parent.glob(upload.name + ".*")]


class DocumentRecords:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions

    @activity.defn(name="register_document")
    async def register_document(self, request: IngestInput) -> bool:
        """Writes the row as processing, for this job. False when the same document is already
        being ingested or stored by another job (two uploads of one file at once): this job stops."""
        job_id = activity.info().workflow_id
        async with self.sessions() as session:
            document = await session.get(Document, request.document_id)
            if document is not None and document.job_id != job_id and not request.reindex:
                if document.status != DocumentStatus.failed:
                    return False
            if document is None:
                document = Document(id=request.document_id, owner_id=request.owner, sha256=request.sha256)
                session.add(document)
            document.filename = request.filename
            document.title = request.title
            document.meta = request.metadata
            document.media_type = request.media_type
            document.size_bytes = request.size_bytes
            document.embedder = request.embedder
            document.job_id = job_id
            document.status = DocumentStatus.processing
            document.error = None
            await session.commit()
        return True

    @activity.defn(name="finish_document")
    async def finish_document(self, outcome: DocumentOutcome) -> None:
        async with self.sessions() as session:
            document = await session.get(Document, outcome.document_id)
            if document is None:  # deleted while it was being ingested
                return
            document.status = outcome.status
            document.error = outcome.error
            document.page_count = outcome.page_count
            document.chunk_count = outcome.chunk_count
            document.collection = outcome.collection
            document.page_errors = [e.model_dump() for e in outcome.page_errors]
            document.warnings = outcome.warnings
            await session.commit()

    @activity.defn(name="forget_document")
    async def forget_document(self, document_id: str) -> None:
        """Removes the row and the files; the vectors are removed before this step."""
        async with self.sessions() as session:
            document = await session.get(Document, document_id)
            if document is None:
                return
            upload = upload_path(self.settings, document.owner_id, document.sha256)
            await session.execute(delete(Document).where(Document.id == document_id))
            await session.commit()
        for path in derived_files(upload):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
