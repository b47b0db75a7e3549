"""Delivering tokens of a running chat job to the client that asked for a stream.

The job stays a durable workflow run by any worker. Its `generate` activity streams from the
provider and posts the text deltas, in order, to the API process that holds the client's
connection (the URL travels in the job's input). That process hands them to the open SSE response
through an in-memory queue. Posts are signed with an HMAC of the job id, so nobody else can write
into a stream. If the client has gone, the post answers 410 and the activity stops posting; the job
goes on and its result stays readable by id.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Header, Request, Response
from temporalio.client import WorkflowFailureError, WorkflowHandle

from api.errors import ApiError
from core.jobs import failure_to_error
from core.schemas import ChatResult, JobError, StreamBatch
from core.security import STREAM_SIGNATURE_HEADER, stream_signature

router = APIRouter(include_in_schema=False)


class StreamHub:
    """Open streams of this API process, by job id."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[StreamBatch]] = {}

    def open(self, job_id: str) -> asyncio.Queue[StreamBatch]:
        queue: asyncio.Queue[StreamBatch] = asyncio.Queue()
        self._queues[job_id] = queue
        return queue

    def close(self, job_id: str) -> None:
        self._queues.pop(job_id, None)

    def publish(self, job_id: str, batch: StreamBatch) -> bool:
        queue = self._queues.get(job_id)
        if queue is None:
            return False
        queue.put_nowait(batch)
        return True


def stream_url(base_url: str, job_id: str) -> str:
    return f"{base_url}/internal/streams/{job_id}"


@router.post("/internal/streams/{job_id}", status_code=204)
async def receive_deltas(
    job_id: str,
    batch: StreamBatch,
    request: Request,
    signature: str = Header("", alias=STREAM_SIGNATURE_HEADER),
) -> Response:
    expected = stream_signature(request.app.state.jwt_secret, job_id)
    if not hmac.compare_digest(signature, expected):
        raise ApiError(403, "forbidden", "bad stream signature")
    if not request.app.state.streams.publish(job_id, batch):
        raise ApiError(410, "stream_closed", "nobody is listening to this stream")
    return Response(status_code=204)


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Restart:
    provider: str


class JobStream:
    """One client's view of a streaming job: deltas as they come, then the result or the error."""

    def __init__(self, hub: StreamHub, handle: WorkflowHandle, queue: asyncio.Queue[StreamBatch]) -> None:
        self.hub, self.handle, self.queue = hub, handle, queue

    @property
    def job_id(self) -> str:
        return self.handle.id

    async def events(self) -> AsyncIterator[Delta | Restart | ChatResult | JobError]:
        result = asyncio.ensure_future(self.handle.result())
        attempt: str | None = None
        try:
            while True:
                next_batch = asyncio.ensure_future(self.queue.get())
                await asyncio.wait([next_batch, result], return_when=asyncio.FIRST_COMPLETED)
                if not next_batch.done():
                    next_batch.cancel()
                    if self.queue.empty():
                        break  # the job is over and every delta it posted was handed on
                    continue
                batch = next_batch.result()
                if attempt is not None and batch.attempt != attempt:
                    yield Restart(batch.provider)
                attempt = batch.attempt
                for text in batch.deltas:
                    yield Delta(text)
            try:
                yield ChatResult.model_validate(result.result())
            except WorkflowFailureError as exc:
                yield failure_to_error(exc)
        finally:
            # Closing makes the activity's next post answer 410: it stops posting, the job goes on.
            self.hub.close(self.job_id)
            result.cancel()


async def open_job_stream(
    hub: StreamHub,
    job_id: str,
    start: Callable[[str], Awaitable[WorkflowHandle]],
    api_internal_url: str,
) -> JobStream:
    """Opens the stream, then starts the job that posts into it, so no delta arrives unheard."""
    queue = hub.open(job_id)
    try:
        handle = await start(stream_url(api_internal_url, job_id))
    except BaseException:
        hub.close(job_id)
        raise
    return JobStream(hub, handle, queue)
