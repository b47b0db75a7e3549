"""Documents: upload (an ingestion job makes it searchable), list, read with its progress, delete.

POST /documents answers at once with the document id and its job id; the job's status and error are
at GET /jobs/{job_id}, the document's at GET /documents/{id}. The same file from the same owner is the
same document: no second copy, no second job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from api.deps import CurrentUser, SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError, not_found
from core.embeddings import EmbedderNotAvailable, check_embedder
from core.jobs import new_job_id
from core.schemas import DeleteDocumentInput, DocumentMediaType, IngestInput, IngestProgress, PageError
from core.settings import Settings
from core.tables import Document, DocumentStatus, Role, User
from core.uploads import upload_path
from workflows.ingestion import DeleteDocumentWorkflow, IngestionWorkflow, start_ingestion

router = APIRouter(tags=["documents"])

DOCUMENT_NAMESPACE = uuid.UUID("6f1c7c7e-2b8e-4d0a-9a53-3f0f4f1d5a10")
MEDIA_TYPES: dict[str, DocumentMediaType] = {
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
}
READ_CHUNK = 1 << 20
CLOSE_WAIT_S = 60.0


class DocumentAccepted(BaseModel):
    document_id: str
    job_id: str
    status: str
    duplicate: bool = False  # the same file was uploaded before: this is that document
    status_url: str
    document_url: str


class DocumentView(BaseModel):
    id: str
    filename: str
    title: str | None
    metadata: dict[str, Any]
    media_type: str
    size_bytes: int
    sha256: str
    status: str
    error: str | None
    job_id: str
    embedder: str
    page_count: int | None
    chunk_count: int | None
    page_errors: list[PageError]
    warnings: list[str]
    created_at: datetime
    updated_at: datetime
    progress: IngestProgress | None = None  # while the job runs

    @classmethod
    def of(cls, document: Document) -> DocumentView:
        return cls(
            id=document.id,
            filename=document.filename,
            title=document.title,
            metadata=document.meta or {},
            media_type=document.media_type,
            size_bytes=document.size_bytes,
            sha256=document.sha256,
            status=document.status,
            error=document.error,
            job_id=document.job_id,
            embedder=document.embedder,
            page_count=document.page_count,
            chunk_count=document.chunk_count,
            page_errors=[PageError.model_validate(e) for e in document.page_errors or []],
            warnings=document.warnings or [],
            created_at=document.created_at,
            updated_at=document.updated_at,
        )


class DocumentPage(BaseModel):
    documents: list[DocumentView]
    total: int


def media_type_of(filename: str, head: bytes) -> DocumentMediaType:
    media_type = MEDIA_TYPES.get(Path(filename).suffix.lower())
    if media_type is None and head.startswith(b"%PDF-"):
        media_type = "application/pdf"
    if media_type is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{filename!r}: only PDF (.pdf), text (.txt) and Markdown (.md) files can be ingested",
        )
    return media_type


def chosen_embedder(settings: Settings, embedder: str | None) -> str:
    try:
        return check_embedder(settings, embedder or settings.embedding_model)
    except EmbedderNotAvailable as exc:
        raise ApiError(422, "unknown_embedder", str(exc)) from None


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_metadata", f"metadata must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_metadata", "metadata must be a JSON object")
    return value


async def receive(file: UploadFile, settings: Settings) -> tuple[Path, str, int, bytes]:
    """Writes the upload to a private temporary file while hashing it; refuses it past the limit."""
    staging = settings.var_dir / "uploads" / "incoming"
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / uuid.uuid4().hex
    digest, size, head = hashlib.sha256(), 0, b""
    try:
        with path.open("wb") as out:
            while chunk := await file.read(READ_CHUNK):
                size += len(chunk)
                if size > settings.upload_max_bytes:
                    raise ApiError(
                        413,
                        "upload_too_large",
                        f"the file is larger than the limit of {settings.upload_max_bytes} bytes",
                    )
                head = head or chunk[:8]
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size, head


def accepted(document: Document, duplicate: bool, status: int) -> JSONResponse:
    body = DocumentAccepted(
        document_id=document.id,
        job_id=document.job_id,
        status=document.status,
        duplicate=duplicate,
        status_url=f"/jobs/{document.job_id}",
        document_url=f"/documents/{document.id}",
    )
    return JSONResponse(body.model_dump(), status_code=status, headers={"Location": body.document_url})


@router.post(
    "/documents",
    status_code=202,
    response_model=DocumentAccepted,
    responses={200: {"model": DocumentAccepted, "description": "The same file was uploaded before."}},
)
@router.post("/ingestion/ingest", status_code=202, response_model=DocumentAccepted, include_in_schema=False)
async def upload_document(  # type: ignore[no-untyped-def]
    user: CurrentUser,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="A PDF, .txt or .md file.")],
    title: Annotated[str | None, Form(max_length=255)] = None,
    metadata: Annotated[str | None, Form(description="A JSON object kept with the document.")] = None,
    password: Annotated[str | None, Form(description="The password of an encrypted PDF.")] = None,
    embedder: Annotated[
        str | None,
        Form(description="provider/model that indexes it, e.g. local/multilingual-e5-small for Russian."),
    ] = None,
):
    filename = (file.filename or "upload").strip() or "upload"
    if len(filename) > 255:
        raise ApiError(422, "invalid_filename", "the file name is longer than 255 characters")
    meta = parse_metadata(metadata)
    embedder = chosen_embedder(settings, embedder)
    staged, sha256, size, head = await receive(file, settings)
    try:
        media_type = media_type_of(filename, head)
        existing = await session.scalar(
            select(Document).where(Document.owner_id == user.id, Document.sha256 == sha256)
        )
        if existing is not None and existing.status != DocumentStatus.failed:
            return accepted(existing, duplicate=True, status=200)
        stored = upload_path(settings, user.id, sha256)
        stored.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, stored)
    finally:
        staged.unlink(missing_ok=True)
    document_id = str(uuid.uuid5(DOCUMENT_NAMESPACE, f"{user.id}:{sha256}"))
    request = IngestInput(
        document_id=document_id,
        owner=user.id,
        sha256=sha256,
        filename=filename,
        title=title,
        metadata=meta,
        media_type=media_type,
        size_bytes=size,
        upload_path=str(stored),
        password=password,
        embedder=embedder,
        vector_task_queue=settings.vector_task_queue,
    )
    handle = await start_ingestion(
        temporal, request, task_queue=settings.task_queue, eager=settings.api_hosts_worker
    )
    # A query is answered once the job's first task is done, and that task registers the document:
    # a GET right after this answer finds the document, not nothing (or a failed earlier attempt).
    await handle.query(IngestionWorkflow.progress)
    body = DocumentAccepted(
        document_id=document_id,
        job_id=handle.id,
        status=DocumentStatus.processing,
        status_url=f"/jobs/{handle.id}",
        document_url=f"/documents/{document_id}",
    )
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.document_url})


async def owned_document(session: SessionDep, user: User, document_id: str) -> Document:
    """The caller's document, or any for an admin; 404 exactly as for no document at all."""
    document = await session.get(Document, document_id)
    if document is None or (document.owner_id != user.id and user.role != Role.admin):
        raise not_found("document")
    return document


