"""Jobs are workflow executions: how one is started for its owner, and how its state is read back.

The job id is the workflow id; its owner is kept with the workflow (memo for reads, the `Owner`
search attribute for listings). Status always comes from Temporal itself, never from a second copy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import (
    Client,
    WorkflowExecution,
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


class JobClosed(Exception):
    def __init__(self, job_id: str, status: JobStatus) -> None:
        super().__init__(f"job {job_id} is already {status}")
        self.job_id = job_id
        self.status = status


class InvalidPageToken(ValueError):
    pass


# --- response models (not in core/schemas.py: they are the job API's own, not payloads) ---------


class JobSummary(BaseModel):
    """A job in a listing: no result or error, so a page costs one visibility query."""

    job_id: str
    kind: str
    status: JobStatus
    created_at: datetime | None = None
    closed_at: datetime | None = None


class JobPage(BaseModel):
    items: list[JobSummary]
    # Pass as page_token for the next page; None on the last page.
    next_page_token: str | None = None


class StepStatus(StrEnum):
    scheduled = "scheduled"
    running = "running"
    completed = "completed"
    failed = "failed"
    timed_out = "timed_out"
    cancelled = "cancelled"


class JobStep(BaseModel):
    """One activity of the job, as its workflow history (and, while it runs, describe) tells it."""

    name: str
    activity_id: str
    local: bool = False  # a local activity: run in the workflow's own task, timed only by its end
    status: StepStatus
    attempts: int  # attempts started so far, retries included
    scheduled_at: datetime | None = None
    started_at: datetime | None = None  # of the latest attempt
    finished_at: datetime | None = None
    duration_ms: float | None = None  # of the latest attempt
    error: str | None = None  # why it failed, or why the attempt before the current one failed


class JobSteps(BaseModel):
    job_id: str
    status: JobStatus
    steps: list[JobStep]


# --- starting ------------------------------------------------------------------------------------


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


# --- reading one job -----------------------------------------------------------------------------


async def _describe_owned(
    client: Client, job_id: str, user_id: int, is_admin: bool
) -> tuple[WorkflowExecutionDescription, dict[str, Any]]:
    """The job's description and memo, for its owner or an admin; JobNotFound for anyone else, exactly
    as for no job at all, so a job id tells a stranger nothing."""
    try:
        description = await client.get_workflow_handle(job_id).describe()
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise JobNotFound(job_id) from None
        raise
    memo = await description.memo()
    if memo.get("owner") != user_id and not is_admin:
        raise JobNotFound(job_id)
    return description, memo


def _kind(job_id: str, memo: dict[str, Any]) -> str:
    return str(memo.get("kind") or job_kind(job_id))


# Closed executions: a timeout or an operator's terminate is a failure to the job's owner.
_CLOSED_STATUS = {
    WorkflowExecutionStatus.COMPLETED: JobStatus.completed,
    WorkflowExecutionStatus.CANCELED: JobStatus.cancelled,
    WorkflowExecutionStatus.FAILED: JobStatus.failed,
    WorkflowExecutionStatus.TIMED_OUT: JobStatus.failed,
    WorkflowExecutionStatus.TERMINATED: JobStatus.failed,
}


def _status(description: WorkflowExecutionDescription) -> JobStatus:
    closed = _CLOSED_STATUS.get(description.status) if description.status else None
    if closed is not None:
        return closed
    return JobStatus.pending if _not_picked_up(description) else JobStatus.running


async def read_job(client: Client, job_id: str, user_id: int, is_admin: bool) -> Job:
    """The job as its owner (or an admin) sees it; JobNotFound for anyone else, as for no job at all."""
    description, memo = await _describe_owned(client, job_id, user_id, is_admin)
    handle = client.get_workflow_handle(job_id)
    job = Job(
        job_id=job_id,
        kind=_kind(job_id, memo),
        status=_status(description),
        created_at=description.start_time,
        closed_at=description.close_time,
    )
    match description.status:
        case WorkflowExecutionStatus.RUNNING | WorkflowExecutionStatus.CONTINUED_AS_NEW:
            pass
        case WorkflowExecutionStatus.COMPLETED:
            job.result = await handle.result()
        case WorkflowExecutionStatus.CANCELED:
            job.error = JobError(code="cancelled", message="the job was cancelled")
        case WorkflowExecutionStatus.TIMED_OUT:
            job.error = JobError(code="job_timeout", message="the job did not finish within its timeout_s")
        case WorkflowExecutionStatus.TERMINATED:
            job.error = JobError(code="terminated", message="the job was terminated by an operator")
        case _:
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


# The error codes of failed jobs, by the type of the application error that ended them.
ERROR_CODES = {
    "ProviderError": "provider_error",
    "GuardRefused": "guard_refused",
    "OutputBlocked": "output_blocked",
}


def failure_to_error(exc: BaseException) -> JobError:
    """The first application error in a workflow failure's cause chain: the one a user can act on."""
    chain: list[BaseException] = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for cause in chain:
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else None
            return JobError(
                code=ERROR_CODES.get(cause.type or "", "job_failed"),
                message=cause.message or "the job failed",
                # The guard's reasons; a provider's status stays in the message.
                details=details if cause.type in {"GuardRefused", "OutputBlocked"} else None,
            )
        if isinstance(cause, TimeoutError):
            return JobError(code="step_timeout", message=f"a step of the job timed out ({cause.type.name})")
    innermost = chain[-1]
    message = innermost.message if isinstance(innermost, FailureError) else str(innermost)
    return JobError(code="job_failed", message=message or "the job failed")


