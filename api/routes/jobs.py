"""The job API, one for every kind of job (chat-…, agent-…, ingest-…, tune-…): list, read, steps, cancel.

/inference/… are the seed's names for the same things: GET /inference/{job_id} reads a job and
POST /inference/ starts an async chat job, each by the very handler of its newer route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.deps import CurrentUser, TemporalDep
from api.errors import ApiError, not_found
from api.routes.chat import chat_async
from core.jobs import (
    InvalidPageToken,
    JobClosed,
    JobNotFound,
    JobPage,
    JobSteps,
    cancel_job,
    job_steps,
    list_jobs,
    read_job,
)
from core.schemas import Job, JobAccepted, JobStatus
from core.tables import Role

router = APIRouter(tags=["jobs"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job, or another user's: the two are told apart by no one."}
}


@router.get("/jobs", response_model=JobPage)
async def get_jobs(
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    kind: Annotated[
        str | None, Query(pattern=r"^[a-z][a-z0-9_]*$", max_length=32, description="chat, agent, …")
    ] = None,
    status: JobStatus | None = None,
    owner: Annotated[int | None, Query(description="A user id; admins only.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[
        str | None, Query(max_length=4096, description="next_page_token of the page before.")
    ] = None,
) -> JobPage:
    """The caller's jobs (an admin's: everyone's, or one owner's), without results: open jobs first,
    newest first, then closed ones, most recently closed first. With status pending or running a
    page may hold fewer than `limit` jobs; next_page_token is null on the last page."""
    is_admin = user.role == Role.admin
    if owner is not None and owner != user.id and not is_admin:
        raise ApiError(403, "forbidden", "only admins may list other users' jobs")
    try:
        return await list_jobs(
            temporal,
            owner=owner if is_admin else user.id,
            token_secret=request.app.state.jwt_secret,
            kind=kind,
            status=status,
            limit=limit,
            page_token=page_token,
        )
    except InvalidPageToken:
        raise ApiError(
            422, "invalid_request", "page_token is not one this listing gave, with these filters"
        ) from None


@router.get("/jobs/{job_id}", response_model=Job, response_model_exclude_none=True, responses=_NOT_FOUND)
@router.get("/inference/{job_id}", response_model=Job, response_model_exclude_none=True, responses=_NOT_FOUND)
async def get_job(job_id: str, user: CurrentUser, temporal: TemporalDep) -> Job:
    """Status and timestamps, and the result or the error once the job has closed."""
    try:
        return await read_job(temporal, job_id, user.id, is_admin=user.role == Role.admin)
    except JobNotFound:
        raise not_found("job") from None


@router.get("/jobs/{job_id}/steps", response_model=JobSteps, responses=_NOT_FOUND)
async def get_job_steps(job_id: str, user: CurrentUser, temporal: TemporalDep) -> JobSteps:
    """Each activity of the job from its workflow history, with the attempts and last failure of the
    ones still in flight."""
    try:
        return await job_steps(temporal, job_id, user.id, is_admin=user.role == Role.admin)
    except JobNotFound:
        raise not_found("job") from None


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    response_model_exclude_none=True,
    status_code=202,
    responses={**_NOT_FOUND, 409: {"description": "The job has already closed (code job_closed)."}},
)
async def cancel(job_id: str, user: CurrentUser, temporal: TemporalDep) -> Job:
    """Requests cancellation: the job ends `cancelled` once its workflow has stopped; poll the job."""
    try:
        return await cancel_job(temporal, job_id, user.id, is_admin=user.role == Role.admin)
    except JobNotFound:
        raise not_found("job") from None
    except JobClosed as exc:
        raise ApiError(
            409, "job_closed", f"the job is already {exc.status}", {"job_id": job_id, "status": exc.status}
        ) from None


# The seed's name for POST /chat/async: the same handler, body and answer.
router.add_api_route(
    "/inference/",
    chat_async,
    methods=["POST"],
    response_model=JobAccepted,
    status_code=202,
    summary="Chat Async (the seed's alias of POST /chat/async)",
)