@router.get("/documents", response_model=DocumentPage)
async def list_documents(
    user: CurrentUser,
    session: SessionDep,
    status: DocumentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    # Past SQL's 64-bit integers the database refuses the query: a 422 here rather than its error.
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    all: Annotated[bool, Query(description="Admins: everyone's documents.")] = False,
) -> DocumentPage:
    query = select(Document)
    if not (all and user.role == Role.admin):
        query = query.where(Document.owner_id == user.id)
    if status is not None:
        query = query.where(Document.status == status)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(Document.created_at.desc(), Document.id).limit(limit).offset(offset)
    )
    return DocumentPage(documents=[DocumentView.of(d) for d in rows], total=total)


@router.get("/documents/{document_id}", response_model=DocumentView)
async def read_document(
    document_id: str, user: CurrentUser, session: SessionDep, temporal: TemporalDep
) -> DocumentView:
    document = await owned_document(session, user, document_id)
    view = DocumentView.of(document)
    if document.status == DocumentStatus.processing:
        try:
            view.progress = await temporal.get_workflow_handle(document.job_id).query(
                IngestionWorkflow.progress
            )
        except RPCError:
            view.progress = None  # between the job's steps, or just closed: the row says the rest
    return view


@router.delete("/documents/{document_id}", status_code=204)
async def delete_document(
    document_id: str,
    user: CurrentUser,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    """Removes the document, its chunks' vectors and its files; a running ingestion is cancelled first."""
    document = await owned_document(session, user, document_id)
    ingestion = temporal.get_workflow_handle(document.job_id)
    description = await ingestion.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        await ingestion.cancel()
        await _wait_closed(ingestion)
        await session.refresh(document)
    request = DeleteDocumentInput(
        document_id=document.id,
        collection=document.collection,
        vector_task_queue=settings.vector_task_queue,
    )
    await session.close()  # the job deletes the row: hold no connection to it meanwhile
    await temporal.execute_workflow(
        DeleteDocumentWorkflow.run,
        request,
        id=new_job_id("delete"),
        task_queue=settings.task_queue,
        execution_timeout=timedelta(seconds=CLOSE_WAIT_S),
        memo={"owner": user.id, "kind": "delete"},
    )
    return Response(status_code=204)


async def _wait_closed(handle: Any) -> None:
    try:
        await asyncio.wait_for(handle.result(), timeout=CLOSE_WAIT_S)
    except Exception:
        return
