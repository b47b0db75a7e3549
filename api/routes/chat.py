"""Chat: POST /chat/ waits for the answer up to wait_s; POST /chat/async answers with a job id at once."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from temporalio.client import WorkflowHandle

from activities.providers import get_provider
from api.deps import CurrentUser, SettingsDep, TemporalDep
from api.errors import ApiError
from api.guard_check import chat_texts, check_user_input
from api.job_requests import (
    IdempotencyKey,
    accepted,
    answer_or_accepted,
    idempotent_job_id,
    start_request_job,
)
from api.streams import Delta, JobStream, Restart, open_job_stream
from core.jobs import new_job_id
from core.schemas import ChatInput, ChatRequest, ChatResult, JobAccepted, JobError, Target
from core.settings import Settings
from workflows.chat import ChatWorkflow

router = APIRouter(tags=["chat"])


def refuse_unsupported_params(request: ChatInput) -> None:
    """A parameter a provider cannot honour is refused up front, never silently dropped."""
    targets = request.compare or [Target(provider=request.provider, model=request.model), *request.fallback]
    for target in targets:
        unsupported = get_provider(target.provider).unsupported(request.params)
        if unsupported:
            raise ApiError(
                422,
                "unsupported_parameter",
                f"{target.provider} cannot honour {', '.join(unsupported)}",
                {"provider": target.provider, "parameters": unsupported},
            )


def cap_max_tokens(request: ChatInput, settings: Settings) -> None:
    """Lowers max_tokens to the operator's cap, so no request makes a provider generate more."""
    if settings.max_tokens_cap > 0:
        request.params.max_tokens = min(request.params.max_tokens, settings.max_tokens_cap)


async def _start_chat(
    body: ChatRequest,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: str | None = None,
    stream_to: str | None = None,
    job_id: str | None = None,
    local_calls: bool = False,
) -> WorkflowHandle:
    request = body.to_workflow_input()
    request.stream_to = stream_to
    request.local_calls = local_calls
    cap_max_tokens(request, settings)
    refuse_unsupported_params(request)
    return await start_request_job(
        temporal,
        ChatWorkflow.run,
        request,
        kind="chat",
        owner=user.id,
        settings=settings,
        timeout_s=body.timeout_s,
        idempotency_key=idempotency_key,
        job_id=job_id,
    )


@router.post(
    "/chat/",
    response_model=ChatResult,
    responses={202: {"model": JobAccepted, "description": "Still running after wait_s; poll status_url."}},
)
async def chat(  # type: ignore[no-untyped-def]
    body: ChatRequest,
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
):
    await check_user_input(request, user, chat_texts(body))
    # A caller is waiting: provider calls run inside the workflow task, saving a server round trip each.
    handle = await _start_chat(body, user, temporal, settings, idempotency_key, local_calls=True)
    return await answer_or_accepted(handle, body.wait_s, ChatResult, status_url=f"/inference/{handle.id}")


@router.post("/chat/async", response_model=JobAccepted, status_code=202)
async def chat_async(
    body: ChatRequest,
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    await check_user_input(request, user, chat_texts(body))
    handle = await _start_chat(body, user, temporal, settings, idempotency_key)
    return accepted(handle.id, status_url=f"/inference/{handle.id}")


@router.post(
    "/chat/stream",
    response_class=EventSourceResponse,
    responses={
        200: {"description": "Server-sent events: job, delta (repeated), restart, then result or error."}
    },
)
async def chat_stream(
    body: ChatRequest,
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> EventSourceResponse:
    """Tokens as the provider produces them, while the job stays a durable workflow: a client that
    disconnects loses nothing, the job goes on and its result stays readable by id."""
    if body.compare:
        raise ApiError(422, "invalid_request", "compare cannot be streamed; use POST /chat/")
    await check_user_input(request, user, chat_texts(body))
    stream = await start_chat_stream(body, request, user, temporal, settings, idempotency_key)
    return EventSourceResponse(_sse_events(stream), ping=15)


async def start_chat_stream(
    body: ChatRequest,
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: str | None,
) -> JobStream:
    """Starts a chat job whose tokens come to this process, for any stream format to send on."""
    job_id = idempotent_job_id("chat", user.id, idempotency_key) if idempotency_key else new_job_id("chat")
    return await open_job_stream(
        request.app.state.streams,
        job_id,
        lambda url: _start_chat(
            body, user, temporal, settings, idempotency_key, stream_to=url, job_id=job_id
        ),
        settings.api_internal_url,
    )


async def _sse_events(stream: JobStream):  # type: ignore[no-untyped-def]
    yield {"event": "job", "data": json.dumps({"job_id": stream.job_id})}
    async for event in stream.events():
        match event:
            case Delta(text=text):
                yield {"event": "delta", "data": json.dumps({"text": text})}
            case Restart(provider=provider):
                # A retry or the next provider starts over: the client drops what it has so far.
                yield {"event": "restart", "data": json.dumps({"provider": provider})}
            case ChatResult():
                yield {"event": "result", "data": event.model_dump_json()}
            case JobError():
                body = {"error": {**event.model_dump(), "details": {"job_id": stream.job_id}}}
                yield {"event": "error", "data": json.dumps(body)}
