"""Chat over the caller's documents: POST /chat/rag waits for the answer up to wait_s; POST
/chat/rag/async answers with a job id at once. Either way the job is a RagChatWorkflow, readable at
GET /jobs/{job_id}."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowHandle

from api.deps import CurrentUser, SettingsDep, TemporalDep
from api.errors import ApiError
from api.guard_check import check_user_input, rag_texts
from api.job_requests import IdempotencyKey, accepted, answer_or_accepted, start_request_job
from api.routes.chat import cap_max_tokens, refuse_unsupported_params
from core.schemas import JobAccepted, RagInput, RagRequest, RagResult
from core.settings import Settings
from core.tables import Role, User
from workflows.rag import RagChatWorkflow

router = APIRouter(tags=["chat"])


def rag_input(body: RagRequest, user: User, settings: Settings, local_calls: bool) -> RagInput:
    if body.all and user.role != Role.admin:
        raise ApiError(403, "forbidden", "only admins may search everyone's documents (all=true)")
    chat = body.chat_input()
    chat.local_calls = local_calls
    cap_max_tokens(chat, settings)
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
    request = rag_input(body, user, settings, local_calls)
    return await start_request_job(
        temporal,
        RagChatWorkflow.run,
        request,
        kind="rag",
        owner=user.id,
        settings=settings,
        timeout_s=body.timeout_s,
        idempotency_key=idempotency_key,
    )


@router.post(
    "/chat/rag",
    response_model=RagResult,
    responses={202: {"model": JobAccepted, "description": "Still running after wait_s; poll status_url."}},
)
async def chat_rag(  # type: ignore[no-untyped-def]
    body: RagRequest,
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
):
    """The answer from the caller's documents (an admin's with all=true: everyone's), with citations
    to document and page. When no chunk is relevant enough, the answer says so and no model is asked."""
    await check_user_input(request, user, rag_texts(body))
    # A caller is waiting: the answer's provider calls run inside its workflow task.
    handle = await _start_rag(body, user, temporal, settings, idempotency_key, local_calls=True)
    return await answer_or_accepted(handle, body.wait_s, RagResult)


@router.post("/chat/rag/async", response_model=JobAccepted, status_code=202)
async def chat_rag_async(
    body: RagRequest,
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    await check_user_input(request, user, rag_texts(body))
    handle = await _start_rag(body, user, temporal, settings, idempotency_key, local_calls=False)
    return accepted(handle.id)
