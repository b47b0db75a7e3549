"""Chat: POST /chat/ waits for the answer up to wait_s; POST /chat/async answers with a job id at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.providers import get_provider
from api.deps import CurrentUser, SettingsDep, TemporalDep
from api.errors import ApiError
from api.streams import Delta, JobStream, Restart, open_job_stream
from core.jobs import failure_to_error, new_job_id, start_job
from core.schemas import ChatInput, ChatRequest, ChatResult, JobAccepted, JobError, Target
from workflows.chat import ChatWorkflow

router = APIRouter(tags=["chat"])

# How a failed job's error code maps to the HTTP status of a sync call.
_FAILURE_STATUS = {"provider_error": 502, "step_timeout": 504}


def accepted(job_id: str) -> JSONResponse:
    body = JobAccepted(job_id=job_id, status_url=f"/inference/{job_id}")
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.status_url})


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="The same key from the same user gives the same job, never a second call.",
    ),
]


def idempotent_job_id(owner: int, key: str) -> str:
    return "chat-" + hashlib.sha256(f"{owner}:{key}".encode()).hexdigest()[:32]


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
    if idempotency_key is not None:
        job_id = idempotent_job_id(user.id, idempotency_key)
    request = body.to_workflow_input()
    request.stream_to = stream_to
    request.local_calls = local_calls
    refuse_unsupported_params(request)
    try:
        return await start_job(
            temporal,
            ChatWorkflow.run,
            request,
            job_id=job_id,
            kind="chat",
            owner=user.id,
            task_queue=settings.task_queue,
            timeout_s=body.timeout_s,
            eager=settings.api_hosts_worker,
        )
    except WorkflowAlreadyStartedError:
        # Only a job id from an idempotency key can exist already: that job is the answer.
        return temporal.get_workflow_handle(job_id or "")


@router.post(
    "/chat/",
    response_model=ChatResult,
    responses={202: {"model": JobAccepted, "description": "Still running after wait_s; poll status_url."}},
)
async def chat(  # type: ignore[no-untyped-def]
    body: ChatRequest,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
):
    # A caller is waiting: provider calls run inside the workflow task, saving a server round trip each.
    handle = await _start_chat(body, user, temporal, settings, idempotency_key, local_calls=True)
    try:
        # The job runs on whatever happens here: giving up waiting never cancels it.
        return ChatResult.model_validate(await asyncio.wait_for(handle.result(), timeout=body.wait_s))
    except TimeoutError:
        return accepted(handle.id)
    except WorkflowFailureError as exc:
        error = failure_to_error(exc)
        status = _FAILURE_STATUS.get(error.code, 502)
        raise ApiError(status, error.code, error.message, {"job_id": handle.id}) from None


@router.post("/chat/async", response_model=JobAccepted, status_code=202)
async def chat_async(
    body: ChatRequest,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handle = await _start_chat(body, user, temporal, settings, idempotency_key)
    return accepted(handle.id)


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
    job_id = idempotent_job_id(user.id, idempotency_key) if idempotency_key else new_job_id("chat")
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
