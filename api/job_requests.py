"""What every job-starting route shares: a job per request (the same one for a repeated
Idempotency-Key), and the sync routes' wait for its answer, which past `wait_s` becomes a 202."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.errors import ApiError
from core.jobs import failure_to_error, start_job
from core.schemas import JobAccepted
from core.settings import Settings

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="The same key from the same user gives the same job, never a second call.",
    ),
]

# How a failed job's error code maps to the HTTP status of a sync call.
# A blocked answer is the model's doing, not the request's: a gateway error like a provider's.
FAILURE_STATUS = {"provider_error": 502, "step_timeout": 504, "guard_refused": 400, "output_blocked": 502}


def idempotent_job_id(kind: str, owner: int, key: str) -> str:
    return f"{kind}-" + hashlib.sha256(f"{owner}:{key}".encode()).hexdigest()[:32]


def accepted(job_id: str, status_url: str | None = None) -> JSONResponse:
    body = JobAccepted(job_id=job_id, status_url=status_url or f"/jobs/{job_id}")
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.status_url})


async def start_request_job(
    temporal: Client,
    workflow: Any,
    request: BaseModel,
    *,
    kind: str,
    owner: int,
    settings: Settings,
    timeout_s: float,
    idempotency_key: str | None = None,
    job_id: str | None = None,
) -> WorkflowHandle:
    """Starts the job, eagerly on this process's worker when it hosts one. With an idempotency key the
    job id comes from the key: a repeated request gets the job the first one started."""
    if idempotency_key is not None:
        job_id = idempotent_job_id(kind, owner, idempotency_key)
    try:
        return await start_job(
            temporal,
            workflow,
            request,
            job_id=job_id,
            kind=kind,
            owner=owner,
            task_queue=settings.task_queue,
            timeout_s=timeout_s,
            eager=settings.api_hosts_worker,
        )
    except WorkflowAlreadyStartedError:
        # Only a job id from an idempotency key can exist already: that job is the answer.
        return temporal.get_workflow_handle(job_id or "")


async def answer_or_accepted(
    handle: WorkflowHandle, wait_s: float, result_type: type[BaseModel], status_url: str | None = None
) -> BaseModel | JSONResponse:
    """The job's result if it ends within wait_s; else 202 with its id. A failed job is its error."""
    try:
        # The job runs on whatever happens here: giving up waiting never cancels it.
        return result_type.model_validate(await asyncio.wait_for(handle.result(), timeout=wait_s))
    except TimeoutError:
        return accepted(handle.id, status_url)
    except WorkflowFailureError as exc:
        raise failed_job_error(handle.id, exc) from None


def failed_job_error(job_id: str, exc: WorkflowFailureError) -> ApiError:
    """A sync call's answer when its job failed: the job's error code, with an HTTP status to match."""
    error = failure_to_error(exc)
    details = {"job_id": job_id, **(error.details or {})}
    return ApiError(FAILURE_STATUS.get(error.code, 502), error.code, error.message, details)
