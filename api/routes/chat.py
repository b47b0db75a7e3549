"""Chat: POST /chat/ waits for the answer up to wait_s; POST /chat/async answers with a job id at once."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowFailureError, WorkflowHandle

from api.deps import CurrentUser, SettingsDep, TemporalDep
from api.errors import ApiError
from core.jobs import failure_to_error, start_job
from core.schemas import ChatRequest, ChatResult, JobAccepted
from workflows.chat import ChatWorkflow

router = APIRouter(tags=["chat"])

# How a failed job's error code maps to the HTTP status of a sync call.
_FAILURE_STATUS = {"provider_error": 502, "step_timeout": 504}


def accepted(job_id: str) -> JSONResponse:
    body = JobAccepted(job_id=job_id, status_url=f"/inference/{job_id}")
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.status_url})


async def _start_chat(
    body: ChatRequest, user: CurrentUser, temporal: TemporalDep, settings: SettingsDep
) -> WorkflowHandle:
    return await start_job(
        temporal,
        ChatWorkflow.run,
        body.to_workflow_input(),
        kind="chat",
        owner=user.id,
        task_queue=settings.task_queue,
        timeout_s=body.timeout_s,
    )


@router.post(
    "/chat/",
    response_model=ChatResult,
    responses={202: {"model": JobAccepted, "description": "Still running after wait_s; poll status_url."}},
)
async def chat(body: ChatRequest, user: CurrentUser, temporal: TemporalDep, settings: SettingsDep):  # type: ignore[no-untyped-def]
    handle = await _start_chat(body, user, temporal, settings)
    try:
        # The job runs on whatever happens here: giving up waiting never cancels it.
        return await asyncio.wait_for(handle.result(), timeout=body.wait_s)
    except TimeoutError:
        return accepted(handle.id)
    except WorkflowFailureError as exc:
        error = failure_to_error(exc)
        status = _FAILURE_STATUS.get(error.code, 502)
        raise ApiError(status, error.code, error.message, {"job_id": handle.id}) from None


@router.post("/chat/async", response_model=JobAccepted, status_code=202)
async def chat_async(
    body: ChatRequest, user: CurrentUser, temporal: TemporalDep, settings: SettingsDep
) -> JSONResponse:
    handle = await _start_chat(body, user, temporal, settings)
    return accepted(handle.id)
