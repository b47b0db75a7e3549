"""Chat over the caller's documents: POST /chat/rag waits for the answer up to wait_s; POST
/chat/rag/async answers with a job id at once. Either way the job is a RagChatWorkflow, readable at
GET /jobs/{job_id}."""

from __future__ import annotations

import asyncio
import hashlib

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import CurrentUser, SettingsDep, TemporalDep
from api.errors import ApiError
from api.routes.chat import IdempotencyKey, refuse_unsupported_params
from core.jobs import failure_to_error, start_job
from core.schemas import JobAccepted, RagInput, RagRequest, RagResult
from core.settings import Settings
from core.tables import Role, User
from workflows.rag import RagChatWorkflow

router = APIRouter(tags=["chat"])

# How a failed job's error code maps to the HTTP status of a sync call.
_FAILURE_STATUS = {"provider_error": 502, "step_timeout": 504}


def accepted(job_id: str) -> JSONResponse:
    body = JobAccepted(job_id=job_id, status_url=f"/jobs/{job_id}")
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.status_url})


def idempotent_job_id(owner: int, key: str) -> str:
    return "rag-" + hashlib.sha256(f"{owner}:{key}".encode()).hexdigest()[:32]


def rag_input(body: RagRequest, user: User, settings: Settings, local_calls: bool) -> RagInput:
    if body.all and user.role != Role.admin:
        raise ApiError(403, "forbidden", "only admins may search everyone's documents (all=true)")
    chat = body.chat_input()
    chat.local_calls = local_calls
    refuse_unsupported_params(chat)
    embedder = settings.embedding_model
    return RagInput(
        question=body.question,
        k=body.k,
        owner=None if body.all else str(user.id),
        document_ids=body.document_ids,
        embedder=embedder,
        vector_task_queue=settings.vector_task_queue,
        min_relevance=settings.rag_relevance_floors.get(embedder, 0.0),
        chat=chat,
    )


async def _start_rag(
    body: RagRequest,
    user: User,
    temporal: TemporalDep,
    settings: Settings,
    idempotency_key: str | None,
    local_calls: bool,
) -> WorkflowHandle:
    job_id = idempotent_job_id(user.id, idempotency_key) if idempotency_key is not None else None
    request = rag_input(body, user, settings, local_calls)
    try:
        return await start_job(
            temporal,
            RagChatWorkflow.run,
            request,
            job_id=job_id,
            kind="rag",
            owner=user.id,
            task_queue=settings.task_queue,
            timeout_s=body.timeout_s,
            eager=settings.api_hosts_worker,
        )
    except WorkflowAlreadyStartedError:
        # Only a job id from an idempotency key can exist already: that job is the answer.
        return temporal.get_workflow_handle(job_id or "")


@router.post(
    "/chat/rag",
    response_model=RagResult,
    responses={202: {"model": JobAccepted, "description": "Still running after wait_s; poll status_url."}},
)
async def chat_rag(  # type: ignore[no-untyped-def]
    body: RagRequest,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
):
    """The answer from the caller's documents (an admin's with all=true: everyone's), with citations
    to document and page. When no chunk is relevant enough, the answer says so and no model is asked."""
    # A caller is waiting: the answer's provider calls run inside its workflow task.
    handle = await _start_rag(body, user, temporal, settings, idempotency_key, local_calls=True)
    try:
        # The job runs on whatever happens here: giving up waiting never cancels it.
        return RagResult.model_validate(await asyncio.wait_for(handle.result(), timeout=body.wait_s))
    except TimeoutError:
        return accepted(handle.id)
    except WorkflowFailureError as exc:
        error = failure_to_error(exc)
        status = _FAILURE_STATUS.get(error.code, 502)
        raise ApiError(status, error.code, error.message, {"job_id": handle.id}) from None


@router.post("/chat/rag/async", response_model=JobAccepted, status_code=202)
async def chat_rag_async(
    body: RagRequest,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handle = await _start_rag(body, user, temporal, settings, idempotency_key, local_calls=False)
    return accepted(handle.id)
