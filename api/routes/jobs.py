"""Reading a job by id: GET /inference/{job_id}, the seed's view of the job API."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, TemporalDep
from api.errors import not_found
from core.jobs import JobNotFound, read_job
from core.schemas import Job
from core.tables import Role

router = APIRouter(tags=["jobs"])


@router.get("/inference/{job_id}", response_model=Job, response_model_exclude_none=True)
async def get_inference_job(job_id: str, user: CurrentUser, temporal: TemporalDep) -> Job:
    try:
        return await read_job(temporal, job_id, user.id, is_admin=user.role == Role.admin)
    except JobNotFound:
        raise not_found("job") from None