# --- cancelling ----------------------------------------------------------------------------------


async def cancel_job(client: Client, job_id: str, user_id: int, is_admin: bool) -> Job:
    """Requests cancellation and returns the job as it is right after. The workflow decides what
    cancelling means; for chat, the running activity learns of it at its next heartbeat."""
    description, _ = await _describe_owned(client, job_id, user_id, is_admin)
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise JobClosed(job_id, _status(description))
    try:
        await client.get_workflow_handle(job_id).cancel()
    except RPCError as exc:
        # It closed between the describe and the cancel.
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        job = await read_job(client, job_id, user_id, is_admin)
        raise JobClosed(job_id, job.status) from None
    return await read_job(client, job_id, user_id, is_admin)


# --- listing -------------------------------------------------------------------------------------

# Visibility cannot tell pending from running: both are Running there, and each open job on a page
# is described to tell them apart.
_QUERY_STATUS = {
    JobStatus.pending: "ExecutionStatus = 'Running'",
    JobStatus.running: "ExecutionStatus = 'Running'",
    JobStatus.completed: "ExecutionStatus = 'Completed'",
    JobStatus.failed: "ExecutionStatus IN ('Failed', 'TimedOut', 'Terminated')",
    JobStatus.cancelled: "ExecutionStatus = 'Canceled'",
}


def list_query(owner: int | None, kind: str | None, status: JobStatus | None) -> str:
    """The visibility query. Values are an int and a checked [a-z0-9_] word: nothing to escape."""
    clauses = []
    if owner is not None:
        clauses.append(f"{OWNER.name} = '{owner}'")
    if kind is not None:
        clauses.append(f"WorkflowId STARTS_WITH '{kind}-'")
    # A run that continued as new lives on as the next run, under the same job id: listed once.
    clauses.append(_QUERY_STATUS[status] if status else "ExecutionStatus != 'ContinuedAsNew'")
    return " AND ".join(clauses)


async def list_jobs(
    client: Client,
    *,
    owner: int | None,
    token_secret: str,
    kind: str | None = None,
    status: JobStatus | None = None,
    limit: int = 20,
    page_token: str | None = None,
) -> JobPage:
    """One page of jobs, owner None meaning everyone's. Temporal's own order: open jobs first, newest
    first, then closed jobs, most recently closed first; the token is Temporal's, so paging holds
    while jobs start and close meanwhile. With status pending or running a page may hold fewer than
    `limit` jobs (the other open ones are left out after the query): follow the token to the end."""
    query = list_query(owner, kind, status)
    executions = client.list_workflows(
        query,
        page_size=limit,
        next_page_token=_open_token(page_token, query, token_secret) if page_token else None,
    )
    await executions.fetch_next_page()
    page = executions.current_page or []
    items = await asyncio.gather(*(_summary(client, execution) for execution in page))
    next_token = executions.next_page_token
    return JobPage(
        items=[item for item in items if status is None or item.status == status],
        next_page_token=_seal_token(next_token, query, token_secret) if next_token else None,
    )


# Temporal answers a page token it cannot read with retries and then an internal error, and would
# take one from another query: the API's tokens are Temporal's, signed together with their query.
_MAC_BYTES = 16


def _token_mac(token: bytes, query: str, secret: str) -> bytes:
    return hmac.digest(secret.encode(), query.encode() + b"\0" + token, "sha256")[:_MAC_BYTES]


def _seal_token(token: bytes, query: str, secret: str) -> str:
    return base64.urlsafe_b64encode(_token_mac(token, query, secret) + token).decode().rstrip("=")


