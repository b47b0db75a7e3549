"""Jobs are workflow executions: how one is started for its owner, and how its state is read back.

The job id is the workflow id; its owner is kept with the workflow (memo for reads, the `Owner`
search attribute for listings). Status always comes from Temporal itself, never from a second copy.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, FailureError, TimeoutError
from temporalio.service import RPCError, RPCStatusCode

from core.schemas import Job, JobError, JobStatus

OWNER = SearchAttributeKey.for_keyword("Owner")
SEARCH_ATTRIBUTES = {OWNER.name: "Keyword"}


class JobNotFound(LookupError):
    pass


def new_job_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def job_kind(job_id: str) -> str:
    return job_id.split("-", 1)[0]


async def start_job(
    client: Client,
    workflow: Any,
    request: BaseModel,
    *,
    kind: str,
    owner: int,
    task_queue: str,
    timeout_s: float,
    job_id: str | None = None,
    eager: bool = False,
) -> WorkflowHandle:
    return await client.start_workflow(
        workflow,
        request,
        id=job_id or new_job_id(kind),
        # A job id is never reused, even after the job closed: an idempotency key keeps its one job.
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        # Eager: the first workflow task runs on a worker of this same client, if it has one.
        request_eager_start=eager,
        task_queue=task_queue,
        execution_timeout=timedelta(seconds=timeout_s),
        memo={"owner": owner, "kind": kind},
        search_attributes=TypedSearchAttributes([SearchAttributePair(OWNER, str(owner))]),
    )


async def read_job(client: Client, job_id: str, user_id: int, is_admin: bool) -> Job:
    """The job as its owner (or an admin) sees it; JobNotFound for anyone else, as for no job at all."""
    handle = client.get_workflow_handle(job_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise JobNotFound(job_id) from None
        raise
    memo = await description.memo()
    if memo.get("owner") != user_id and not is_admin:
        raise JobNotFound(job_id)
    job = Job(
        job_id=job_id,
        kind=str(memo.get("kind") or job_kind(job_id)),
        status=JobStatus.running,
        created_at=description.start_time,
        closed_at=description.close_time,
    )
    match description.status:
        case WorkflowExecutionStatus.RUNNING | WorkflowExecutionStatus.CONTINUED_AS_NEW:
            job.status = JobStatus.pending if _not_picked_up(description) else JobStatus.running
        case WorkflowExecutionStatus.COMPLETED:
            job.status = JobStatus.completed
            job.result = await handle.result()
        case WorkflowExecutionStatus.CANCELED:
            job.status = JobStatus.cancelled
            job.error = JobError(code="cancelled", message="the job was cancelled")
        case WorkflowExecutionStatus.TIMED_OUT:
            job.status = JobStatus.failed
            job.error = JobError(code="job_timeout", message="the job did not finish within its timeout_s")
        case WorkflowExecutionStatus.TERMINATED:
            job.status = JobStatus.failed
            job.error = JobError(code="terminated", message="the job was terminated by an operator")
        case _:
            job.status = JobStatus.failed
            job.error = await _failure(handle)
    return job


def _not_picked_up(description: WorkflowExecutionDescription) -> bool:
    """True while no worker has begun the job: nothing but the start and a first workflow task."""
    pending = description.raw_description.pending_activities
    if any(
        a.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED or a.attempt > 1 for a in pending
    ):
        return False
    if pending:
        return True
    return (description.history_length or 0) <= 3


async def _failure(handle: WorkflowHandle) -> JobError:
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        return failure_to_error(exc)
    return JobError(code="job_failed", message="the job failed")


def failure_to_error(exc: BaseException) -> JobError:
    """The first application error in a workflow failure's cause chain: the one a user can act on."""
    chain: list[BaseException] = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for cause in chain:
        if isinstance(cause, ApplicationError):
            code = "provider_error" if cause.type == "ProviderError" else "job_failed"
            return JobError(code=code, message=cause.message or "the job failed")
        if isinstance(cause, TimeoutError):
            return JobError(code="step_timeout", message=f"a step of the job timed out ({cause.type.name})")
    innermost = chain[-1]
    message = innermost.message if isinstance(innermost, FailureError) else str(innermost)
    return JobError(code="job_failed", message=message or "the job failed")