def _open_token(page_token: str, query: str, secret: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidPageToken(page_token) from None
    mac, token = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if not token or not hmac.compare_digest(mac, _token_mac(token, query, secret)):
        raise InvalidPageToken(page_token)
    return token


async def _summary(client: Client, execution: WorkflowExecution) -> JobSummary:
    memo = await execution.memo()
    status = _CLOSED_STATUS.get(execution.status) if execution.status else None
    if status is None:
        try:
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            status = _status(await handle.describe())
        except RPCError as exc:
            # Closed and gone from retention between the query and the describe.
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            status = JobStatus.running
    return JobSummary(
        job_id=execution.id,
        kind=_kind(execution.id, memo),
        status=status,
        created_at=execution.start_time,
        closed_at=execution.close_time,
    )


# --- steps ---------------------------------------------------------------------------------------


async def job_steps(client: Client, job_id: str, user_id: int, is_admin: bool) -> JobSteps:
    """Every activity of the job's current run, in the order the workflow scheduled them."""
    description, _ = await _describe_owned(client, job_id, user_id, is_admin)
    history = await client.get_workflow_handle(job_id, run_id=description.run_id).fetch_history()
    steps: dict[int, JobStep] = {}  # by the id of the event that scheduled the activity
    for event in history.events:
        at = _time(event.event_time)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            steps[event.event_id] = JobStep(
                name=scheduled.activity_type.name,
                activity_id=scheduled.activity_id,
                status=StepStatus.scheduled,
                attempts=0,
                scheduled_at=at,
            )
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            # With a retry policy Temporal writes this event only once the last attempt ends.
            started = event.activity_task_started_event_attributes
            step = steps[started.scheduled_event_id]
            step.status, step.attempts, step.started_at = StepStatus.running, started.attempt, at
            if started.HasField("last_failure"):
                step.error = _message(started.last_failure)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = event.activity_task_completed_event_attributes
            _close(steps[completed.scheduled_event_id], StepStatus.completed, at)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failed = event.activity_task_failed_event_attributes
            _close(steps[failed.scheduled_event_id], StepStatus.failed, at, _message(failed.failure))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            timed_out = event.activity_task_timed_out_event_attributes
            _close(steps[timed_out.scheduled_event_id], StepStatus.timed_out, at, _message(timed_out.failure))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
            cancelled = event.activity_task_canceled_event_attributes
            _close(steps[cancelled.scheduled_event_id], StepStatus.cancelled, at)
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            local = _local_activity(event.marker_recorded_event_attributes)
            if local is not None:
                steps[event.event_id] = local
    pending = {a.activity_id: a for a in description.raw_description.pending_activities}
    closed = description.status != WorkflowExecutionStatus.RUNNING
    for step in steps.values():
        if step.finished_at is None and closed:
            # A cancelled or timed-out workflow closes without waiting for the step's end, and
            # Temporal records none: the step was abandoned, and told so at its next heartbeat.
            step.status, step.error = StepStatus.cancelled, "the job closed before this step finished"
        elif step.finished_at is None and step.activity_id in pending:
            _apply_pending(step, pending[step.activity_id])
        if step.started_at and step.finished_at:
            step.duration_ms = (step.finished_at - step.started_at).total_seconds() * 1000
    return JobSteps(job_id=job_id, status=_status(description), steps=list(steps.values()))


def _close(step: JobStep, status: StepStatus, at: datetime, error: str | None = None) -> None:
    step.status, step.finished_at = status, at
    if error is not None:
        step.error = error


def _local_activity(marker: MarkerRecordedEventAttributes) -> JobStep | None:
    """A local activity (run inside the workflow task, e.g. save_completion) as the SDK's marker
    records it: type, attempts and end, but no start time that can be trusted."""
    payloads = marker.details.get("data")
    if marker.marker_name != "core_local_activity" or payloads is None or not payloads.payloads:
        return None
    data = json.loads(payloads.payloads[0].data)
    step = JobStep(
        name=data["activity_type"],
        activity_id=data["activity_id"],
        local=True,
        status=StepStatus.completed,
        attempts=data["attempt"],
    )
    if data.get("complete_time"):
        done = data["complete_time"]
        step.finished_at = datetime.fromtimestamp(done["seconds"] + done.get("nanos", 0) / 1e9, UTC)
    if marker.HasField("failure"):
        failure = marker.failure
        if failure.HasField("canceled_failure_info"):
            step.status = StepStatus.cancelled
        elif failure.HasField("timeout_failure_info"):
            step.status = StepStatus.timed_out
        else:
            step.status = StepStatus.failed
        step.error = _message(failure)
    return step


def _apply_pending(step: JobStep, activity: PendingActivityInfo) -> None:
    """What history does not say yet about an activity in flight: its attempt and last failure."""
    if activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
        # Waiting for its first attempt, or for the backoff before the next one.
        step.status, step.attempts = StepStatus.scheduled, activity.attempt - 1
    else:
        step.status, step.attempts = StepStatus.running, activity.attempt
    if activity.HasField("last_started_time") and step.attempts > 0:
        step.started_at = _time(activity.last_started_time)
    if activity.HasField("last_failure"):
        step.error = _message(activity.last_failure)


def _message(failure: Failure) -> str:
    """A failure's own message; for a timeout, also the last attempt's error that it wraps."""
    if failure.HasField("timeout_failure_info") and failure.cause.message:
        return f"{failure.message}: {failure.cause.message}"
    return failure.message


def _time(timestamp: Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)
